"""Where the flow starts: x0, the same in training and in sampling.

- `noise`: x0 ~ N(0, I) (scDFM): the model must build the whole perturbed cell from nothing.
- `control`: x0 = the paired control cell + σ·ε: the model learns the perturbation's change.
- `prior`: x0 = control + Σ_slots shift(token) + σ·ε, where shift(token) is the mean expression change of the
  token's single perturbation in the training cells (a token without a training single gets the mean shift of
  all training singles). For a double this is the additive baseline `control + Δa + Δb`, so the model learns
  only the residual (the interaction) and starts, at zero velocity, where the additive baseline is.

Shape legend: B cells, G genes, P perturbation slots, T perturbation tokens (genes, then drugs).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ccfm.errors import CCFMError


class FlowSource(nn.Module):
    """x0 from control cells, perturbation tokens and noise; the prior's shift table is a buffer (saved in runs)."""

    def __init__(self, kind: str, noise_std: float, n_tokens: int, n_genes: int, with_table: bool = False) -> None:
        super().__init__()
        self.kind = kind
        self.noise_std = noise_std
        has_table = kind == "prior" or with_table  # the shift tokens read the table too (cascade.py)
        self.register_buffer("shift", torch.zeros(n_tokens, n_genes) if has_table else torch.zeros(0, 0))

    @property
    def has_table(self) -> bool:
        return self.shift.numel() > 0

    def set_shifts(self, shift: Tensor) -> None:
        """shift: (T, n_genes) float, each token's mean training shift on each gene of the vocabulary."""
        if tuple(shift.shape) != tuple(self.shift.shape):
            raise CCFMError(
                f"prior shift table has shape {tuple(shift.shape)}, expected {tuple(self.shift.shape)} "
                "(perturbation tokens × the model's genes)"
            )
        self.shift.copy_(shift)

    def prior_shift(self, pert: Tensor, genes: Tensor) -> Tensor:
        """Σ over filled slots of the tokens' shifts on `genes`. pert: (B, P) long, -1 empty; genes: (G,)."""
        filled = pert >= 0  # (B, P)
        table = self.shift[:, genes]  # (T, G)
        rows = table[torch.where(filled, pert, 0)]  # (B, P, G)
        return (rows * filled[..., None].to(rows.dtype)).sum(dim=1)  # (B, G)

    def forward(self, control: Tensor, pert: Tensor, genes: Tensor, noise: Tensor) -> Tensor:
        """control, noise: (B, G); pert: (B, P); genes: (G,) ids (panel genes come first). Returns x0 (B, G)."""
        if self.kind == "noise":
            return noise
        x0 = control + self.noise_std * noise  # (B, G)
        if self.kind == "prior":
            x0 = x0 + self.prior_shift(pert, genes)  # (B, G)
        return x0
