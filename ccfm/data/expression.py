"""Model-ready expression: log1p(normalize_total), from raw counts or from data already in that form."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from ccfm.errors import CCFMError

#: Nonzero values inspected when deciding counts vs log data (enough to be sure, cheap on 91k cells).
_INSPECT_VALUES = 200_000
#: log1p(normalize_total) data stay far below this; larger non-integers are some other transform.
_LOG_MAX = 30.0

Matrix = np.ndarray | sp.spmatrix | sp.sparray


@dataclass(frozen=True)
class ValueKind:
    """What a matrix holds, judged from its nonzero values."""

    integer: bool  # all inspected nonzero values are whole numbers
    max_value: float  # largest value in the matrix


def _values(matrix: Matrix) -> np.ndarray:
    return matrix.data if sp.issparse(matrix) else np.asarray(matrix).ravel()


def check_finite_nonnegative(matrix: Matrix, where: str) -> None:
    """Refuse NaN, Inf and negative values, naming how many and where."""
    values = _values(matrix)
    n_nan = int(np.isnan(values).sum())
    n_inf = int(np.isinf(values).sum())
    n_neg = int((values < 0).sum())
    if n_nan or n_inf:
        raise CCFMError(
            f"{where} contains {n_nan} NaN and {n_inf} infinite values; expression must be finite — "
            "remove or impute those entries before running CCFM"
        )
    if n_neg:
        raise CCFMError(
            f"{where} contains {n_neg} negative values (min {values.min():.3g}); CCFM needs raw counts or "
            "log1p(normalize_total) data — scaled/centred matrices are not accepted; point --counts-layer "
            "at the raw counts"
        )


def value_kind(matrix: Matrix) -> ValueKind:
    values = _values(matrix)
    nonzero = values[values != 0]
    step = max(1, nonzero.size // _INSPECT_VALUES)
    sample = nonzero[::step]
    integer = bool(np.all(sample == np.round(sample)))
    return ValueKind(integer=integer, max_value=float(values.max()) if values.size else 0.0)


def log_normalize(counts: Matrix, target_sum: float | None = None) -> sp.csr_matrix:
    """log1p(counts scaled to `target_sum` per cell); default target = median total (scanpy's default)."""
    counts = sp.csr_matrix(counts, dtype=np.float32)
    totals = np.asarray(counts.sum(axis=1)).ravel()  # (N,)
    if np.any(totals == 0):
        raise CCFMError(
            f"{int((totals == 0).sum())} cells have zero total counts; filter empty cells before running CCFM"
        )
    target = float(np.median(totals)) if target_sum is None else target_sum
    scale = (target / totals).astype(np.float32)  # (N,)
    normalized = sp.diags(scale) @ counts
    normalized.data = np.log1p(normalized.data)
    return sp.csr_matrix(normalized, dtype=np.float32)


@dataclass(frozen=True)
class ModelExpression:
    """Expression as the model sees it, and a sentence on how it was obtained."""

    matrix: sp.csr_matrix  # (N, G) float32 log1p(normalize_total)
    note: str


def model_expression(x: Matrix, layers: dict[str, Matrix], counts_layer: str | None) -> ModelExpression:
    """Choose and, when needed, normalize the expression the model uses.

    With `counts_layer` the user asked for that layer: it must hold integer counts. Otherwise X is
    used as is when it already holds log data, normalized when it holds integer counts.
    """
    if counts_layer is not None:
        counts = layers[counts_layer]
        check_finite_nonnegative(counts, f"layers[{counts_layer!r}]")
        kind = value_kind(counts)
        if not kind.integer:
            raise CCFMError(
                f"layers[{counts_layer!r}] holds non-integer values (max {kind.max_value:.3g}), not raw counts; "
                "omit --counts-layer to use log data in X, or name the layer with the raw counts"
            )
        return ModelExpression(log_normalize(counts), f"log1p(normalize_total) computed from layers[{counts_layer!r}]")
    check_finite_nonnegative(x, "X")
    kind = value_kind(x)
    if kind.integer:
        return ModelExpression(log_normalize(x), "X held raw counts; log1p(normalize_total) computed from it")
    if kind.max_value > _LOG_MAX:
        raise CCFMError(
            f"X holds non-integer values up to {kind.max_value:.3g}: neither raw counts nor log1p data; "
            "pass --counts-layer with the raw counts, or log1p-transform X"
        )
    return ModelExpression(sp.csr_matrix(x, dtype=np.float32), "X used as log1p(normalize_total) data")
