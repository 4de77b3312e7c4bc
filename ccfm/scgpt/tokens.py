"""scGPT's inputs for a block of cells, from numpy alone (so that helper processes can build them).

Per cell: the panel genes that are expressed (> 0) and in the vocabulary become tokens after `<cls>`, in
panel order; their values are binned as the release bins them, ties broken by a generator seeded with the
cell's name (`ccfm.scgpt.binning`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from ccfm.scgpt.binning import bin_rows, cell_seed


@dataclass(frozen=True)
class TokenBatch:
    """scGPT inputs for B cells padded to the longest, L = 1 + most covered genes."""

    src: np.ndarray  # (B, L) int64 vocab ids, `<cls>` first
    values: np.ndarray  # (B, L) float32 binned values, pad_value at `<cls>` and pads
    padding: np.ndarray  # (B, L) bool, True at padded positions
    lengths: np.ndarray  # (B,) covered genes per cell (tokens after `<cls>`)
    covered: np.ndarray  # (B, G) bool: the panel positions of each cell's tokens

    def rows(self, idx: np.ndarray) -> TokenBatch:
        """The cells `idx`, padded to their own longest."""
        width = 1 + int(self.lengths[idx].max(initial=0))
        return TokenBatch(
            self.src[idx, :width], self.values[idx, :width], self.padding[idx, :width], self.lengths[idx],
            self.covered[idx],
        )  # fmt: skip


def coverage(expression: np.ndarray, vocab_ids: np.ndarray) -> np.ndarray:
    """(B, G) bool: expressed and in the vocabulary."""
    return (expression > 0) & (vocab_ids >= 0)[None, :]


def packed_index(starts: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """(sum(counts),) int64: the rows of blocks of `counts` (B,) rows beginning at `starts` (B,), one block after
    another — where each cell's rows go in (or come from) a packed (rows, D) array."""
    counts = np.asarray(counts, dtype=np.int64)
    before = np.cumsum(counts) - counts  # (B,) rows of the earlier blocks
    return np.repeat(np.asarray(starts, dtype=np.int64) - before, counts) + np.arange(int(counts.sum()))


def length_sorted_batches(lengths: np.ndarray, batch_size: int) -> list[np.ndarray]:
    """Batches of indices with similar lengths, to cut padding; deterministic (stable sort)."""
    order = np.argsort(lengths, kind="stable")
    return [order[i : i + batch_size] for i in range(0, order.size, batch_size)]


@dataclass(frozen=True)
class Tokenizer:
    """What turns panel expression into scGPT tokens: the panel's vocabulary ids and the checkpoint's specials."""

    vocab_ids: np.ndarray  # (G,) int64, -1 where the gene is not in the vocabulary
    pad_id: int
    cls_id: int
    pad_value: float
    n_bins: int
    seed: int  # tie-breaking draws: one generator per cell, seeded by (seed, cell name)

    def __call__(self, expression: np.ndarray | sp.spmatrix, names: list[str]) -> TokenBatch:
        """expression: (B, G) panel values, dense or sparse (any monotone scale: bins are per-cell quantiles)."""
        expression = expression.toarray() if sp.issparse(expression) else np.asarray(expression)
        covered = coverage(expression, self.vocab_ids)  # (B, G)
        lengths = covered.sum(axis=1)  # (B,)
        width = int(lengths.max(initial=0))
        real = np.arange(width)[None, :] < lengths[:, None]  # (B, width)
        order = np.zeros((len(names), width), dtype=np.intp)  # (B, width): each cell's covered positions, ascending
        order[real] = np.nonzero(covered)[1]  # row-major: cell by cell, positions ascending
        draws = np.zeros((len(names), width))  # (B, width): each cell's own seeded tie-breaking draws
        for b, name in enumerate(names):
            draws[b, : lengths[b]] = np.random.default_rng(cell_seed(name, self.seed)).random(lengths[b])
        cell_values = np.where(real, np.take_along_axis(expression, order, axis=1), 0)
        bins = bin_rows(cell_values, lengths, self.n_bins, draws)  # (B, width)
        src = np.full((len(names), 1 + width), self.pad_id, dtype=np.int64)  # (B, L)
        values = np.full((len(names), 1 + width), self.pad_value, dtype=np.float32)  # (B, L)
        src[:, 0] = self.cls_id
        src[:, 1:] = np.where(real, self.vocab_ids[order], self.pad_id)
        values[:, 1:] = np.where(real, bins, self.pad_value)
        padding = np.concatenate([np.zeros((len(names), 1), bool), ~real], axis=1)  # (B, L)
        return TokenBatch(src, values, padding, lengths, covered)
