"""Latent features for any cells: read from the store when cached, computed on the fly when not.

A miss is computed with the same frozen extractor and the store's frozen statistics and rounded to
fp16 exactly as extraction writes it, so a cell gives the same latent whether it was cached or not.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch

from ccfm.errors import CCFMError
from ccfm.latent.fingerprint import cell_hashes, panel_hash
from ccfm.latent.statistics import FrozenStats, RunningMoments
from ccfm.latent.store import LatentStore, ShardRows
from ccfm.scgpt.checkpoint import ScgptModel
from ccfm.scgpt.extractor import FeatureExtractor

HASH_BLOCK = 4096  # cells whose expression is hashed at once when checking a data set against a store


@dataclass(frozen=True)
class NormalizedFeatures:
    features: np.ndarray  # (B, G, D) float16, normalized; zero where not covered
    covered: np.ndarray  # (B, G) bool


def normalized_features(
    extractor: FeatureExtractor, stats: FrozenStats, expression: np.ndarray, names: list[str], batch_size: int
) -> NormalizedFeatures:
    """What extraction writes for cells with panel expression (B, G): only the covered positions are normalized
    and rounded to fp16; the rest stays exactly 0."""
    rows, covered = extractor.extract_covered(expression, names, batch_size)  # (n_covered, D), (B, G)
    return stored_features(stats, rows, covered)


def _fp16_rows(stats: FrozenStats, rows: torch.Tensor) -> torch.Tensor:
    mean, scale = (torch.from_numpy(a).to(rows.device) for a in stats.float32_shift_scale())
    return rows.sub(mean).mul_(scale).half()


def stored_rows(stats: FrozenStats, rows: np.ndarray) -> np.ndarray:
    """Raw features of covered positions (n, D) float32 as the store holds them: `stats.normalize_rows` rounded
    to fp16, bit for bit — the same float32 subtraction and product, in torch's kernels (3-5× numpy's float16
    conversion here)."""
    return _fp16_rows(stats, torch.from_numpy(np.ascontiguousarray(rows, dtype=np.float32))).numpy()


def stored_shard(stats: FrozenStats, rows: torch.Tensor, covered: np.ndarray) -> ShardRows:
    """A shard as `ShardWriter` writes it, from its raw rows (n_covered, D) float32 in the row-major order of
    covered (S, G): normalized, rounded to fp16 and summarized on their device, so that only fp16 leaves a GPU."""
    stored = _fp16_rows(stats, rows)
    return ShardRows(stored.cpu().numpy(), covered, RunningMoments.of_tensor(stored))


def stored_features(stats: FrozenStats, rows: np.ndarray, covered: np.ndarray) -> NormalizedFeatures:
    """Raw features of the covered positions (n_covered, D), in the row-major order of `covered` (B, G), as the
    store gives them back: normalized and rounded to fp16 there, exactly 0 elsewhere."""
    features = np.zeros((*covered.shape, rows.shape[1]), dtype=np.float16)  # (B, G, D)
    features[covered] = stored_rows(stats, rows)
    return NormalizedFeatures(features, covered)


@dataclass(frozen=True)
class LatentBatch:
    features: np.ndarray  # (B, G, D) float32 normalized latent
    covered: np.ndarray  # (B, G) bool
    n_hits: int  # cells read from the store (the rest were computed)


class LatentSource:
    """One object that serves normalized (B, G, D) latents for any list of cells."""

    def __init__(self, store: LatentStore, extractor: FeatureExtractor | None, batch_size: int = 32) -> None:
        self.store = store
        self.extractor = extractor
        self.batch_size = batch_size
        self.stats = FrozenStats.from_json(store.record.frozen_stats)
        self.genes = store.array("genes").tolist()
        self.vocab_ids = store.array("vocab_ids")
        self._hashes = store.array("cell_hashes")

    @classmethod
    def open(cls, path: Path, scgpt: ScgptModel | None, batch_size: int = 32, seed: int | None = None) -> LatentSource:
        """Open a complete store; with a checkpoint, refuse a store made by another one."""
        store = LatentStore.open(path)
        if not store.complete:
            raise CCFMError(
                f"latent store {path} is incomplete (an extraction was interrupted); rerun "
                "`ccfm extract ... --resume` to finish it"
            )
        damaged = store.damaged_shards(deep=False)
        if damaged:
            raise CCFMError(
                f"latent store {path} has {len(damaged)} missing or truncated shard(s) (first: {damaged[0]}); "
                "rerun `ccfm extract ... --resume` to rebuild them"
            )
        extractor = None
        if scgpt is not None:
            record = store.record
            built_with = record.fingerprint.checkpoint
            if built_with != scgpt.fingerprint:
                raise CCFMError(
                    f"latent store {path} was built with another scGPT checkpoint (store {built_with[:12]}, "
                    f"given {scgpt.fingerprint[:12]} from {scgpt.folder}); use the checkpoint it was built "
                    "with or re-extract"
                )
            seed = record.seed if seed is None else seed
            # bf16 autocast on a GPU, as `ccfm extract` runs it (ignored on a CPU)
            extractor = FeatureExtractor(scgpt, store.array("vocab_ids"), seed=seed, autocast=torch.bfloat16)
        return cls(store, extractor, batch_size)

    def check_panel(self, genes: list[str], vocab_ids: np.ndarray | None = None) -> None:
        """Refuse use with another panel (gene order matters)."""
        ids = self.vocab_ids if vocab_ids is None else vocab_ids
        if panel_hash(genes, ids) != panel_hash(self.genes, self.vocab_ids):
            extra = sorted(set(genes) - set(self.genes))[:3]
            raise CCFMError(
                f"latent store {self.store.path} was built for another gene panel ({len(self.genes)} genes; "
                f"given {len(genes)}{', e.g. ' + ', '.join(extra) + ' not in the store' if extra else ''}); "
                "use the store's panel or re-extract"
            )

    def check_cells(self, names: list[str], expression: np.ndarray) -> np.ndarray:
        """Store row of each cell (-1 when not cached); refuses cached cells whose expression changed.

        expression: (B, G) panel expression, dense or CSR.
        """
        rows = self.store.row_of(list(names))  # (B,)
        hit = np.flatnonzero(rows >= 0)
        for start in range(0, hit.size, HASH_BLOCK):  # blocks: a CSR matrix of 91k cells is never densified whole
            block = hit[start : start + HASH_BLOCK]
            dense = expression[block].toarray() if sp.issparse(expression) else expression[block]
            stale = self._hashes[rows[block]] != cell_hashes(dense)
            if stale.any():
                raise CCFMError(
                    f"cell {names[block[np.flatnonzero(stale)[0]]]} is in latent store {self.store.path} with "
                    f"different expression ({int(stale.sum())} such cells in a block of {block.size}): the store "
                    "was built from other data; re-extract for this data set"
                )
        return rows

    def compute(self, names: list[str], expression: np.ndarray) -> NormalizedFeatures:
        """The fallback: latents computed now exactly as extraction computes them (expression (B, G))."""
        if self.extractor is None:
            raise CCFMError(
                f"{len(names)} cells (e.g. {names[0]}) are not in latent store {self.store.path} and no scGPT "
                "checkpoint was given to compute them; pass --scgpt"
            )
        return normalized_features(self.extractor, self.stats, expression, names, self.batch_size)

    def get(self, names: list[str], expression: np.ndarray) -> LatentBatch:
        """Latents of B cells, given their names and panel expression (B, G) as the store's data hold it."""
        rows = self.check_cells(names, expression)  # (B,)
        hit = rows >= 0
        features = np.zeros((len(names), len(self.genes), self.store.d_model), dtype=np.float32)  # (B, G, D)
        covered = np.zeros((len(names), len(self.genes)), dtype=bool)  # (B, G)
        if hit.any():
            stored = self.store.read(rows[hit])
            features[hit], covered[hit] = stored.features, stored.covered
        if (~hit).any():
            miss = np.flatnonzero(~hit)
            computed = self.compute([names[i] for i in miss], expression[miss])
            features[miss], covered[miss] = computed.features, computed.covered
        return LatentBatch(features, covered, int(hit.sum()))
