"""Score one method's predicted cells against the real held-out cells with cell-eval's MetricsEvaluator.

What cell-eval does on its own, and what this wrapper does about it:
- `MetricsEvaluator` casts float16 X to float32 and, when X holds only whole numbers, runs
  `normalize_total` + `log1p` IN PLACE on the objects it is given (`_convert_to_normlog`). Both inputs
  are copied here, so the caller's AnnData objects are never modified.
- Our values are log1p already. `allow_discrete=True` switches that normalization off whatever the
  values look like (a clamped prediction can be all zeros, i.e. "integers"), and `is_log1p=True` is
  passed to pdex explicitly, so its fold changes still treat the data as log1p (allow_discrete alone
  would make pdex treat them as counts).
- cell-eval requires identical genes in identical order, the same perturbation set on both sides and
  the control on both; genes are checked here (error), perturbations are restricted to those on both
  sides (the dropped ones are recorded), the control is required on both.
- Its Python default column is "target" (the CLI's is "target_gene"); PRED_COL is passed explicitly.
"""

from __future__ import annotations

import importlib.metadata
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import anndata as ad
import numpy as np
import polars as pl

from ccfm.errors import CCFMError
from ccfm.eval.predictions import CONTROL_LABEL, PRED_COL

log = logging.getLogger(__name__)

PROFILES: tuple[str, ...] = ("full", "minimal", "vcc")


@dataclass(frozen=True)
class MethodScores:
    """cell-eval's scores of one method."""

    method: str  # name shown in the report
    per_perturbation: pl.DataFrame  # one row per perturbation ("perturbation" column), one column per metric
    aggregate: pl.DataFrame  # cell-eval's summary ("statistic" column: count, mean, std, min, quartiles, max)
    perturbations: tuple[str, ...]  # perturbations scored (present on both sides)
    dropped_pred_only: tuple[str, ...]  # predicted but without real cells: not scored
    dropped_real_only: tuple[str, ...]  # real but not predicted by this method: not scored
    outdir: Path  # where cell-eval wrote results.csv, agg_results.csv, real_de.csv, pred_de.csv
    seconds: float  # wall time of the cell-eval run


def cell_eval_version() -> str:
    return importlib.metadata.version("cell-eval")


def _labels(adata: ad.AnnData, side: str) -> set[str]:
    if PRED_COL not in adata.obs:
        raise CCFMError(f"the {side} cells have no obs[{PRED_COL!r}] column; build them with ccfm.eval.predictions")
    labels = set(adata.obs[PRED_COL].astype(str))
    if CONTROL_LABEL not in labels:
        raise CCFMError(
            f"the {side} cells hold no control cells ({PRED_COL} == {CONTROL_LABEL!r}); cell-eval needs them"
        )
    return labels


def _restrict(adata: ad.AnnData, keep: set[str]) -> ad.AnnData:
    """A copy with only the cells whose label is in `keep` (never a view: cell-eval writes into its input)."""
    labels = adata.obs[PRED_COL].astype(str).to_numpy()
    out = adata[np.isin(labels, sorted(keep))].copy()
    out.obs[PRED_COL] = out.obs[PRED_COL].astype(str).astype("category")
    return out


def align_pair(pred: ad.AnnData, real: ad.AnnData) -> tuple[ad.AnnData, ad.AnnData, set[str], set[str]]:
    """Copies of both sides restricted to the shared perturbations; also the pred-only and real-only labels."""
    pred_genes, real_genes = [str(g) for g in pred.var_names], [str(g) for g in real.var_names]
    if pred_genes != real_genes:
        first = next((i for i, (p, r) in enumerate(zip(pred_genes, real_genes, strict=False)) if p != r), None)
        where = f"first difference at position {first}" if first is not None else "different lengths"
        raise CCFMError(
            f"predicted and real cells have different genes ({len(pred_genes)} vs {len(real_genes)}, {where}); "
            "both must hold the run's panel in panel order"
        )
    pred_labels, real_labels = _labels(pred, "predicted"), _labels(real, "real")
    shared = pred_labels & real_labels
    if shared == {CONTROL_LABEL}:
        raise CCFMError(
            "no perturbation is present among both the predicted and the real cells; predict the held-out "
            f"perturbations (predicted e.g. {', '.join(sorted(pred_labels - {CONTROL_LABEL})[:3])})"
        )
    return _restrict(pred, shared), _restrict(real, shared), pred_labels - shared, real_labels - shared


def evaluate_method(
    pred: ad.AnnData,
    real: ad.AnnData,
    outdir: Path,
    profile: str = "full",
    num_threads: int = 1,
    method: str = "prediction",
    skip_metrics: tuple[str, ...] = (),
) -> MethodScores:
    """Run cell-eval on copies of `pred` and `real` (log1p, prediction format); writes CSVs into `outdir`."""
    from cell_eval import MetricsEvaluator  # heavy import (numba, pdex): only when scoring

    if profile not in PROFILES:
        raise CCFMError(f"unknown cell-eval profile {profile!r}; choose one of {', '.join(PROFILES)}")
    pred_c, real_c, pred_only, real_only = align_pair(pred, real)
    if pred_only or real_only:
        log.warning(
            "%s: scoring %d shared perturbations; dropped %d predicted-only (%s) and %d real-only (%s)",
            method,
            len(set(pred_c.obs[PRED_COL]) - {CONTROL_LABEL}),
            len(pred_only),
            ", ".join(sorted(pred_only)[:5]),
            len(real_only),
            ", ".join(sorted(real_only)[:5]),
        )
    outdir = Path(outdir)  # MetricsEvaluator creates it (and warns when it exists already)
    log.info("cell-eval %s: scoring %s (profile %s)", cell_eval_version(), method, profile)
    start = time.perf_counter()
    evaluator = MetricsEvaluator(
        adata_pred=pred_c,
        adata_real=real_c,
        control_pert=CONTROL_LABEL,
        pert_col=PRED_COL,
        num_threads=num_threads,
        outdir=str(outdir),
        allow_discrete=True,
        pdex_kwargs={"is_log1p": True},
    )
    results, agg = evaluator.compute(profile=profile, skip_metrics=list(skip_metrics) or None)
    if results.is_empty():
        raise CCFMError(f"cell-eval produced no scores for {method}; see the log above for the failing metrics")
    return MethodScores(
        method=method,
        per_perturbation=results.sort("perturbation"),
        aggregate=agg,
        perturbations=tuple(sorted(results["perturbation"].to_list())),
        dropped_pred_only=tuple(sorted(pred_only)),
        dropped_real_only=tuple(sorted(real_only)),
        outdir=outdir,
        seconds=time.perf_counter() - start,
    )
