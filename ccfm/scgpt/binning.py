"""scGPT's per-cell value binning, with reproducible tie-breaking.

The release bins each cell's non-zero values into quantile bins 1..n_bins-1 (51 bins → 1..50) and
spreads values that fall on equal bin edges uniformly at random. Here that random draw comes from
a generator seeded by the cell's name, so a cache is reproducible bit for bit and a cell binned on
its own (the on-the-fly fallback) gets the bins it got during extraction.
"""

from __future__ import annotations

import hashlib

import numpy as np


def cell_seed(name: str, seed: int = 0) -> int:
    """A stable 64-bit seed for one cell, independent of its position in any file."""
    digest = hashlib.blake2b(f"{seed}:{name}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little")


def bin_values(values: np.ndarray, n_bins: int, rng: np.random.Generator) -> np.ndarray:
    """Bin one cell's non-zero values (L,) into integers in [1, n_bins - 1], as scGPT's `binning`.

    Values on a bin edge shared by several quantiles get a uniformly drawn bin between their left
    and right digitization, as the release does, but from `rng`.
    """
    if values.size == 0:
        return np.zeros(0, dtype=np.int64)
    edges = np.quantile(values, np.linspace(0, 1, n_bins - 1))  # (n_bins - 1,)
    left = np.digitize(values, edges)
    right = np.digitize(values, edges, right=True)
    draws = rng.random(values.size)
    return np.ceil(draws * (right - left) + left).astype(np.int64)  # (L,)


def quantile_edges(values: np.ndarray, lengths: np.ndarray, n_bins: int) -> np.ndarray:
    """(B, n_bins - 1) float64: `np.quantile(values[b, :lengths[b]], np.linspace(0, 1, n_bins - 1))` for every
    cell b at once, bit for bit — numpy's default ('linear') method with numpy's own operations in its own order:
    index (n − 1)·q, the two neighbours in the sorted values, then a + (b − a)·γ, or b − (b − a)·(1 − γ) where
    γ ≥ 0.5. Cells with no values get edges 0."""
    b, width = values.shape
    valid = np.arange(width)[None, :] < lengths[:, None]  # (B, L)
    ordered = np.sort(np.where(valid, values, np.inf), axis=1)  # (B, L), each cell's values ascending
    ordered[~valid] = 0  # the padding sorted last; never an edge of a cell with values
    quantiles = np.linspace(0, 1, n_bins - 1)  # (Q,)
    virtual = (lengths[:, None] - 1) * quantiles[None, :]  # (B, Q) float64
    previous = np.floor(virtual)
    above = virtual >= (lengths[:, None] - 1)
    last = np.maximum(lengths - 1, 0)[:, None]  # index -1 of each cell's values
    lo = np.where(above, last, previous).astype(np.intp)
    hi = np.where(above, last, previous + 1).astype(np.intp)
    gamma = virtual - np.where(above, -1, previous).astype(np.intp)  # as numpy forms it, -1 included
    rows = np.arange(b)[:, None]
    a, c = ordered[rows, lo], ordered[rows, hi]  # (B, Q)
    diff = c - a
    return np.where(gamma >= 0.5, c - diff * (1 - gamma), a + diff * gamma)


def bin_rows(values: np.ndarray, lengths: np.ndarray, n_bins: int, draws: np.ndarray) -> np.ndarray:
    """`bin_values` for B cells at once, bit for bit: values (B, L) with cell b's non-zero values in its first
    lengths[b] columns, draws (B, L) its `rng.random(lengths[b])` there; (B, L) int64 bins, 0 past each length.
    The digitization is `np.digitize`'s own search on non-decreasing edges, cell by cell."""
    edges = quantile_edges(values, lengths, n_bins)  # (B, Q)
    wide = values.astype(edges.dtype)  # exact; what searchsorted would convert to on each call
    left, right = np.zeros(values.shape, np.int64), np.zeros(values.shape, np.int64)  # (B, L)
    for b, n in enumerate(lengths.tolist()):
        left[b, :n] = np.searchsorted(edges[b], wide[b, :n], side="right")  # np.digitize(v, edges)
        right[b, :n] = np.searchsorted(edges[b], wide[b, :n], side="left")  # np.digitize(v, edges, right=True)
    bins = np.ceil(draws * (right - left) + left).astype(np.int64)
    return np.where(np.arange(values.shape[1])[None, :] < lengths[:, None], bins, 0)
