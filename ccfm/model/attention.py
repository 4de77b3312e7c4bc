"""Attention layers: graph-masked gene attention, differential attention, plain self-attention.

All go through `scaled_dot_product_attention` one map at a time, so a (B, heads, G, G) matrix is never
held twice (G can be 1,000 and more).

Shape legend: B cells, G genes, H hidden width; `heads` attention heads.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ccfm.errors import CCFMError


def _split_heads(x: Tensor, heads: int) -> Tensor:
    """(B, G, heads·d) → (B, heads, G, d)."""
    b, g, _ = x.shape
    return x.view(b, g, heads, -1).transpose(1, 2)  # (B, heads, G, d)


def _merge_heads(x: Tensor) -> Tensor:
    """(B, heads, G, d) → (B, G, heads·d)."""
    b, heads, g, d = x.shape
    return x.transpose(1, 2).reshape(b, g, heads * d)  # (B, G, heads·d)


def _check_width(hidden: int, heads: int, multiple: int) -> None:
    if hidden % (heads * multiple) != 0:
        raise CCFMError(
            f"hidden width {hidden} must be divisible by {multiple}·heads = {multiple * heads}; "
            f"choose d_model and heads accordingly (e.g. d_model=128, heads=8)."
        )


class GraphMaskedAttention(nn.Module):
    """Multi-head attention among gene tokens in which a gene sees only its graph neighbours.

    Residual: out = x + proj(attention(x)). A gene whose neighbours are unchanged keeps its output.
    """

    def __init__(self, hidden: int, heads: int) -> None:
        super().__init__()
        _check_width(hidden, heads, 1)
        self.heads = heads
        self.qkv = nn.Linear(hidden, 3 * hidden)
        self.proj = nn.Linear(hidden, hidden)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        """x: (G, H) gene tokens; mask: (G, G) bool, True where row gene may attend to column gene
        (needs at least one True per row, e.g. self-loops). Returns (G, H)."""
        q, k, v = self.qkv(x[None]).chunk(3, dim=-1)  # 3 × (1, G, H)
        q, k, v = (_split_heads(t, self.heads) for t in (q, k, v))  # (1, heads, G, H/heads)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # (1, heads, G, H/heads)
        return x + self.proj(_merge_heads(out))[0]  # (G, H)


class SelfAttention(nn.Module):
    """Plain multi-head self-attention over gene tokens (the latent head's blocks)."""

    def __init__(self, hidden: int, heads: int) -> None:
        super().__init__()
        _check_width(hidden, heads, 1)
        self.heads = heads
        self.qkv = nn.Linear(hidden, 3 * hidden)
        self.proj = nn.Linear(hidden, hidden)

    def forward(self, x: Tensor) -> Tensor:
        """x: (B, G, H). Returns (B, G, H)."""
        q, k, v = self.qkv(x).chunk(3, dim=-1)  # 3 × (B, G, H)
        q, k, v = (_split_heads(t, self.heads) for t in (q, k, v))  # (B, heads, G, H/heads)
        out = F.scaled_dot_product_attention(q, k, v)  # (B, heads, G, H/heads)
        return self.proj(_merge_heads(out))  # (B, G, H)


def lambda_init(depth: int) -> float:
    """Differential Transformer's initial λ for the layer at index `depth` (0-based)."""
    return 0.8 - 0.6 * math.exp(-0.3 * depth)


class DifferentialAttention(nn.Module):
    """(softmax(Q1K1ᵀ/√h) − λ·softmax(Q2K2ᵀ/√h))·V, per-head RMSNorm, × (1 − λ_init).

    Q1, K1, V always come from the tokens. Q2, K2 come from the tokens as well (differential
    self-attention, the Differential Transformer's split of Q and K into two halves), or, with
    `second_stream=True`, from a second token stream — here the control cells' own tokens, so the map
    subtracted is the control cell's self-attention map. Each of `heads` heads has Q/K width
    h = H / (2·heads) per map and V width 2h. λ = exp(λq1·λk1) − exp(λq2·λk2) + λ_init is learned per layer.
    """

    def __init__(self, hidden: int, heads: int, depth: int, second_stream: bool = False) -> None:
        super().__init__()
        _check_width(hidden, heads, 2)
        self.heads = heads
        self.head_dim = hidden // heads // 2
        self.lambda_init = lambda_init(depth)
        half = hidden // 2
        self.q1 = nn.Linear(hidden, half, bias=False)
        self.k1 = nn.Linear(hidden, half, bias=False)
        self.q2 = nn.Linear(hidden, half, bias=False)
        self.k2 = nn.Linear(hidden, half, bias=False)
        self.v = nn.Linear(hidden, hidden, bias=False)
        self.second_norm = nn.LayerNorm(hidden) if second_stream else None
        self.lambda_q1 = nn.Parameter(0.1 * torch.randn(self.head_dim))
        self.lambda_k1 = nn.Parameter(0.1 * torch.randn(self.head_dim))
        self.lambda_q2 = nn.Parameter(0.1 * torch.randn(self.head_dim))
        self.lambda_k2 = nn.Parameter(0.1 * torch.randn(self.head_dim))
        self.head_norm = nn.RMSNorm(2 * self.head_dim, eps=1e-5)
        self.proj = nn.Linear(hidden, hidden)

    def lambda_value(self) -> Tensor:
        """The current scalar λ."""
        first = torch.exp(torch.dot(self.lambda_q1, self.lambda_k1))
        second = torch.exp(torch.dot(self.lambda_q2, self.lambda_k2))
        return first - second + self.lambda_init

    def _attend(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        """softmax(QKᵀ/√h)·V. q, k: (B, G, H/2); v: (B, heads, G, 2h). Returns (B, heads, G, 2h).

        Q and K are zero-padded from h to V's width 2h (the dot products are unchanged): fused kernels
        (CPU flash, CUDA flash) need equal Q/K/V head widths, and the fallback would materialize the
        full (B, heads, G, G) map and keep it for backward.
        """
        pad = (0, self.head_dim)
        q = F.pad(_split_heads(q, self.heads), pad)  # (B, heads, G, 2h)
        k = F.pad(_split_heads(k, self.heads), pad)  # (B, heads, G, 2h)
        return F.scaled_dot_product_attention(q, k, v, scale=self.head_dim**-0.5)  # (B, heads, G, 2h)

    def forward(self, x: Tensor, second: Tensor | None = None) -> Tensor:
        """x: (B, G, H) tokens; second: (B, G, H) the second stream (required iff built with
        second_stream=True). Returns (B, G, H)."""
        if (second is None) != (self.second_norm is None):
            raise ValueError("DifferentialAttention: pass `second` exactly when built with second_stream=True.")
        source = x if self.second_norm is None else self.second_norm(second)  # (B, G, H)
        v = _split_heads(self.v(x), self.heads)  # (B, heads, G, 2h)
        # (A1 − λA2)V = A1V − λ·A2V: one attention map alive at a time.
        out = self._attend(self.q1(x), self.k1(x), v)  # (B, heads, G, 2h)
        out = out - self.lambda_value().to(out.dtype) * self._attend(self.q2(source), self.k2(source), v)
        # Normalize in the weights' precision (float32 under autocast), as autocast does for LayerNorm.
        out = self.head_norm(out.to(self.head_norm.weight.dtype)) * (1.0 - self.lambda_init)  # (B, heads, G, 2h)
        return self.proj(_merge_heads(out))  # (B, G, H)
