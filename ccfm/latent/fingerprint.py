"""What a latent store was built from, so that it is never reused with something else."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np


def sha256_of(*parts: Any) -> str:
    digest = hashlib.sha256()
    for part in parts:
        if isinstance(part, np.ndarray):
            digest.update(str(part.dtype).encode())
            digest.update(np.ascontiguousarray(part).tobytes())
        else:
            digest.update(json.dumps(part, sort_keys=True, default=str).encode())
        digest.update(b"|")
    return digest.hexdigest()


def file_sha256(path: Path) -> str:
    """sha256 of a file's bytes (what `sha256sum` prints)."""
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def cell_hashes(expression: np.ndarray) -> np.ndarray:
    """(B,) uint64 content hash of each cell's panel expression (B, G), float32 bytes."""
    rows = np.ascontiguousarray(expression, dtype=np.float32)
    out = np.empty(rows.shape[0], dtype=np.uint64)
    for i, row in enumerate(rows):
        out[i] = int.from_bytes(hashlib.blake2b(row.tobytes(), digest_size=8).digest(), "little")
    return out


def panel_hash(genes: list[str], vocab_ids: np.ndarray) -> str:
    return sha256_of(list(map(str, genes)), np.asarray(vocab_ids, dtype=np.int64))


def data_hash(obs_names: list[str], hashes: np.ndarray) -> str:
    return sha256_of(list(map(str, obs_names)), np.asarray(hashes, dtype=np.uint64))


@dataclass(frozen=True)
class StoreFingerprint:
    """Hashes of everything that determines a store's bytes."""

    checkpoint: str  # scGPT weights + args + vocab
    panel: str  # gene symbols in order + vocab ids
    data: str  # cell names in store order + per-cell expression hashes
    extraction: str  # normalization and tokenization settings

    def to_json(self) -> dict[str, str]:
        return asdict(self)

    def differences(
        self, other: StoreFingerprint, parts: tuple[str, ...] = ("checkpoint", "panel", "data", "extraction")
    ) -> list[str]:
        """Names of the parts that differ, in a fixed order."""
        mine, theirs = self.to_json(), other.to_json()
        return [p for p in parts if mine[p] != theirs[p]]
