"""Per-sample flow times for training: Latent Forcing's cascaded ("latent first") schedule.

A latent-first sample trains the latent stream: its latent sits at a random time and its expression
input is pure noise (t_expr = 0). Every other sample trains expression, seeing a clean (or nearly
clean) latent. This mirrors the two sampling stages in `ccfm.flow.sampling`.
Shapes: B cells.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ccfm.config import CascadeTimeConfig

LATE_LATENT_MIN = 0.75  # "late": expression samples see t_latent ~ U(0.75, 1) (better in Latent Forcing)


@dataclass
class CascadeTimes:
    """Times for one training batch."""

    t_expr: Tensor  # (B,) expression time; exactly 0 for latent-first samples
    t_latent: Tensor | None  # (B,) latent time; None for a model without a latent stream
    latent_first: Tensor  # (B,) bool: the sample trains the latent (True) or expression (False)


def _uniform(batch: int, generator: torch.Generator, device: torch.device | str) -> Tensor:
    """U[0, 1) of shape (B,), drawn on the generator's device so a seed gives the same numbers anywhere."""
    return torch.rand(batch, generator=generator, device=generator.device).to(device)  # (B,)


def _trained_time(batch: int, dist: str, generator: torch.Generator, device: torch.device | str) -> Tensor:
    """Times (B,) in [0, 1) for the stream a sample trains, from `dist`."""
    if dist == "logit_normal":
        normal = torch.randn(batch, generator=generator, device=generator.device)
        return torch.sigmoid(normal).to(device)  # (B,) in (0, 1)
    return _uniform(batch, generator, device)


def cascaded_time_sample(
    batch: int, cfg: CascadeTimeConfig, generator: torch.Generator, device: torch.device | str
) -> CascadeTimes:
    """Draw (t_expr, t_latent, latent_first) for `batch` samples of a model with a latent stream.

    Latent-first (probability p): t_latent ~ t_dist, t_expr = 0 exactly.
    Otherwise: t_expr ~ t_dist, t_latent = 1 ("clean") or U(0.75, 1) ("late").
    """
    latent_first = _uniform(batch, generator, device) < cfg.latent_first_prob  # (B,) bool
    t_trained = _trained_time(batch, cfg.t_dist, generator, device)  # (B,)
    if cfg.t_latent_for_expr == "late":
        t_context = LATE_LATENT_MIN + (1 - LATE_LATENT_MIN) * _uniform(batch, generator, device)  # (B,)
    else:
        t_context = torch.ones(batch, device=device)  # (B,)
    zeros = torch.zeros(batch, device=device)
    return CascadeTimes(
        t_expr=torch.where(latent_first, zeros, t_trained),
        t_latent=torch.where(latent_first, t_trained, t_context),
        latent_first=latent_first,
    )


def expression_only_time_sample(
    batch: int, cfg: CascadeTimeConfig, generator: torch.Generator, device: torch.device | str
) -> CascadeTimes:
    """Times for a model without a latent stream (`latent == "none"`): t_expr ~ cfg.t_dist for every sample,
    `t_latent` None and `latent_first` all False. Only `cfg.t_dist` is used."""
    return CascadeTimes(
        t_expr=_trained_time(batch, cfg.t_dist, generator, device),
        t_latent=None,
        latent_first=torch.zeros(batch, dtype=torch.bool, device=device),
    )
