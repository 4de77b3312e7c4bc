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
