"""One training step's loss: draw times and noise, build both paths, run the model, score it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ccfm.config import ObjectiveConfig
from ccfm.flow.coupling import ot_pairing
from ccfm.flow.losses import LossTerms, cascade_loss
from ccfm.flow.path import gaussian_noise, linear_path
from ccfm.flow.sampling import label_dropout
from ccfm.flow.time_sampling import cascaded_time_sample, expression_only_time_sample


@dataclass
class StepInputs:
    """What the objective needs of a batch; tensors on the model's device."""

    target: Tensor  # (B, G) x1, target cells' expression
    control: Tensor  # (B, G) paired control cells
    genes: Tensor  # (G,) long gene-vocabulary ids
    pert: Tensor  # (B, P) long perturbation tokens
    latent: Tensor | None  # (B, G, D) z1, the target cells' normalized latent; None for latent "none"
    groups: Tensor | None = None  # (B,) long, which of the batch's perturbations each cell is (None: one)


def cascade_objective(model: Any, batch: StepInputs, cfg: ObjectiveConfig, generator: torch.Generator) -> LossTerms:
    """The loss of one batch for a cascaded (or, with batch.latent None, expression-only) model.

    Latent-first samples see pure expression noise (t_expr = 0) and train only the latent stream;
    the others see a clean (or late) latent and train only expression (Latent Forcing's cascade).
    """
    from ccfm.model.cascade import MIN_LATENT_GAP, FlowInputs  # imported lazily: ccfm.flow stays model-free

    b, device = batch.target.shape[0], batch.target.device
    use_latent = batch.latent is not None
    sample_times = cascaded_time_sample if use_latent else expression_only_time_sample
    times = sample_times(b, cfg.times, generator, device)
    noise = gaussian_noise(tuple(batch.target.shape), generator, device)  # (B, G)
    core = getattr(model, "module", model)  # the model itself under DistributedDataParallel
    x0 = core.flow_source(batch.control, batch.pert, batch.genes, noise)  # (B, G) as sampling starts
    if cfg.coupling == "ot":  # targets (and their latents) reordered within each perturbation
        perm = ot_pairing(x0, batch.target, batch.groups)
        batch = StepInputs(batch.target[perm], batch.control, batch.genes, batch.pert,
                           None if batch.latent is None else batch.latent[perm], batch.groups)  # fmt: skip
    expr = linear_path(x0, batch.target, times.t_expr)
    latent = None
    if use_latent:  # the latent flows as codes (B, G, K): PCA components per gene, or the features themselves
        z1 = core.latent_space.encode(batch.latent, batch.genes)  # (B, G, K)
        z0 = core.latent_flow_source(batch.pert, batch.genes, gaussian_noise(tuple(z1.shape), generator, device))
        latent = linear_path(z0, z1, times.t_latent)
    pert = label_dropout(batch.pert, cfg.cfg_dropout, generator) if cfg.cfg_dropout > 0 else batch.pert
    out = model(
        FlowInputs(
            x_t=expr.x_t,
            control=batch.control,
            genes=batch.genes,
            pert=pert,
            t_expr=times.t_expr,
            z_t=None if latent is None else latent.x_t,
            t_latent=times.t_latent,
        )
    )
    latent_pred, latent_target = out.latent_velocity, None if latent is None else latent.velocity
    if latent is not None and cfg.latent_loss == "clean":  # compare the implied clean latent with z1
        gap = (1 - times.t_latent).clamp_min(MIN_LATENT_GAP)[:, None, None]  # (B, 1, 1), as the model clamps it
        latent_pred, latent_target = latent.x_t + gap * out.latent_velocity, z1
    return cascade_loss(
        out.expr_velocity,
        expr.velocity,
        latent_pred,
        latent_target,
        times.latent_first,
        expr.x_t,
        times.t_expr,
        batch.target,
        latent_weight=cfg.latent_weight,
        mmd_weight=cfg.mmd_weight,
        groups=batch.groups,
        residual_weight=cfg.residual_weight if core.cfg.source == "prior" else 0.0,
        latent_residual_weight=cfg.latent_residual_weight,  # TrainConfig refuses it without a velocity loss and prior
    )
