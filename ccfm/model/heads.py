"""Output heads: expression velocity (B, G) and latent velocity (B, G, D).

Both end in a zero-initialized Linear, so a fresh model predicts exactly zero velocity.

Shape legend: B cells, G genes, D scGPT width, H hidden width.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ccfm.model.blocks import self_attention_block, zero_init


class ExpressionHead(nn.Module):
    """concat(tokens, perturbation) → Linear 2H→H, LeakyReLU, Linear, LeakyReLU, Linear H→1."""

    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Linear(2 * hidden, hidden),
            nn.LeakyReLU(),
            nn.Linear(hidden, hidden),
            nn.LeakyReLU(),
        )
        self.out = zero_init(nn.Linear(hidden, 1))

    def forward(self, tokens: Tensor, pert: Tensor) -> Tensor:
        """tokens: (B, G, H); pert: (B, H). Returns the expression velocity (B, G)."""
        x = torch.cat([tokens, pert[:, None, :].expand_as(tokens)], dim=-1)  # (B, G, 2H)
        return self.out(self.mlp(x)).squeeze(-1)  # (B, G)


class LatentHead(nn.Module):
    """adaLN self-attention blocks on the backbone output, then LayerNorm, Linear, GELU, Linear H→D."""

    def __init__(self, hidden: int, heads: int, latent_dim: int, blocks: int) -> None:
        super().__init__()
        self.blocks = nn.ModuleList([self_attention_block(hidden, heads) for _ in range(blocks)])
        self.norm = nn.LayerNorm(hidden)
        self.mlp = nn.Sequential(nn.Linear(hidden, hidden), nn.GELU())
        self.out = zero_init(nn.Linear(hidden, latent_dim))

    def forward(self, tokens: Tensor, c: Tensor) -> Tensor:
        """tokens: (B, G, H); c: (B, H). Returns the latent velocity (B, G, D)."""
        for block in self.blocks:
            tokens = block(tokens, c)  # (B, G, H)
        return self.out(self.mlp(self.norm(tokens)))  # (B, G, D)
