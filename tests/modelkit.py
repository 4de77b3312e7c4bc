"""Inputs for the model's tests: a batch the model accepts, and heads opened as training would open them."""

from __future__ import annotations

import torch

from ccfm.config import ModelConfig
from ccfm.model import CascadedFlowModel, FlowInputs

B = 3  # cells in a test batch


def make_inputs(cfg: ModelConfig, genes: torch.Tensor | None = None, batch: int = B, seed: int = 1) -> FlowInputs:
    rng = torch.Generator().manual_seed(seed)
    genes = torch.arange(cfg.n_genes) if genes is None else genes
    g = len(genes)
    latent = cfg.latent == "scgpt"
    return FlowInputs(
        x_t=torch.randn(batch, g, generator=rng),
        control=torch.rand(batch, g, generator=rng) * 3,
        genes=genes,
        pert=torch.tensor([[5, -1], [7, 11], [-1, -1]])[:batch],
        t_expr=torch.rand(batch, generator=rng),
        z_t=torch.randn(batch, g, cfg.latent_dim, generator=rng) if latent else None,
        t_latent=torch.rand(batch, generator=rng) if latent else None,
    )


def unzero_heads(model: CascadedFlowModel) -> None:
    """Give the zero-initialized output layers weights, as training would."""
    outs = [model.expr_head.out] + ([model.latent_head.out] if model.has_latent else [])
    for layer in outs:
        torch.nn.init.normal_(layer.weight, std=0.1)
