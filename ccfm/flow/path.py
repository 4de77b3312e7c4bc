"""The linear (rectified-flow) probability path between noise and data, and the noise it starts from.

Shapes: B cells, G genes, D scGPT width. The same path serves expression (B, G) and the latent (B, G, D).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class PathSample:
    """A point on the path and the velocity the model must predict there."""

    x_t: Tensor  # (B, ...) state at time t: (1 - t)·x0 + t·x1
    velocity: Tensor  # (B, ...) target velocity x1 - x0 (constant along a linear path)


def linear_path(x0: Tensor, x1: Tensor, t: Tensor) -> PathSample:
    """Interpolate noise `x0` (B, ...) and data `x1` (B, ...) at per-sample times `t` (B,).

    `t` is broadcast over the trailing dimensions, so the function serves (B, G) expression and
    (B, G, D) latents alike.
    """
    if x0.shape != x1.shape:
        raise ValueError(f"x0 and x1 must have the same shape, got {tuple(x0.shape)} and {tuple(x1.shape)}")
    if t.shape != (x0.shape[0],):
        raise ValueError(f"t must have shape (B,) = ({x0.shape[0]},), got {tuple(t.shape)}")
    t_b = t.to(x0.dtype).reshape(-1, *([1] * (x0.dim() - 1)))  # (B, 1, ...)
    return PathSample(x_t=(1 - t_b) * x0 + t_b * x1, velocity=x1 - x0)


def gaussian_noise(
    shape: tuple[int, ...],
    generator: torch.Generator,
    device: torch.device | str,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """N(0, I) noise of `shape`, drawn on the generator's device and moved to `device`.

    Drawing where the generator lives makes a seed give the same numbers whatever `device` is; pass a
    generator on the training device to avoid a host-to-device copy of large latent noise.
    """
    noise = torch.randn(shape, generator=generator, device=generator.device, dtype=dtype)
    return noise.to(device)
