"""Where the flow starts: x0, the same in training and in sampling.

- `noise`: x0 ~ N(0, I) (scDFM): the model must build the whole perturbed cell from nothing.
- `control`: x0 = the paired control cell + σ·ε: the model learns the perturbation's change.
- `prior`: x0 = control + Σ_slots shift(token) + σ·ε, where shift(token) is the mean expression change of the
  token's single perturbation in the training cells (a token without a training single gets the mean shift of
  all training singles). For a double this is the additive baseline `control + Δa + Δb`, so the model learns
  only the residual (the interaction) and starts, at zero velocity, where the additive baseline is.
  With the interaction head, x0 also carries r̂, an interaction on the genes the components move together
  (InteractionHead), fitted before training on the training doubles' pseudobulk (fit_interaction); 0 when fresh.

Shape legend: B cells, G genes, P perturbation slots, T perturbation tokens (genes, then drugs).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from ccfm.errors import CCFMError

FIT_MAX_STEPS = 400  # cross-validation picks ≤ this; on the validation draw held-out doubles lost beyond ~200
FIT_LR = 1e-2
FIT_FOLDS = 4
FIT_MIN_DOUBLES = 4  # fewer training doubles: the head stays 0 (nothing to learn an interaction from)


class InteractionHead(nn.Module):
    """r̂ = shared · MLP(gene embedding, prior shift, shared shift) per gene: what a perturbation's components do
    together beyond adding, on the genes they both move (shared: FlowSource.shared_shift). Exactly 0 for a single
    and wherever one component alone moves a gene; zero-initialized, so a fresh head is the additive prior.
    A function of how each component moves a gene, not of the pair's identity: it carries to unmeasured pairs."""

    def __init__(self, n_genes: int, width: int = 8, hidden: int = 32) -> None:
        super().__init__()
        self.gene = nn.Embedding(n_genes, width)
        self.mlp = nn.Sequential(nn.Linear(width + 2, hidden), nn.GELU(), nn.Linear(hidden, 1))
        nn.init.zeros_(self.mlp[-1].weight)
        nn.init.zeros_(self.mlp[-1].bias)

    def forward(self, genes: Tensor, prior: Tensor, shared: Tensor) -> Tensor:
        """genes: (G,) ids; prior, shared: (B, G). Returns r̂ (B, G)."""
        emb = self.gene(genes).expand(*prior.shape, -1)  # (B, G, W)
        features = torch.cat([emb, prior[..., None], shared[..., None]], dim=-1)  # (B, G, W + 2)
        return shared * self.mlp(features).squeeze(-1)  # (B, G)


class FlowSource(nn.Module):
    """x0 from control cells, perturbation tokens and noise; the prior's shift table is a buffer (saved in runs)."""

    def __init__(
        self, kind: str, noise_std: float, n_tokens: int, n_genes: int, with_table: bool = False,
        interaction: bool = False,
    ) -> None:  # fmt: skip
        super().__init__()
        self.kind = kind
        self.noise_std = noise_std
        has_table = kind == "prior" or with_table  # the shift tokens read the table too (cascade.py)
        self.register_buffer("shift", torch.zeros(n_tokens, n_genes) if has_table else torch.zeros(0, 0))
        self.interaction = InteractionHead(n_genes) if kind == "prior" and interaction else None

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

    def _slot_shifts(self, pert: Tensor, genes: Tensor) -> Tensor:
        """(B, P, G) each filled slot's token shifts on `genes`, 0 for empty slots."""
        filled = pert >= 0  # (B, P)
        rows = self.shift[:, genes][torch.where(filled, pert, 0)]  # (B, P, G)
        return rows * filled[..., None].to(rows.dtype)

    def prior_shift(self, pert: Tensor, genes: Tensor) -> Tensor:
        """Σ over filled slots of the tokens' shifts on `genes`. pert: (B, P) long, -1 empty; genes: (G,)."""
        return self._slot_shifts(pert, genes).sum(dim=1)  # (B, G)

    def shared_shift(self, pert: Tensor, genes: Tensor) -> Tensor:
        """(B, G) what the components move together: signed √|Σ_{i<j} shift_i · shift_j|, 0 with one component.
        Two components that move a gene by d each give d, opposite moves −d: where an interaction between them
        (a shared pathway saturating or synergising) can show."""
        return _shared(self._slot_shifts(pert, genes))

    def prior_and_interaction(self, pert: Tensor, genes: Tensor) -> tuple[Tensor, Tensor]:
        """(prior shift, r̂), each (B, G); r̂ is 0 without an interaction head."""
        rows = self._slot_shifts(pert, genes)  # (B, P, G)
        prior = rows.sum(dim=1)  # (B, G)
        if self.interaction is None:
            return prior, torch.zeros_like(prior)
        return prior, self.interaction(genes, prior, _shared(rows))

    def forward(self, control: Tensor, pert: Tensor, genes: Tensor, noise: Tensor) -> Tensor:
        """control, noise: (B, G); pert: (B, P); genes: (G,) ids (panel genes come first). Returns x0 (B, G)."""
        if self.kind == "noise":
            return noise
        x0 = control + self.noise_std * noise  # (B, G)
        if self.kind == "prior":  # the head is fitted on pseudobulk (fit_interaction), not through the flow
            prior, interaction = self.prior_and_interaction(pert, genes)
            x0 = x0 + prior + interaction.detach()  # (B, G)
        return x0


def _shared(rows: Tensor) -> Tensor:
    """(B, G) signed √|Σ_{i<j} r_i r_j| of the slots' shifts rows (B, P, G)."""
    pairs = (rows.sum(dim=1).pow(2) - rows.pow(2).sum(dim=1)) / 2  # (B, G)
    return pairs.sign() * pairs.abs().sqrt()


@dataclass(frozen=True)
class InteractionFit:
    """How the interaction head was fitted (recorded in the checkpoints): the step count picked by cross-validation
    over the training doubles."""

    steps: int  # full-batch Adam steps of the final fit on all training doubles (0: the head stays the prior)
    doubles: int  # training doubles it was fitted on
    cv_mse_prior: float  # their held-out pseudobulk MSE with no interaction (the additive prior): the null reference
    cv_mse_fit: float  # ... with the interaction fitted on the other folds, at `steps`


def fit_interaction(
    head: InteractionHead, prior: Tensor, shared: Tensor, missed: Tensor, genes: Tensor, seed: int
) -> InteractionFit:
    """Fit `head` to the training doubles' pseudobulk: r̂(prior, shared) ≈ missed = Δ(double) − prior.

    prior, shared, missed: (N, G) per training double; genes: (G,) ids. FIT_FOLDS-fold cross-validation over the
    doubles (seeded) picks the step count (up to FIT_MAX_STEPS; 0 if no step beats the prior on held-out doubles);
    the head is then refitted from its initial weights on all doubles for that many steps. Full-batch, deterministic.
    """
    n = prior.shape[0]
    if n < FIT_MIN_DOUBLES:
        return InteractionFit(0, n, float("nan"), float("nan"))
    start = {k: v.clone() for k, v in head.state_dict().items()}

    def mse(rows: Tensor) -> Tensor:
        return (head(genes, prior[rows], shared[rows]) - missed[rows]).pow(2).mean()

    folds = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).chunk(FIT_FOLDS)
    curve = np.zeros(FIT_MAX_STEPS + 1)  # held-out MSE after k steps, summed over the folds' doubles
    for held in folds:
        head.load_state_dict(start)
        rest = torch.cat([f for f in folds if f is not held])
        curve += len(held) * np.asarray(_adam(head, mse, rest, FIT_MAX_STEPS, held))
    curve /= n
    best = int(np.argmin(curve))
    head.load_state_dict(start)
    _adam(head, mse, torch.arange(n), best)
    return InteractionFit(best, n, float(curve[0]), float(curve[best]))


def _adam(
    head: nn.Module, mse: Callable[[Tensor], Tensor], rows: Tensor, steps: int, held: Tensor | None = None
) -> list[float]:
    """`steps` full-batch Adam steps on mse(rows); mse(held) before the first and after every step ([] if None)."""
    optimizer = torch.optim.Adam(head.parameters(), lr=FIT_LR)
    seen = []
    for step in range(steps + 1):
        if held is not None:
            with torch.no_grad():
                seen.append(float(mse(held)))
        if step == steps:
            break
        optimizer.zero_grad()
        mse(rows).backward()
        optimizer.step()
    return seen
