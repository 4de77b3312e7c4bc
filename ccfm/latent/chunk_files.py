"""The bytes of the store's chunk files, written without zarr's encoder.

zarr encodes chunk by chunk through its async codec pipeline (and compares each chunk with the fill value); for
a shard's uncompressed features that costs 3-5× the write itself (bench/extract.py). The files are the ones zarr
writes for the arrays `LatentStore.create` makes, byte for byte (tests/test_store_layout.py compares them with
zarr's own), and every read still goes through zarr, which checks each chunk's checksum.

`features`, one zarr shard per shard of cells (`sharding_indexed`; inner and index codecs bytes + crc32c, index at
the end):

    [chunk 0][crc32c] [chunk 1][crc32c] ... [index (chunks, 2) uint64 (offset, nbytes)][crc32c of the index]

a chunk past the shard's rows absent (offset and nbytes 2**64 - 1), the last written chunk padded with zeros (the
fill value) to whole chunk rows. `covered`, one chunk per shard of cells: the (S, G) bools, padded with False to
whole chunk cells, through zstd.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import google_crc32c
import numpy as np
from numcodecs import Zstd

ABSENT = np.iinfo(np.uint64).max  # index entry of a chunk that is not in the shard
COVERED_ZSTD = {"level": 0, "checksum": False}  # the `covered` array's compressor (zarr's default for it)


@dataclass(frozen=True)
class WrittenFile:
    bytes: int
    sha256: str


def _crc(data: np.ndarray | bytes, crc: int = 0) -> bytes:
    return np.uint32(google_crc32c.extend(crc, data)).tobytes()  # little-endian, as zarr's crc32c codec appends it


def feature_shard_parts(rows: np.ndarray, chunk: int, chunks: int) -> list[np.ndarray | bytes]:
    """The pieces, in file order, of a `features` shard holding `rows` (n, D) float16 at its start.

    chunk: rows per chunk; chunks: chunks per shard (n ≤ chunk · chunks)."""
    rows = np.ascontiguousarray(rows, dtype="<f2")
    chunk_bytes = chunk * rows.shape[1] * 2 + 4  # with its checksum
    parts: list[np.ndarray | bytes] = []
    index = np.full((chunks, 2), ABSENT, dtype="<u8")
    for i, lo in enumerate(range(0, rows.shape[0], chunk)):
        block = rows[lo : lo + chunk]  # contiguous: whole rows of a C-ordered array
        pad = bytes((chunk - block.shape[0]) * rows.shape[1] * 2)
        parts += [block, pad, _crc(pad, google_crc32c.value(block))] if pad else [block, _crc(block)]
        index[i] = i * chunk_bytes, chunk_bytes
    raw = index.tobytes()
    return [*parts, raw, _crc(raw)]


def covered_chunk_parts(covered: np.ndarray, chunk_cells: int) -> list[bytes]:
    """The `covered` chunk of one shard of cells, covered (S, G) bool with S ≤ chunk_cells."""
    block = np.zeros((chunk_cells, covered.shape[1]), dtype=bool)
    block[: covered.shape[0]] = covered
    return [Zstd(**COVERED_ZSTD).encode(block)]


def write_file(path: Path, parts: list[np.ndarray | bytes]) -> WrittenFile:
    """Write (replacing) and fsync a file of `parts`; its size and sha256 as written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    digest, size = hashlib.sha256(), 0
    with open(path, "wb") as handle:
        for part in parts:
            handle.write(part)
            digest.update(part)
            size += memoryview(part).nbytes
        handle.flush()
        os.fsync(handle.fileno())
    return WrittenFile(size, digest.hexdigest())
