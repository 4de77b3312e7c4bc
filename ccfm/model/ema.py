"""Exponential moving average of a model's weights, used for sampling."""

from __future__ import annotations

import copy

import torch
from torch import nn


def warmed_decay(decay: float, step: int) -> float:
    """min(decay, (1 + step) / (10 + step)): early updates follow the weights closely.

    Without the warm-up a short run samples from mostly initial weights: after n updates at decay d the
    shadow still holds d^n of them (0.999^600 ≈ 0.55). The warm-up depends on the step alone, so a
    resumed run continues exactly.
    """
    return min(decay, (1.0 + step) / (10.0 + step))


class EMA:
    """Shadow copy of a model whose floating-point tensors track d·shadow + (1 − d)·weights, d = warmed_decay."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must be in [0, 1), got {decay}")
        self.decay = decay
        self.shadow = copy.deepcopy(model).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> None:
        """Fold in the weights after optimizer step `step` (0-based)."""
        decay = warmed_decay(self.decay, step)
        for shadow, live in zip(self.shadow.state_dict().values(), model.state_dict().values(), strict=True):
            if shadow.dtype.is_floating_point:
                shadow.lerp_(live, 1.0 - decay)
            else:
                shadow.copy_(live)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.shadow.state_dict()

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.shadow.load_state_dict(state)
