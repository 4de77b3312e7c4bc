"""Genetic-interaction scores of a double perturbation from pseudobulk expression changes (Norman et al. 2019).

For a pair (a, b) with expression changes δa, δb (its singles) and δab (the pair), each (G,) pseudobulk mean
minus the control cells' mean over the same genes — Norman, Horlbeck et al., "Exploring genetic interaction
manifolds constructed from rich single-cell phenotypes", Science 365:786 (2019), Fig. 4 and Methods:

- the fit δab ≈ c1·δa + c2·δb (least squares here; the paper used a robust (Theil–Sen) regression);
- magnitude = √(c1² + c2²): how much the pair moves expression relative to its singles (√2 when additive);
- model fit = dcor(c1·δa + c2·δb, δab): how well a linear combination of the singles explains the pair
  (dcor: distance correlation, Székely et al. 2007);
- equality of contribution = min(dcor(δa, δab), dcor(δb, δab)) / max(…): 1 when both singles shape the pair
  alike, near 0 when one alone does;
- dominance = |log10(|c1| / |c2|)|: 0 when the singles weigh equally;
- non-additivity = ‖δab − (δa + δb)‖ / ‖δa + δb‖: the pair's departure from the additive prediction, the
  score a screen ranks by (0 for the additive baseline by construction).

Shapes: G genes, N pairs.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

SCORES = ("non_additivity", "magnitude", "model_fit", "equality_of_contribution", "dominance", "c1", "c2")
_EPS = 1e-12


def distance_correlation(x: np.ndarray, y: np.ndarray) -> float:
    """Distance correlation of two (G,) vectors, each entry one observation (Székely, Rizzo & Bakirov 2007)."""

    def centred(v: np.ndarray) -> np.ndarray:
        d = np.abs(v[:, None] - v[None, :])  # (G, G)
        return d - d.mean(0, keepdims=True) - d.mean(1, keepdims=True) + d.mean()

    a, b = centred(np.asarray(x, np.float64)), centred(np.asarray(y, np.float64))
    dcov2, vx, vy = (a * b).mean(), (a * a).mean(), (b * b).mean()
    if vx <= _EPS or vy <= _EPS:
        return 0.0
    return float(np.sqrt(max(dcov2, 0.0) / np.sqrt(vx * vy)))


@dataclass(frozen=True)
class InteractionScores:
    non_additivity: float
    magnitude: float
    model_fit: float
    equality_of_contribution: float
    dominance: float
    c1: float
    c2: float

    def to_row(self) -> dict[str, float]:
        return asdict(self)


def interaction_scores(delta_a: np.ndarray, delta_b: np.ndarray, delta_ab: np.ndarray) -> InteractionScores:
    """The scores above for one pair; each argument a (G,) pseudobulk change against the control mean."""
    a, b, ab = (np.asarray(v, np.float64) for v in (delta_a, delta_b, delta_ab))
    (c1, c2), *_ = np.linalg.lstsq(np.stack([a, b], axis=1), ab, rcond=None)
    fit = c1 * a + c2 * b
    dcor_a, dcor_b = distance_correlation(a, ab), distance_correlation(b, ab)
    additive = a + b
    return InteractionScores(
        non_additivity=float(np.linalg.norm(ab - additive) / max(np.linalg.norm(additive), _EPS)),
        magnitude=float(np.hypot(c1, c2)),
        model_fit=distance_correlation(fit, ab),
        equality_of_contribution=float(min(dcor_a, dcor_b) / max(dcor_a, dcor_b, _EPS)),
        dominance=float(abs(np.log10(max(abs(c1), _EPS) / max(abs(c2), _EPS)))),
        c1=float(c1),
        c2=float(c2),
    )


def precision_at(scores: np.ndarray, truth: np.ndarray, k: int, rng: np.random.Generator) -> float:
    """Share of true pairs among the k highest scores (N,); ties are broken in a seeded random order."""
    order = np.lexsort((rng.random(len(scores)), -np.asarray(scores)))
    return float(np.asarray(truth, bool)[order[:k]].mean())


def auroc(scores: np.ndarray, truth: np.ndarray) -> float:
    """Area under the ROC curve of ranking `truth` (N,) bool by `scores` (N,): Mann–Whitney U with mid-ranks
    for ties (0.5 for a constant score)."""
    scores, truth = np.asarray(scores, np.float64), np.asarray(truth, bool)
    n_pos, n_neg = int(truth.sum()), int((~truth).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores))
    sorted_scores = scores[order]
    i = 0
    while i < len(scores):  # mid-ranks over runs of equal scores
        j = i
        while j + 1 < len(scores) and sorted_scores[j + 1] == sorted_scores[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return float((ranks[truth].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))
