"""Embedders: flow time, expression values, perturbation labels and the scGPT latent.

Shape legend: B cells, G genes, D scGPT width, H hidden width, P perturbation slots.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

#: Sinusoidal features per timestep (as DiT and scDFM use before the MLP).
TIMESTEP_FEATURES = 256
#: Longest period of the sinusoidal features.
TIMESTEP_MAX_PERIOD = 10_000.0


def timestep_features(t: Tensor, dim: int = TIMESTEP_FEATURES, max_period: float = TIMESTEP_MAX_PERIOD) -> Tensor:
    """Sinusoidal features of raw flow time (not rescaled to [0, 1000]).

    t: (B,) in [0, 1]. Returns (B, dim) float32, cosines then sines.
    """
    half = dim // 2
    exponent = -math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half
    angles = t.float()[:, None] * torch.exp(exponent)[None, :]  # (B, dim/2)
    return torch.cat([torch.cos(angles), torch.sin(angles)], dim=-1)  # (B, dim)


class TimestepEmbedder(nn.Module):
    """Flow time × `scale` → sinusoidal features → MLP → (B, H).

    With the 10,000 period, raw t in [0, 1] turns only the first quarter of the frequencies through more than
    a tenth of a radian; DiT's t in [0, 1000] (scale 1000) spreads them over the whole range.
    """

    def __init__(self, hidden: int, features: int = TIMESTEP_FEATURES, scale: float = 1.0) -> None:
        super().__init__()
        self.features = features
        self.scale = scale
        self.mlp = nn.Sequential(nn.Linear(features, hidden), nn.SiLU(), nn.Linear(hidden, hidden))

    def forward(self, t: Tensor) -> Tensor:
        """t: (B,) in [0, 1]. Returns (B, H)."""
        features = timestep_features(t * self.scale, self.features).to(self.mlp[0].weight.dtype)  # (B, 256)
        return self.mlp(features)  # (B, H)


class ValueEncoder(nn.Module):
    """One scalar expression value per token → (B, G, H): Linear, ReLU, Linear, LayerNorm.

    Values are clamped from above only: noisy states are legitimately negative.
    """

    def __init__(self, hidden: int, clamp: float) -> None:
        super().__init__()
        self.clamp = clamp
        self.mlp = nn.Sequential(nn.Linear(1, hidden), nn.ReLU(), nn.Linear(hidden, hidden))
        self.norm = nn.LayerNorm(hidden)

    def forward(self, values: Tensor) -> Tensor:
        """values: (B, G). Returns (B, G, H)."""
        x = values.clamp(max=self.clamp).unsqueeze(-1)  # (B, G, 1)
        return self.norm(self.mlp(x))  # (B, G, H)


class TokenFusion(nn.Module):
    """Fuses the noisy-state tokens with the control-cell tokens: Linear 2H→H, GELU, Linear, LayerNorm."""

    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(2 * hidden, hidden), nn.GELU(), nn.Linear(hidden, hidden))
        self.norm = nn.LayerNorm(hidden)

    def forward(self, state_tokens: Tensor, control_tokens: Tensor) -> Tensor:
        """state_tokens, control_tokens: (B, G, H). Returns (B, G, H)."""
        x = torch.cat([state_tokens, control_tokens], dim=-1)  # (B, G, 2H)
        return self.norm(self.mlp(x))  # (B, G, H)


class PerturbationEmbedder(nn.Module):
    """≤ P perturbation tokens → one order-invariant vector (B, H).

    Token ids: [0, n_genes) is a gene and is looked up in the *gene* embedding table (passed in, so a gene
    seen as an expression token is partly known as a perturbation); [n_genes, n_genes + n_drugs) is a drug
    with its own table; negative ids are empty slots. Non-empty slots are averaged; a row with every slot
    empty is the control (null) perturbation and gets a learned embedding — the classifier-free-guidance label.
    """

    def __init__(self, n_genes: int, n_drugs: int, hidden: int) -> None:
        super().__init__()
        self.n_genes = n_genes
        self.n_drugs = n_drugs
        self.drug_embedding = nn.Embedding(n_drugs, hidden) if n_drugs > 0 else None
        self.null_embedding = nn.Parameter(torch.randn(hidden) / math.sqrt(hidden))
        self.mlp = nn.Sequential(nn.Linear(hidden, hidden), nn.GELU(), nn.Linear(hidden, hidden))

    def forward(self, pert: Tensor, gene_table: Tensor) -> Tensor:
        """pert: (B, P) long; gene_table: (n_genes, H), the gene embedding weights. Returns (B, H)."""
        filled = pert >= 0  # (B, P)
        is_drug = pert >= self.n_genes  # (B, P)
        if self.drug_embedding is None:
            # An id ≥ n_genes stays out of range and makes the lookup raise instead of being clamped.
            vectors = F.embedding(torch.where(filled, pert, 0), gene_table)  # (B, P, H)
        else:
            gene_ids = torch.where(filled & ~is_drug, pert, 0)  # (B, P)
            drug_ids = torch.where(is_drug, pert - self.n_genes, 0)  # (B, P)
            vectors = torch.where(
                is_drug[..., None], self.drug_embedding(drug_ids), F.embedding(gene_ids, gene_table)
            )  # (B, P, H)
        weights = filled.to(vectors.dtype)  # (B, P)
        count = weights.sum(dim=1, keepdim=True)  # (B, 1)
        mean = (vectors * weights[..., None]).sum(dim=1) / count.clamp(min=1)  # (B, H)
        pooled = torch.where(count > 0, mean, self.null_embedding.to(mean.dtype))  # (B, H)
        return self.mlp(pooled)  # (B, H)


class LatentEmbedder(nn.Module):
    """scGPT features → expression-token space: Linear D→bottleneck, GELU, Linear → H."""

    def __init__(self, latent_dim: int, bottleneck: int, hidden: int) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(latent_dim, bottleneck), nn.GELU(), nn.Linear(bottleneck, hidden))

    def forward(self, z: Tensor) -> Tensor:
        """z: (B, G, D). Returns (B, G, H)."""
        return self.mlp(z)  # (B, G, H)
