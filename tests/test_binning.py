"""Batched binning (`bin_rows`, `quantile_edges`) is `bin_values` and `np.quantile` cell by cell, bit for bit,
ties and edge cases included."""

from __future__ import annotations

import numpy as np
import pytest

from ccfm.scgpt.binning import bin_rows, bin_values, quantile_edges


class _Draws:
    """A stand-in generator that hands out given draws, so both functions break ties alike."""

    def __init__(self, draws: np.ndarray) -> None:
        self.draws = draws

    def random(self, n: int) -> np.ndarray:
        assert n == self.draws.size
        return self.draws


def _values(kind: str, rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    if kind == "counts":  # many ties
        return rng.poisson(2, size=shape).astype(np.float32) + 1
    if kind == "log1p":  # continuous, float64 as a dense matrix may hold it
        return np.log1p(rng.gamma(0.5, 3, size=shape)) + 1e-3
    if kind == "constant":  # every edge equal
        return np.full(shape, 3.5, dtype=np.float32)
    return (rng.integers(1, 4, size=shape) * np.float32(0.1)).astype(np.float32)  # three values, inexact


@pytest.mark.parametrize("kind", ["counts", "log1p", "constant", "three values"])
@pytest.mark.parametrize("n_bins", [51, 5])
def test_bin_rows_is_bin_values_per_cell(kind: str, n_bins: int) -> None:
    rng = np.random.default_rng(len(kind) + n_bins)
    for _ in range(20):
        b, width = int(rng.integers(1, 30)), int(rng.integers(1, 150))
        lengths = rng.integers(0, width + 1, size=b)
        lengths[0] = min(1, width)  # a cell with one value
        values, draws = _values(kind, rng, (b, width)), rng.random((b, width))
        got, edges = bin_rows(values, lengths, n_bins, draws), quantile_edges(values, lengths, n_bins)
        for i, n in enumerate(lengths):
            if n:
                np.testing.assert_array_equal(edges[i], np.quantile(values[i, :n], np.linspace(0, 1, n_bins - 1)))
            np.testing.assert_array_equal(got[i, :n], bin_values(values[i, :n], n_bins, _Draws(draws[i, :n])))
            assert not got[i, n:].any()
