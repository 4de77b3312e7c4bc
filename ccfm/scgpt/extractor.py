"""Frozen scGPT → per-gene contextual features on the panel's G positions.

Per cell: the panel genes that are expressed (> 0) and in the vocabulary become tokens after
`<cls>`, in panel order; their values are binned as the release bins them; `_encode` gives (L, D)
features whose rows 1.. are the features of those covered panel positions. Cells are tokenized
all at once and run through the model in batches of similar length.
"""

from __future__ import annotations

import contextlib
import warnings
from dataclasses import dataclass

import numpy as np
import torch

from ccfm.scgpt.binning import bin_rows, cell_seed
from ccfm.scgpt.checkpoint import ScgptModel


@dataclass(frozen=True)
class TokenBatch:
    """scGPT inputs for B cells padded to the longest, L = 1 + most covered genes."""

    src: np.ndarray  # (B, L) int64 vocab ids, `<cls>` first
    values: np.ndarray  # (B, L) float32 binned values, pad_value at `<cls>` and pads
    padding: np.ndarray  # (B, L) bool, True at padded positions
    lengths: np.ndarray  # (B,) covered genes per cell (tokens after `<cls>`)

    def rows(self, idx: np.ndarray) -> TokenBatch:
        """The cells `idx`, padded to their own longest."""
        width = 1 + int(self.lengths[idx].max(initial=0))
        return TokenBatch(self.src[idx, :width], self.values[idx, :width], self.padding[idx, :width], self.lengths[idx])


def coverage(expression: np.ndarray, vocab_ids: np.ndarray) -> np.ndarray:
    """(B, G) bool: expressed and in the vocabulary."""
    return (expression > 0) & (vocab_ids >= 0)[None, :]


def length_sorted_batches(lengths: np.ndarray, batch_size: int) -> list[np.ndarray]:
    """Batches of indices with similar lengths, to cut padding; deterministic (stable sort)."""
    order = np.argsort(lengths, kind="stable")
    return [order[i : i + batch_size] for i in range(0, order.size, batch_size)]


class FeatureExtractor:
    """Runs a frozen scGPT over cells; identical inputs give identical outputs on one device."""

    def __init__(
        self, scgpt: ScgptModel, vocab_ids: np.ndarray, seed: int = 0, autocast: torch.dtype | None = None
    ) -> None:
        self.scgpt = scgpt
        self.vocab_ids = np.asarray(vocab_ids, dtype=np.int64)  # (G,)
        self.seed = seed
        self.autocast = autocast
        self.device = next(scgpt.model.parameters()).device

    @property
    def n_genes(self) -> int:
        return int(self.vocab_ids.size)

    @property
    def d_model(self) -> int:
        return self.scgpt.d_model

    def tokenize(self, expression: np.ndarray, names: list[str]) -> TokenBatch:
        """expression: (B, G) panel values (any monotone scale: bins are per-cell quantiles)."""
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
        bins = bin_rows(cell_values, lengths, self.scgpt.n_bins, draws)  # (B, width)
        src = np.full((len(names), 1 + width), self.scgpt.pad_id, dtype=np.int64)  # (B, L)
        values = np.full((len(names), 1 + width), self.scgpt.pad_value, dtype=np.float32)  # (B, L)
        src[:, 0] = self.scgpt.cls_id
        src[:, 1:] = np.where(real, self.vocab_ids[order], self.scgpt.pad_id)
        values[:, 1:] = np.where(real, bins, self.scgpt.pad_value)
        padding = np.concatenate([np.zeros((len(names), 1), bool), ~real], axis=1)  # (B, L)
        return TokenBatch(src, values, padding, lengths)

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.autocast is None or self.device.type != "cuda":
            return contextlib.nullcontext()
        return torch.autocast(device_type="cuda", dtype=self.autocast)

    @torch.inference_mode()
    def encode(self, batch: TokenBatch) -> np.ndarray:
        """(n_covered, D) float32 features of the batch's covered positions, cell after cell, each in panel order."""
        src, values, padding = (torch.from_numpy(a).to(self.device) for a in (batch.src, batch.values, batch.padding))
        with self._autocast(), warnings.catch_warnings():
            # torch's fast path packs padded batches as nested tensors and warns that they are a prototype
            warnings.filterwarnings("ignore", message=".*nested tensors is in prototype.*")
            encoded = self.scgpt.model._encode(src, values, padding)  # (B, L, D)
        return encoded[:, 1:][~padding[:, 1:]].float().cpu().numpy()  # the tokens after `<cls>`, pads dropped

    def extract_covered(
        self, expression: np.ndarray, names: list[str], batch_size: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """The features at covered positions: ((n_covered, D) float32 in the row-major order of `covered`,
        covered (B, G) bool). Cells of similar length are run through the model together, `batch_size` at once."""
        tokens = self.tokenize(expression, names)
        covered = coverage(expression, self.vocab_ids)  # (B, G)
        starts = np.cumsum(tokens.lengths) - tokens.lengths  # (B,) each cell's first row in the output
        rows = np.empty((int(tokens.lengths.sum()), self.d_model), dtype=np.float32)
        for idx in length_sorted_batches(tokens.lengths, batch_size):
            counts = tokens.lengths[idx]
            rows[np.repeat(starts[idx] - (np.cumsum(counts) - counts), counts) + np.arange(counts.sum())] = self.encode(
                tokens.rows(idx)
            )
        return rows, covered
