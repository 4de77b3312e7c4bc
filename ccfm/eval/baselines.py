"""Built-in baselines, computed from training cells only, as cell populations on given control cells.

Every baseline turns sampled control cells c (the same real controls a model starts from) into
predicted cells; effects are pseudobulk deltas in log1p space, Δx = mean(training cells of x) −
mean(training control cells), and shifted cells are clamped at ≥ 0:

- `control` ("no change"): c itself.
- `perturbation_mean`: c + Δp, only for a perturbation p seen in training (its pseudobulk is then the
  training mean of p). A held-out perturbation has no training cells, so it is reported missing.
- `additive`: c + Δa + Δb for a double a+b whose singles a and b both trained. A single (e.g. in the
  `unseen-single` split) or a double with an unseen single has nothing to add and is reported missing.
- `train_mean`: c + the mean of Δp over all training perturbations (equal weight per perturbation):
  cell-eval's own `baseline --as-delta`, the "mean baseline" that deep models often fail to beat
  (Ahlmann-Eltze et al. 2024). Available for every perturbation.

Missing means "not defined for this perturbation", never zero: callers must not score it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from ccfm.data.conditions import parse_condition
from ccfm.errors import CCFMError

BASELINE_KINDS: tuple[str, ...] = ("control", "perturbation_mean", "additive", "train_mean")
#: One line per baseline for reports.
BASELINE_DESCRIPTIONS: dict[str, str] = {
    "control": "no change: each predicted cell is a real control cell",
    "perturbation_mean": "control cell + the perturbation's own training pseudobulk delta (seen perturbations only)",
    "additive": "control cell + Δa + Δb from the training singles, clamped at 0 (doubles with both singles seen)",
    "train_mean": "control cell + the mean training delta over all training perturbations (cell-eval's baseline)",
}


@dataclass(frozen=True)
class TrainingEffects:
    """Pseudobulk effects of the training perturbations, in log1p space."""

    control_mean: np.ndarray  # (G,) mean of the training control cells
    deltas: dict[str, np.ndarray] = field(repr=False)  # canonical label -> (G,) mean(label) − control_mean

    @classmethod
    def from_means(cls, condition_means: Mapping[str, np.ndarray], control_mean: np.ndarray) -> TrainingEffects:
        """From per-condition pseudobulks (label -> (G,)) and the control pseudobulk (G,)."""
        control_mean = np.asarray(control_mean, dtype=np.float64)
        deltas = {lab: np.asarray(m, dtype=np.float64) - control_mean for lab, m in condition_means.items()}
        return cls(control_mean=control_mean, deltas=deltas)

    @classmethod
    def from_cells(cls, train_expression: Mapping[str, np.ndarray], control: np.ndarray) -> TrainingEffects:
        """From training cells (label -> (n, G)) and training control cells (Nc, G)."""
        empty = [lab for lab, x in train_expression.items() if len(x) == 0]
        if empty or len(control) == 0:
            raise CCFMError(f"no training cells for {', '.join(empty) or 'the control'}; cannot form a baseline")
        means = {lab: np.asarray(x, dtype=np.float64).mean(axis=0) for lab, x in train_expression.items()}
        return cls.from_means(means, np.asarray(control, dtype=np.float64).mean(axis=0))

    def mean_delta(self) -> np.ndarray:
        """(G,) the average training effect, equal weight per perturbation."""
        if not self.deltas:
            raise CCFMError("no training perturbations; the train_mean baseline needs at least one")
        return np.mean(np.stack(list(self.deltas.values())), axis=0)


@dataclass(frozen=True)
class BaselinePopulation:
    """A baseline's predicted cells for each requested perturbation it can predict."""

    kind: str  # one of BASELINE_KINDS
    cells: dict[str, np.ndarray]  # canonical label -> (n, G) float32 predicted log1p cells
    control_rows: dict[str, np.ndarray]  # canonical label -> (n,) rows of the control cells each started from
    missing: dict[str, str]  # canonical label -> why this baseline has no prediction for it


def _effect(kind: str, label: str, effects: TrainingEffects) -> np.ndarray | str:
    """(G,) the shift this baseline applies to control cells for `label`, or why there is none."""
    if kind == "control":
        return np.zeros_like(effects.control_mean)
    if kind == "train_mean":
        return effects.mean_delta()
    if kind == "perturbation_mean":
        return effects.deltas.get(label, "not seen in training")
    tokens = parse_condition(label).tokens
    if len(tokens) != 2:
        return "a single perturbation: nothing to add"
    unseen = [t for t in tokens if t not in effects.deltas]
    if unseen:
        return f"single {', '.join(unseen)} not seen in training"
    return effects.deltas[tokens[0]] + effects.deltas[tokens[1]]


def sample_control_rows(n_control: int, n: int, rng: np.random.Generator) -> np.ndarray:
    """(n,) control rows: without replacement while there are enough, with replacement beyond."""
    if n_control < 1:
        raise CCFMError("no control cells to build a baseline on; the predictions file must hold them")
    return np.sort(rng.choice(n_control, size=n, replace=n > n_control))


def baseline_predictions(
    kind: str,
    effects: TrainingEffects,
    control: np.ndarray,
    requests: Mapping[str, int],
    rng: np.random.Generator,
) -> BaselinePopulation:
    """Predicted cells of baseline `kind` for each requested perturbation (label -> number of cells).

    `control` (Nc, G) are the real control cells to start from; each perturbation draws its own rows
    (seeded by `rng`, labels in sorted order so the draw does not depend on dict order).
    """
    if kind not in BASELINE_KINDS:
        raise CCFMError(f"unknown baseline {kind!r}; choose one of {', '.join(BASELINE_KINDS)}")
    control = np.asarray(control, dtype=np.float64)
    if control.ndim != 2 or control.shape[1] != effects.control_mean.shape[0]:
        raise CCFMError(
            f"control cells have shape {control.shape}; expected (cells, {effects.control_mean.shape[0]} genes)"
        )
    cells: dict[str, np.ndarray] = {}
    rows_used: dict[str, np.ndarray] = {}
    missing: dict[str, str] = {}
    for label in sorted(requests):
        rows = sample_control_rows(control.shape[0], int(requests[label]), rng)  # drawn even if missing: stable rng
        shift = _effect(kind, label, effects)
        if isinstance(shift, str):
            missing[label] = shift
            continue
        cells[label] = np.clip(control[rows] + shift, 0.0, None).astype(np.float32)  # (n, G)
        rows_used[label] = rows
    return BaselinePopulation(kind=kind, cells=cells, control_rows=rows_used, missing=missing)
