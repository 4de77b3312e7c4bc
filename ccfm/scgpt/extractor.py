"""Frozen scGPT → per-gene contextual features on the panel's G positions.

Per cell: the panel genes that are expressed (> 0) and in the vocabulary become tokens after
`<cls>`; their values are binned as the release bins them; `_encode` gives (L, D) features whose
rows 1.. are scattered back to the G panel positions. Positions not covered stay exactly zero.
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

    src: torch.Tensor  # (B, L) long vocab ids, `<cls>` first
    values: torch.Tensor  # (B, L) float binned values, pad_value at `<cls>` and pads
    padding: torch.Tensor  # (B, L) bool, True at padded positions
    gene_positions: list[np.ndarray]  # per cell, the panel positions of tokens 1..


@dataclass(frozen=True)
class ExtractedFeatures:
    features: np.ndarray  # (B, G, D) float32 raw features, zero where not covered
    covered: np.ndarray  # (B, G) bool


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
        # each cell's covered positions first, ascending (a stable sort of "not covered"), then its other genes
        order = np.argsort(~covered, axis=1, kind="stable")[:, :width]  # (B, width)
        real = np.arange(width)[None, :] < lengths[:, None]  # (B, width)
        draws = np.zeros((len(names), width))  # (B, width): each cell's own seeded tie-breaking draws
        for b, name in enumerate(names):
            draws[b, : lengths[b]] = np.random.default_rng(cell_seed(name, self.seed)).random(lengths[b])
        cell_values = np.take_along_axis(expression, order, axis=1)
        bins = bin_rows(cell_values, lengths, self.scgpt.n_bins, draws)  # (B, width)
        src = np.full((len(names), 1 + width), self.scgpt.pad_id, dtype=np.int64)  # (B, L)
        values = np.full((len(names), 1 + width), self.scgpt.pad_value, dtype=np.float32)  # (B, L)
        src[:, 0] = self.scgpt.cls_id
        src[:, 1:] = np.where(real, self.vocab_ids[order], self.scgpt.pad_id)
        values[:, 1:] = np.where(real, bins, self.scgpt.pad_value)
        padding = np.concatenate([np.zeros((len(names), 1), bool), ~real], axis=1)  # (B, L)
        return TokenBatch(
            src=torch.from_numpy(src).to(self.device),
            values=torch.from_numpy(values).to(self.device),
            padding=torch.from_numpy(padding).to(self.device),
            gene_positions=[order[b, : lengths[b]] for b in range(len(names))],
        )

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.autocast is None or self.device.type != "cuda":
            return contextlib.nullcontext()
        return torch.autocast(device_type="cuda", dtype=self.autocast)

    @torch.inference_mode()
    def _encode_rows(self, expression: np.ndarray, names: list[str]) -> list[np.ndarray]:
        """Per cell, the (n_b, D) float32 features of its covered panel positions, in position order."""
        batch = self.tokenize(expression, names)
        with self._autocast(), warnings.catch_warnings():
            # torch's fast path packs padded batches as nested tensors and warns that they are a prototype
            warnings.filterwarnings("ignore", message=".*nested tensors is in prototype.*")
            encoded = self.scgpt.model._encode(batch.src, batch.values, batch.padding)  # (B, L, D)
        encoded = encoded.float().cpu().numpy()
        return [encoded[b, 1 : 1 + pos.size] for b, pos in enumerate(batch.gene_positions)]

    def extract_covered(
        self, expression: np.ndarray, names: list[str], batch_size: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """The features at covered positions only: ((n_covered, D) float32 in the row-major order of
        `covered`, covered (B, G) bool) — what `extract_sorted` returns, without the (B, G, D) zeros around it.
        Cells of similar length are batched together."""
        covered = coverage(expression, self.vocab_ids)  # (B, G)
        rows: list[np.ndarray] = [np.empty((0, self.d_model), np.float32)] * len(names)
        for idx in length_sorted_batches(covered.sum(axis=1), batch_size):
            for i, cell_rows in zip(idx, self._encode_rows(expression[idx], [names[i] for i in idx]), strict=True):
                rows[i] = cell_rows
        return np.concatenate(rows) if rows else np.empty((0, self.d_model), np.float32), covered

    def extract(self, expression: np.ndarray, names: list[str]) -> ExtractedFeatures:
        """Features of B cells: expression (B, G) → (B, G, D) float32 and coverage (B, G)."""
        covered = coverage(expression, self.vocab_ids)  # (B, G)
        features = np.zeros((len(names), self.n_genes, self.d_model), dtype=np.float32)  # (B, G, D)
        for b, cell_rows in enumerate(self._encode_rows(expression, names)):
            features[b, covered[b]] = cell_rows
        return ExtractedFeatures(features, covered)

    def extract_sorted(self, expression: np.ndarray, names: list[str], batch_size: int) -> ExtractedFeatures:
        """Like `extract`, batching cells of similar length together; rows come back in input order."""
        lengths = coverage(expression, self.vocab_ids).sum(axis=1)
        features = np.zeros((len(names), self.n_genes, self.d_model), dtype=np.float32)  # (B, G, D)
        covered = np.zeros((len(names), self.n_genes), dtype=bool)  # (B, G)
        for idx in length_sorted_batches(lengths, batch_size):
            out = self.extract(expression[idx], [names[i] for i in idx])
            features[idx] = out.features
            covered[idx] = out.covered
        return ExtractedFeatures(features, covered)
