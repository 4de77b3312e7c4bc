"""Cascaded ODE sampling (Latent Forcing's two stages) with classifier-free guidance.

Stage 1 integrates the latent z from noise with the expression input held at its noise x0 and
t_expr = 0, exactly what latent-first training samples showed the model. Stage 2 holds that latent
clean (t_latent = 1) and integrates expression from the same x0. A model without a latent stream
runs stage 2 alone. Shapes: B cells, G genes, D scGPT width, P perturbation slots, S steps.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor
from torchdiffeq import odeint

from ccfm.config import SamplerConfig
from ccfm.errors import CCFMError

# velocity_fn(x_t (B, G), t_expr (B,), z_t (B, G, D) | None, t_latent (B,) | None, need)
#   -> (v_expr (B, G) | None, v_latent (B, G, D) | None)
# `need` ("expr" or "latent") names the stream the caller will use: a model may skip the other head.
VelocityFn = Callable[[Tensor, Tensor, Tensor | None, Tensor | None, str], tuple[Tensor | None, Tensor | None]]

DEFAULT_SAMPLER = SamplerConfig()
NULL_PERTURBATION = -1  # the perturbation id of a dropped (unconditional) label


@dataclass
class CascadeSample:
    """Generated cells and the noise they came from."""

    expression: Tensor  # (B, G) generated expression, clamped
    latent: Tensor | None  # (B, G, D) generated latent; None without a latent stream
    x0: Tensor  # (B, G) expression noise (stage 1's expression input and stage 2's start)
    z0: Tensor | None  # (B, G, D) latent noise; None without a latent stream


def guided(velocity_cond: Tensor, velocity_uncond: Tensor, scale: float) -> Tensor:
    """Classifier-free guidance: v_u + scale · (v_c − v_u); scale 1 returns v_c."""
    return velocity_uncond + scale * (velocity_cond - velocity_uncond)


def label_dropout(pert: Tensor, prob: float, generator: torch.Generator) -> Tensor:
    """Replace every slot of each sample's perturbation (B, P) by NULL_PERTURBATION with probability `prob`.

    Training with this teaches the model the unconditional velocity used by classifier-free guidance.
    """
    if not 0.0 <= prob <= 1.0:
        raise CCFMError(f"label dropout probability must be in [0, 1], got {prob}")
    draws = torch.rand(pert.shape[0], generator=generator, device=generator.device).to(pert.device)  # (B,)
    dropped = (draws < prob)[:, None]  # (B, 1)
    return pert.masked_fill(dropped, NULL_PERTURBATION)  # (B, P)


def _time_grid(steps: int, like: Tensor) -> Tensor:
    """Fixed grid (S + 1,) of `steps` equal steps on [0, 1], on `like`'s device and dtype."""
    return torch.linspace(0.0, 1.0, steps + 1, device=like.device, dtype=like.dtype)


def _per_cell(t: Tensor, batch: int) -> Tensor:
    """The solver's scalar time as a (B,) tensor the model may keep or modify."""
    return t.reshape(1).expand(batch).clone()  # (B,)


def _integrate(field: Callable[[Tensor, Tensor], Tensor], y0: Tensor, steps: int, method: str) -> Tensor:
    """Integrate dy/dt = field(t, y) from t = 0 to 1 on a fixed grid; returns y(1) only.

    The grid goes to the solver as `grid_constructor` and the output times are just {0, 1}, so the
    solver keeps two states, not S + 1 (which for a (B, G, D) latent would be gigabytes).
    """
    grid = _time_grid(steps, y0)  # (S + 1,)
    ends = grid[[0, -1]]  # (2,)
    path = odeint(field, y0, ends, method=method, options={"grid_constructor": lambda f, y, t: grid})
    return path[-1]  # (B, ...)


def _guided_velocity(
    velocity_fn: VelocityFn,
    velocity_fn_uncond: VelocityFn | None,
    scale: float,
    stream: Literal["expr", "latent"],
    inputs: tuple[Tensor, Tensor, Tensor | None, Tensor | None],
) -> Tensor:
    """One stream's velocity at `inputs` = (x_t, t_expr, z_t, t_latent), guided when scale != 1."""
    index = 0 if stream == "expr" else 1
    v_cond = velocity_fn(*inputs, stream)[index]
    if v_cond is None:
        raise CCFMError("the model returned no latent velocity (no latent stream); sample it with z0=None")
    if scale == 1.0 or velocity_fn_uncond is None:  # _check_guidance refused scale != 1 without uncond
        return v_cond
    return guided(v_cond, velocity_fn_uncond(*inputs, stream)[index], scale)


def _check_guidance(cfg: SamplerConfig, has_latent: bool, velocity_fn_uncond: VelocityFn | None) -> None:
    """Refuse a guidance scale != 1 without an unconditional velocity, before any work is done."""
    scales = {"guidance_expr": cfg.guidance_expr}
    if has_latent:
        scales["guidance_latent"] = cfg.guidance_latent
    for name, scale in scales.items():
        if scale != 1.0 and velocity_fn_uncond is None:
            raise CCFMError(
                f"{name}={scale} needs an unconditional velocity; pass velocity_fn_uncond "
                "(a model trained with label dropout, called with the null perturbation) or set it to 1.0"
            )


def _check_noise(x0: Tensor, z0: Tensor | None) -> None:
    """x0 must be (B, G); z0, when given, (B, G, D) on the same cells and genes."""
    if x0.dim() != 2:
        raise ValueError(f"x0 must be (B, G), got {tuple(x0.shape)}")
    if z0 is not None and (z0.dim() != 3 or z0.shape[:2] != x0.shape):
        raise ValueError(f"z0 must be (B, G, D) with (B, G) = {tuple(x0.shape)}, got {tuple(z0.shape)}")


@torch.no_grad()
def sample_expression(
    velocity_fn: VelocityFn,
    x0: Tensor,
    latent: Tensor | None,
    cfg: SamplerConfig = DEFAULT_SAMPLER,
    velocity_fn_uncond: VelocityFn | None = None,
) -> Tensor:
    """Stage 2: expression (B, G) integrated from x0 (B, G) with a clean latent (B, G, D) held at t_latent = 1.

    `latent` is stage 1's output, or any latent of the same cells and genes (e.g. the measured latent of
    real cells, to see what a perfect stage 1 would give); None for a model without a latent stream.
    """
    _check_noise(x0, latent)
    _check_guidance(cfg, False, velocity_fn_uncond)
    batch = x0.shape[0]
    t_latent = None if latent is None else torch.ones(batch, device=x0.device, dtype=x0.dtype)  # (B,)

    def expr_field(t: Tensor, x: Tensor) -> Tensor:  # x: (B, G)
        inputs = (x, _per_cell(t, batch), latent, t_latent)
        return _guided_velocity(velocity_fn, velocity_fn_uncond, cfg.guidance_expr, "expr", inputs)

    expression = _integrate(expr_field, x0, cfg.steps, cfg.method)  # (B, G)
    return expression.clamp_min(cfg.clamp_min) if cfg.clamp_min is not None else expression


@torch.no_grad()
def sample_cascade(
    velocity_fn: VelocityFn,
    x0: Tensor,
    z0: Tensor | None,
    cfg: SamplerConfig = DEFAULT_SAMPLER,
    velocity_fn_uncond: VelocityFn | None = None,
) -> CascadeSample:
    """Generate expression (B, G) from noise x0 (B, G) and, for a cascaded model, latent noise z0 (B, G, D).

    The caller draws x0 and z0 with its own generator (`ccfm.flow.path.gaussian_noise`), so sampling is
    seeded, and puts the model in eval() (with EMA weights). `velocity_fn_uncond` is the same model with
    the null perturbation, needed only for guidance scales != 1. With z0 None the velocity functions are
    called with z_t = t_latent = None and only expression is integrated.
    """
    _check_noise(x0, z0)
    _check_guidance(cfg, z0 is not None, velocity_fn_uncond)
    batch = x0.shape[0]
    zeros = torch.zeros(batch, device=x0.device, dtype=x0.dtype)  # (B,)
    latent = None
    if z0 is not None:

        def latent_field(t: Tensor, z: Tensor) -> Tensor:  # z: (B, G, D)
            inputs = (x0, zeros, z, _per_cell(t, batch))
            return _guided_velocity(velocity_fn, velocity_fn_uncond, cfg.guidance_latent, "latent", inputs)

        latent = _integrate(latent_field, z0, cfg.latent_steps, cfg.method)  # (B, G, D)
    expression = sample_expression(velocity_fn, x0, latent, cfg, velocity_fn_uncond)  # (B, G)
    return CascadeSample(expression=expression, latent=latent, x0=x0, z0=z0)
