"""The prediction file format: what `ccfm generate` writes and `ccfm evaluate` (and `cell-eval run`) reads.

One AnnData per method: predicted cells first, labelled with canonical perturbation labels (`A`, `A+B`)
in `obs[PRED_COL]`, then the real control cells the predictions started from, labelled CONTROL_LABEL.
`var_names` are the panel genes in panel order; `X` is float32 log1p(normalize_total), dense or CSR;
`uns["ccfm"]` records where the cells came from (method, run, checkpoint, seed, stand-in flags, ...).
The column and control label are the defaults of the `cell-eval run` command line, so a predictions
file and `real_anndata(...)` written to h5ad can be scored by `cell-eval run -ap ... -ar ...` as they are.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from ccfm.data.conditions import parse_condition
from ccfm.data.loading import PerturbationData
from ccfm.errors import CCFMError

PRED_COL = "target_gene"  # what `cell-eval run` reads by default (its Python default is "target")
CONTROL_LABEL = "non-targeting"  # cell-eval's default control label
PROVENANCE_KEY = "ccfm"  # uns key of the provenance dict
#: cell-eval refuses non-integer data at or above this as "not log1p" (cell_eval.utils.guess_is_lognorm).
LOG1P_MAX = 15.0


def h5ad_safe(value: Any) -> Any:
    """`value` as types anndata can write to h5ad: None -> "none", Paths -> str, tuples -> lists."""
    if value is None:
        return "none"
    if isinstance(value, Mapping):
        return {str(k): h5ad_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [h5ad_safe(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (str, bool, int, float)):
        return value
    return str(value)


def _unique_names(names: list[str]) -> pd.Index:
    index = pd.Index(names, dtype=object)
    if index.is_unique:
        return index
    return pd.Index([f"{n}-{i}" for i, n in enumerate(names)], dtype=object)


def predictions_anndata(
    expression: np.ndarray | sp.spmatrix,
    labels: Sequence[str],
    control_expression: np.ndarray | sp.spmatrix,
    genes: Sequence[str],
    provenance: Mapping[str, Any],
    control_names: Sequence[str] | None = None,
) -> ad.AnnData:
    """Predicted cells (N, G) + the real control cells (Nc, G) they started from, in the prediction format.

    `labels` are perturbation labels, one per predicted cell (stored canonical: `B+A` becomes `A+B`).
    `control_names` are the control cells' names in the data set (obs_names); pass them so `ccfm evaluate`
    can find the same cells among the real data. Values must already be log1p(normalize_total).
    """
    n, g = expression.shape
    n_ctrl = control_expression.shape[0]
    if len(labels) != n or control_expression.shape[1] != g or len(genes) != g:
        raise CCFMError(
            f"prediction shapes disagree: {n}×{g} predicted cells, {len(labels)} labels, "
            f"{n_ctrl}×{control_expression.shape[1]} control cells, {len(genes)} genes"
        )
    if control_names is not None and len(control_names) != n_ctrl:
        raise CCFMError(f"{len(control_names)} control names for {n_ctrl} control cells")
    canonical = {lab: parse_condition(str(lab)) for lab in set(labels)}  # `B+A`, `A+ctrl` -> `A+B`, `A`
    if CONTROL_LABEL in canonical or any(p.is_control for p in canonical.values()):
        raise CCFMError("a predicted cell is labelled as a control; predict perturbations, append controls separately")
    sparse = sp.issparse(expression) or sp.issparse(control_expression)
    stack = sp.vstack if sparse else np.vstack
    x = stack([expression, control_expression]).astype(np.float32)  # (N + Nc, G)
    x = sp.csr_matrix(x) if sparse else np.ascontiguousarray(x)
    ctrl = [str(c) for c in control_names] if control_names is not None else [f"control-{i}" for i in range(n_ctrl)]
    obs = pd.DataFrame(
        {PRED_COL: pd.Categorical([canonical[lab].label for lab in labels] + [CONTROL_LABEL] * n_ctrl)},
        index=_unique_names([f"pred-{i}" for i in range(n)] + ctrl),
    )
    adata = ad.AnnData(X=x, obs=obs, var=pd.DataFrame(index=pd.Index([str(x) for x in genes], dtype=object)))
    adata.uns[PROVENANCE_KEY] = h5ad_safe(dict(provenance))
    return adata


def real_anndata(
    data: PerturbationData, panel: Sequence[str], conditions: Sequence[str], control_rows: np.ndarray
) -> ad.AnnData:
    """The real cells of `conditions` (canonical labels) + the control cells at `control_rows`, same format."""
    from ccfm.data.panel import panel_columns  # panel imports scanpy; keep this module light

    columns = panel_columns(data, list(panel))
    rows = [data.cell_indices(label) for label in conditions]
    pert_rows = np.concatenate(rows) if rows else np.zeros(0, dtype=np.int64)
    all_rows = np.concatenate([pert_rows, np.asarray(control_rows, dtype=np.int64)])
    x = data.expression[all_rows][:, columns].toarray().astype(np.float32)  # (N + Nc, G)
    labels = [str(lab) for lab in data.cell_labels[pert_rows]] + [CONTROL_LABEL] * len(control_rows)
    obs = pd.DataFrame({PRED_COL: pd.Categorical(labels)}, index=_unique_names(data.obs_names[all_rows].tolist()))
    adata = ad.AnnData(X=x, obs=obs, var=pd.DataFrame(index=pd.Index(list(panel), dtype=object)))
    adata.uns[PROVENANCE_KEY] = h5ad_safe({"method": "real", "data": data.source, "stand_in": data.stand_in})
    return adata


def _gene_mismatch(found: list[str], genes: list[str]) -> str:
    if len(found) != len(genes):
        missing = [g for g in genes if g not in set(found)][:3]
        extra = [g for g in found if g not in set(genes)][:3]
        return (
            f"{len(found)} genes instead of the panel's {len(genes)} "
            f"(missing e.g. {', '.join(missing) or 'none'}; extra e.g. {', '.join(extra) or 'none'})"
        )
    diffs = [(i, f, g) for i, (f, g) in enumerate(zip(found, genes, strict=True)) if f != g][:3]
    shown = "; ".join(f"position {i}: {f!r} where the panel has {g!r}" for i, f, g in diffs)
    return f"genes differ from the panel ({shown})"


def _values(x: np.ndarray | sp.spmatrix) -> np.ndarray:
    return x.data if sp.issparse(x) else np.asarray(x).ravel()


def check_predictions(pred: ad.AnnData, genes: Sequence[str], where: str = "predictions") -> None:
    """Refuse a prediction AnnData that cell-eval would mis-score: wrong genes, labels or values."""
    genes = [str(g) for g in genes]
    found = [str(g) for g in pred.var_names]
    if found != genes:
        raise CCFMError(
            f"{where}: {_gene_mismatch(found, genes)}; they were made for another panel — regenerate them "
            "with `ccfm generate` from this run"
        )
    if PRED_COL not in pred.obs:
        raise CCFMError(
            f"{where}: obs has no {PRED_COL!r} column (columns: {', '.join(pred.obs.columns) or 'none'}); "
            "write predictions with ccfm.eval.predictions.predictions_anndata"
        )
    labels = set(pred.obs[PRED_COL].astype(str))
    if CONTROL_LABEL not in labels:
        raise CCFMError(
            f"{where}: no control cells (obs[{PRED_COL!r}] == {CONTROL_LABEL!r}); cell-eval measures every "
            "effect against them — append the control cells the predictions started from"
        )
    if len(labels) < 2:
        raise CCFMError(f"{where}: only control cells, no predicted perturbation")
    values = _values(pred.X)
    n_nan, n_neg = int(np.isnan(values).sum()), int((values < 0).sum())
    if n_nan or n_neg or np.isinf(values).any():
        raise CCFMError(
            f"{where}: {n_nan} NaN, {int(np.isinf(values).sum())} infinite and {n_neg} negative values; "
            "predicted log1p expression must be finite and ≥ 0 (clamp at 0)"
        )
    if values.size and values.max() >= LOG1P_MAX:
        raise CCFMError(
            f"{where}: max value {values.max():.3g} ≥ {LOG1P_MAX}; expected log1p(normalize_total) values, "
            "not raw counts"
        )
