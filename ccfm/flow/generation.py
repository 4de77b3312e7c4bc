"""Sampling cells from a trained cascaded model: noise → latent (stage 1) → expression (stage 2)."""

from __future__ import annotations

import torch
from torch import Tensor

from ccfm.flow.path import gaussian_noise
from ccfm.flow.sampling import (
    NULL_PERTURBATION,
    CascadeSample,
    SamplerConfig,
    VelocityFn,
    sample_cascade,
    sample_expression,
)


def _velocity(model: torch.nn.Module, control: Tensor, genes: Tensor, pert: Tensor) -> VelocityFn:
    from ccfm.model.cascade import FlowInputs  # ccfm.flow stays importable without the network

    def velocity(x_t: Tensor, t_expr: Tensor, z_t: Tensor | None, t_latent: Tensor | None, need: str):
        heads = need if model.cfg.latent == "scgpt" else "expr"  # each stage reads one head; skip the other
        inputs = FlowInputs(
            x_t=x_t, control=control, genes=genes, pert=pert, t_expr=t_expr, z_t=z_t, t_latent=t_latent, heads=heads
        )
        out = model(inputs)
        return out.expr_velocity, out.latent_velocity

    return velocity


@torch.no_grad()
def generate_cells(
    model: torch.nn.Module, control: Tensor, pert: Tensor, generator: torch.Generator, cfg: SamplerConfig
) -> CascadeSample:
    """Predicted cells for B (control cell, perturbation) pairs.

    control: (B, G) real control cells over the model's panel; pert: (B, P) token ids. The model must
    be in eval mode (EMA weights). Noise comes from `generator`, so a seed reproduces the sample.
    """
    b, g = control.shape
    genes = torch.arange(g, device=control.device)  # (G,) the panel is the first G gene ids
    x0 = model.flow_source(control, pert, genes, gaussian_noise((b, g), generator, control.device))  # (B, G)
    z0 = None
    if model.cfg.latent == "scgpt":  # in code space (B, G, K); model.latent_space.decode gives full latents
        z0 = model.latent_flow_source(
            pert, genes, gaussian_noise((b, g, model.cfg.latent_width), generator, control.device)
        )
    uncond = None
    if cfg.guidance_expr != 1.0 or (z0 is not None and cfg.guidance_latent != 1.0):
        uncond = _velocity(model, control, genes, torch.full_like(pert, NULL_PERTURBATION))
    return sample_cascade(_velocity(model, control, genes, pert), x0, z0, cfg, uncond)


@torch.no_grad()
def generate_from_latent(
    model: torch.nn.Module,
    control: Tensor,
    pert: Tensor,
    latent: Tensor,
    generator: torch.Generator,
    cfg: SamplerConfig,
) -> Tensor:
    """Stage 2 alone: expression (B, G) for B (control, perturbation) pairs guided by a given clean latent code
    (B, G, K) (model.latent_space.encode of full latents).

    With the measured latents of real perturbed cells this shows what a perfect stage 1 would give.
    """
    genes = torch.arange(control.shape[1], device=control.device)  # (G,)
    x0 = model.flow_source(control, pert, genes, gaussian_noise(tuple(control.shape), generator, control.device))
    return sample_expression(_velocity(model, control, genes, pert), x0, latent, cfg)
