"""Frozen scGPT → per-gene contextual features on the panel's G positions.

Cells are tokenized all at once (`ccfm.scgpt.tokens`) and run through the model in batches of
similar length; `_encode` gives (L, D) features whose rows 1.. are the features of the cell's
covered panel positions, in panel order.
"""

from __future__ import annotations

import contextlib
import warnings

import numpy as np
import torch

from ccfm.scgpt.checkpoint import ScgptModel
from ccfm.scgpt.tokens import TokenBatch, Tokenizer, length_sorted_batches, packed_index


class FeatureExtractor:
    """Runs a frozen scGPT over cells; identical inputs give identical outputs on one device."""

    def __init__(
        self, scgpt: ScgptModel, vocab_ids: np.ndarray, seed: int = 0, autocast: torch.dtype | None = None
    ) -> None:
        self.scgpt = scgpt
        self.tokenize = Tokenizer(
            np.asarray(vocab_ids, dtype=np.int64), scgpt.pad_id, scgpt.cls_id, scgpt.pad_value, scgpt.n_bins, seed
        )
        self.autocast = autocast
        self.device = next(scgpt.model.parameters()).device

    @property
    def vocab_ids(self) -> np.ndarray:
        return self.tokenize.vocab_ids

    @property
    def n_genes(self) -> int:
        return int(self.vocab_ids.size)

    @property
    def d_model(self) -> int:
        return self.scgpt.d_model

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.autocast is None or self.device.type != "cuda":
            return contextlib.nullcontext()
        return torch.autocast(device_type="cuda", dtype=self.autocast)

    @torch.inference_mode()
    def encode(self, batch: TokenBatch) -> torch.Tensor:
        """(n_covered, D) float32 features of the batch's covered positions, cell after cell, each in panel order,
        on the extractor's device."""
        src, values, padding = (torch.from_numpy(a).to(self.device) for a in (batch.src, batch.values, batch.padding))
        with self._autocast(), warnings.catch_warnings():
            # torch's fast path packs padded batches as nested tensors and warns that they are a prototype
            warnings.filterwarnings("ignore", message=".*nested tensors is in prototype.*")
            encoded = self.scgpt.model._encode(src, values, padding)  # (B, L, D)
        return encoded[:, 1:][~padding[:, 1:]].float()  # the tokens after `<cls>`, pads dropped

    def extract_covered(
        self, expression: np.ndarray, names: list[str], batch_size: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """The features at covered positions: ((n_covered, D) float32 in the row-major order of `covered`,
        covered (B, G) bool). Cells of similar length are run through the model together, `batch_size` at once."""
        tokens = self.tokenize(expression, names)
        return self.encode_cells(tokens, batch_size).cpu().numpy(), tokens.covered

    @torch.inference_mode()
    def encode_cells(self, tokens: TokenBatch, batch_size: int) -> torch.Tensor:
        """(n_covered, D) float32 features of tokenized cells in the row-major order of `tokens.covered`, on the
        extractor's device (where extraction normalizes them and rounds them to fp16 before they leave it)."""
        starts = np.cumsum(tokens.lengths) - tokens.lengths  # (B,) each cell's first row in the output
        rows = torch.empty((int(tokens.lengths.sum()), self.d_model), device=self.device)
        for idx in length_sorted_batches(tokens.lengths, batch_size):
            dest = torch.from_numpy(packed_index(starts[idx], tokens.lengths[idx])).to(self.device)
            rows[dest] = self.encode(tokens.rows(idx))
        return rows
