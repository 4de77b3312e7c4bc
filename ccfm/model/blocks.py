"""Backbone blocks: gene-conditioned modulation, the perturbation adapter, DiT-style adaLN blocks and the
differential perceiver block that pairs them.

Shape legend: B cells, G genes, H hidden width.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ccfm.model.attention import DifferentialAttention, SelfAttention

#: Hidden width of a block's MLP relative to H (DiT's mlp_ratio).
MLP_RATIO = 4


def modulate(x: Tensor, shift: Tensor, scale: Tensor) -> Tensor:
    """x·(1 + scale) + shift, with shift and scale broadcast against x."""
    return x * (1 + scale) + shift


def zero_init(layer: nn.Linear) -> nn.Linear:
    """Zero a Linear's weight and bias in place (adaLN-Zero gates, output layers); returns it."""
    nn.init.zeros_(layer.weight)
    if layer.bias is not None:
        nn.init.zeros_(layer.bias)
    return layer


class GeneModulation(nn.Module):
    """x + gate·(LN(x)·(1 + scale) + shift), with (shift, scale, gate) read from each token's gene embedding.

    Zero-initialized, so the layer starts as the identity.
    """

    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(hidden, elementwise_affine=False)
        self.modulation = nn.Sequential(nn.SiLU(), zero_init(nn.Linear(hidden, 3 * hidden)))

    def forward(self, x: Tensor, gene_tokens: Tensor) -> Tensor:
        """x: (B, G, H); gene_tokens: (G, H). Returns (B, G, H)."""
        shift, scale, gate = self.modulation(gene_tokens).chunk(3, dim=-1)  # 3 × (G, H)
        return x + gate * modulate(self.norm(x), shift, scale)  # (B, G, H)


class PerturbationAdapter(nn.Module):
    """Residual MLP on concat(x, perturbation): Linear 2H→H, LeakyReLU, Dropout, Linear, LeakyReLU."""

    def __init__(self, hidden: int, dropout: float) -> None:
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Linear(2 * hidden, hidden),
            nn.LeakyReLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, hidden),
            nn.LeakyReLU(),
        )

    def forward(self, x: Tensor, pert: Tensor) -> Tensor:
        """x: (B, G, H); pert: (B, H). Returns (B, G, H)."""
        pert_tokens = pert[:, None, :].expand_as(x)  # (B, G, H)
        return x + self.mlp(torch.cat([x, pert_tokens], dim=-1))  # (B, G, H)


class AdaLNBlock(nn.Module):
    """A DiT block with adaLN-Zero: c → (shift, scale, gate) for the attention and for the MLP.

    x = x + gate_a·attention(modulate(LN(x))); x = x + gate_m·MLP(modulate(LN(x))). The adaLN projection
    is zero-initialized, so every gate starts at 0 and the block starts as the identity.
    The attention module receives the modulated tokens and, if given, a second token stream.
    """

    def __init__(self, hidden: int, attention: nn.Module) -> None:
        super().__init__()
        self.norm_attention = nn.LayerNorm(hidden, elementwise_affine=False, eps=1e-6)
        self.attention = attention
        self.norm_mlp = nn.LayerNorm(hidden, elementwise_affine=False, eps=1e-6)
        self.mlp = nn.Sequential(
            nn.Linear(hidden, MLP_RATIO * hidden),
            nn.GELU(approximate="tanh"),
            nn.Linear(MLP_RATIO * hidden, hidden),
        )
        self.ada_ln = nn.Sequential(nn.SiLU(), zero_init(nn.Linear(hidden, 6 * hidden)))

    def forward(self, x: Tensor, c: Tensor, second: Tensor | None = None) -> Tensor:
        """x: (B, G, H); c: (B, H) conditioning; second: (B, G, H) or None. Returns (B, G, H)."""
        params = self.ada_ln(c)[:, None, :].chunk(6, dim=-1)  # 6 × (B, 1, H)
        shift_a, scale_a, gate_a, shift_m, scale_m, gate_m = params
        h = modulate(self.norm_attention(x), shift_a, scale_a)  # (B, G, H)
        h = self.attention(h) if second is None else self.attention(h, second)  # (B, G, H)
        x = x + gate_a * h  # (B, G, H)
        return x + gate_m * self.mlp(modulate(self.norm_mlp(x), shift_m, scale_m))  # (B, G, H)


class DifferentialPerceiverBlock(nn.Module):
    """Two adaLN blocks conditioned on c: differential self-attention, then differential attention whose
    subtracted map is the control cells' own self-attention map."""

    def __init__(self, hidden: int, heads: int, depth: int) -> None:
        super().__init__()
        self.self_block = AdaLNBlock(hidden, DifferentialAttention(hidden, heads, depth))
        self.control_block = AdaLNBlock(hidden, DifferentialAttention(hidden, heads, depth, second_stream=True))

    def forward(self, x: Tensor, control_tokens: Tensor, c: Tensor) -> Tensor:
        """x, control_tokens: (B, G, H); c: (B, H). Returns (B, G, H)."""
        x = self.self_block(x, c)  # (B, G, H)
        return self.control_block(x, c, control_tokens)  # (B, G, H)


class BackboneLayer(nn.Module):
    """One backbone layer: gene-conditioned modulation, perturbation adapter, differential perceiver."""

    def __init__(self, hidden: int, heads: int, depth: int, dropout: float) -> None:
        super().__init__()
        self.gene_modulation = GeneModulation(hidden)
        self.adapter = PerturbationAdapter(hidden, dropout)
        self.perceiver = DifferentialPerceiverBlock(hidden, heads, depth)

    def forward(self, x: Tensor, gene_tokens: Tensor, control_tokens: Tensor, pert: Tensor, c: Tensor) -> Tensor:
        """x, control_tokens: (B, G, H); gene_tokens: (G, H); pert, c: (B, H). Returns (B, G, H)."""
        x = self.gene_modulation(x, gene_tokens)  # (B, G, H)
        x = self.adapter(x, pert)  # (B, G, H)
        return self.perceiver(x, control_tokens, c)  # (B, G, H)


def self_attention_block(hidden: int, heads: int) -> AdaLNBlock:
    """An adaLN block around plain self-attention (the latent head's blocks)."""
    return AdaLNBlock(hidden, SelfAttention(hidden, heads))
