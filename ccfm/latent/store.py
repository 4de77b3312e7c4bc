"""The latent cache: per-gene scGPT features as a sharded fp16 zarr v3 group (format in cache/README.md).

Only covered (cell, gene) positions are stored: `features` is (rows, D), one row per covered position,
cells one after another; `row_start` says where each cell's rows begin and `covered` which genes they
are, so the (G, D) zeros of uncovered genes are neither written nor read. Cells are laid out grouped
by perturbation so a training batch reads one contiguous region. Each shard of `shard_cells` cells
owns one zarr shard of `features` (and one chunk of `covered`), is written whole (chunk_files.py encodes
the bytes zarr would write), made durable, and only then marked complete by a small JSON file under
`progress/` that also carries the shard's running moments; resuming redoes exactly the shards without
a marker.
"""

from __future__ import annotations

import json
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
import zarr
from zarr.codecs import Crc32cCodec, ZstdCodec

from ccfm.atomic import fsync_tree, write_json_atomic
from ccfm.errors import CCFMError
from ccfm.latent.chunk_files import COVERED_ZSTD, covered_chunk_parts, feature_shard_parts, write_file
from ccfm.latent.fingerprint import file_sha256
from ccfm.latent.record import StoreRecord
from ccfm.latent.statistics import RunningMoments
from ccfm.scgpt.tokens import packed_index

FORMAT_VERSION = 2
CHUNK_BYTES = 1 << 18  # features are read in chunks of this many bytes (CHUNK_BYTES // (2 D) rows); a shard's
# last chunk is written whole, so a shard of fewer rows wastes up to this much
# Features are stored uncompressed (with a checksum per chunk): with the uncovered zeros gone, zstd saves ~8 %
# on fp16 features and costs more than the rest of the write.


@dataclass(frozen=True)
class StoreLayout:
    """Everything fixed when a store is created; rows are in store order."""

    obs_names: np.ndarray  # (N,) cell names
    cell_labels: np.ndarray  # (N,) canonical perturbation labels, grouped
    cell_hashes: np.ndarray  # (N,) uint64 hash of each cell's panel expression
    genes: np.ndarray  # (G,) panel gene symbols
    vocab_ids: np.ndarray  # (G,) scGPT vocab id per gene, -1 when absent
    covered_counts: np.ndarray  # (N,) covered genes per cell (expressed and in the vocabulary)
    d_model: int  # D, scGPT width
    shard_cells: int  # cells per shard


@dataclass(frozen=True)
class ShardRows:
    """What `ShardWriter` writes for one shard of S cells."""

    rows: np.ndarray  # (n_covered, D) float16 normalized features, in the row-major order of covered
    covered: np.ndarray  # (S, G) bool
    moments: RunningMoments  # of rows, as written


@dataclass(frozen=True)
class StoredRows:
    features: np.ndarray  # (B, G, D) float16, normalized
    covered: np.ndarray  # (B, G) bool


def _groups(labels: np.ndarray) -> dict[str, list[int]]:
    """{label: [start, stop)} for grouped labels."""
    groups: dict[str, list[int]] = {}
    for i, lab in enumerate(labels.tolist()):
        if lab in groups:
            groups[lab][1] = i + 1
        else:
            groups[lab] = [i, i + 1]
    return groups


def chunk_rows(d_model: int) -> int:
    return max(1, CHUNK_BYTES // (2 * d_model))


def packed_rows(counts: np.ndarray, shard_cells: int, d_model: int) -> tuple[np.ndarray, int]:
    """(row_start (N,) int64, rows per shard): each shard of cells owns `rows per shard` rows of `features`
    (its most covered shard's rows, rounded up to whole chunks); a cell's rows follow its predecessor's."""
    counts = np.asarray(counts, dtype=np.int64)
    shard = np.arange(counts.size) // shard_cells
    per_shard = np.bincount(shard, weights=counts, minlength=int(shard.max(initial=0)) + 1).astype(np.int64)
    chunk = chunk_rows(d_model)
    rows = max(chunk, -(-int(per_shard.max(initial=0)) // chunk) * chunk)
    before = np.cumsum(counts) - counts  # covered rows of all earlier cells
    return shard * rows + before - before[shard * shard_cells], rows


def _rebuild_command(path: Path) -> str:
    """The `ccfm extract` line that rebuilds a store, from what its attributes recorded (when readable)."""
    try:
        record = StoreRecord.from_attrs(json.loads((path / "zarr.json").read_text())["attributes"])
        data, scgpt = record.data, record.scgpt
    except (OSError, ValueError, KeyError, TypeError, CCFMError):
        data, scgpt = "DATA.h5ad", "SCGPT_DIR"
    return f"`ccfm extract {data} --scgpt {scgpt} --out {path} --overwrite` (with the options it was built with)"


class LatentStore:
    """A latent cache on disk. Open with `create` or `open`; reads never load the whole store."""

    def __init__(self, path: Path, root: zarr.Group) -> None:
        self.path = Path(path)
        self.root = root
        self.features = root["features"]  # (rows, D) float16: the covered positions only
        self.covered = root["covered"]  # (N, G) bool
        self.shard_cells = int(root.attrs["shard_cells"])
        self.row_start = root["row_start"][:]  # (N,) int64: each cell's first row in `features`
        self._row_of: dict[str, int] | None = None

    # ---- creation and opening -------------------------------------------------------------
    @classmethod
    def create(cls, path: Path, layout: StoreLayout, attrs: dict[str, Any]) -> LatentStore:
        path = Path(path)
        n, g, d, s = len(layout.obs_names), len(layout.genes), layout.d_model, layout.shard_cells
        row_start, shard_rows = packed_rows(layout.covered_counts, s, d)
        root = zarr.open_group(path, mode="w", zarr_format=3)
        root.create_array(
            "features",
            shape=(shard_rows * -(-n // s), d),
            chunks=(chunk_rows(d), d),
            shards=(shard_rows, d),
            dtype="float16",
            compressors=Crc32cCodec(),  # a checksum per chunk: a damaged shard fails to read instead of reading
            fill_value=0,
        )
        root.create_array(
            "covered", shape=(n, g), chunks=(s, g), dtype=bool, fill_value=False, compressors=ZstdCodec(**COVERED_ZSTD)
        )
        for name, values, dtype in (
            ("row_start", row_start, "int64"),
            ("obs_names", layout.obs_names, str),
            ("cell_labels", layout.cell_labels, str),
            ("genes", layout.genes, str),
            ("cell_hashes", layout.cell_hashes, "uint64"),
            ("vocab_ids", layout.vocab_ids, "int64"),
        ):
            arr = root.create_array(name, shape=(len(values),), chunks=(max(1, len(values)),), dtype=dtype)
            arr[:] = np.asarray(values).astype(dtype)
        root.attrs.update(
            {
                **attrs,
                "format_version": FORMAT_VERSION,
                "shard_cells": s,
                "groups": _groups(layout.cell_labels),
            }
        )
        (path / "progress").mkdir(exist_ok=True)
        fsync_tree(path)
        return cls(path, root)

    @classmethod
    def open(cls, path: Path, mode: str = "r") -> LatentStore:
        path = Path(path)
        if not (path / "zarr.json").is_file():
            raise CCFMError(f"{path} is not a CCFM latent store (no zarr.json); build one with `ccfm extract`")
        try:
            root = zarr.open_group(path, mode=mode, zarr_format=3)
            version = root.attrs.get("format_version")
            store = cls(path, root)
        except CCFMError:
            raise
        except Exception as err:
            raise CCFMError(
                f"cannot open latent store {path} ({type(err).__name__}: {err}); rebuild it: {_rebuild_command(path)}"
            ) from err
        if version != FORMAT_VERSION:
            raise CCFMError(
                f"latent store {path} has format version {version}, this CCFM reads {FORMAT_VERSION} (only the "
                f"covered positions, cache/README.md); rebuild it: {_rebuild_command(path)}"
            )
        return store

    # ---- shape and metadata ---------------------------------------------------------------
    @property
    def attrs(self) -> dict[str, Any]:
        return dict(self.root.attrs)

    @property
    def record(self) -> StoreRecord:
        """The attributes, typed: what the store was built from and with."""
        return StoreRecord.from_attrs(self.attrs, self.path)

    @property
    def n_cells(self) -> int:
        return int(self.covered.shape[0])

    @property
    def n_genes(self) -> int:
        return int(self.covered.shape[1])

    @property
    def d_model(self) -> int:
        return int(self.features.shape[1])

    @property
    def n_shards(self) -> int:
        return -(-self.n_cells // self.shard_cells)

    def shard_range(self, shard: int) -> tuple[int, int]:
        start = shard * self.shard_cells
        return start, min(start + self.shard_cells, self.n_cells)

    def array(self, name: str) -> np.ndarray:
        values = self.root[name][:]
        return values.astype(object) if values.dtype.kind in "OTU" else values

    def row_of(self, names: list[str]) -> np.ndarray:
        """Store row of each cell name, -1 when the cell is not in the store."""
        if self._row_of is None:
            self._row_of = {n: i for i, n in enumerate(self.array("obs_names").tolist())}
        return np.array([self._row_of.get(n, -1) for n in names], dtype=np.int64)

    # ---- progress -------------------------------------------------------------------------
    def _marker(self, shard: int) -> Path:
        return self.path / "progress" / f"shard-{shard:06d}.json"

    def completed_shards(self) -> set[int]:
        done = set()
        for marker in (self.path / "progress").glob("shard-*.json"):
            done.add(int(marker.stem.split("-")[1]))
        return done

    def shard_moments(self, shard: int) -> RunningMoments:
        return RunningMoments.from_json(json.loads(self._marker(shard).read_text())["moments"])

    def _shard_files(self, shard: int) -> list[Path]:
        """The shard's (features, covered) files under zarr's default chunk keys (chunk_files.py writes them)."""
        return [self.path / "features" / "c" / str(shard) / "0", self.path / "covered" / "c" / str(shard) / "0"]

    def damaged_shards(self, deep: bool) -> list[int]:
        """Completed shards whose files are missing, resized or (deep) changed since they were marked."""
        bad = []
        for shard in sorted(self.completed_shards()):
            for rel, record in json.loads(self._marker(shard).read_text())["files"].items():
                file = self.path / rel
                if (
                    not file.is_file()
                    or file.stat().st_size != record["bytes"]
                    or (deep and file_sha256(file) != record["sha256"])
                ):
                    bad.append(shard)
                    break
        return bad

    def forget_shard(self, shard: int) -> None:
        """Drop a shard's completion marker (and the store's) so that a resumed extraction redoes it."""
        (self.path / "progress" / "complete.json").unlink(missing_ok=True)
        self._marker(shard).unlink(missing_ok=True)

    def write_shard(self, shard: int, rows: np.ndarray, covered: np.ndarray, moments: RunningMoments) -> None:
        """Write one whole shard, make it durable, then mark it complete.

        rows: (n_covered, D) float16 normalized features of the shard's covered positions, in the row-major
        order of covered: (S, G) bool.
        """
        start, stop = self.shard_range(shard)
        counts = covered.sum(axis=1)
        first, shard_rows = int(self.row_start[start]), self.features.shards[0]
        expected = self.row_start[start:stop] - first
        if (
            covered.shape != (stop - start, self.n_genes)
            or not np.array_equal(np.cumsum(counts) - counts, expected)
            or rows.shape != (int(counts.sum()), self.d_model)
            or first != shard * shard_rows
            or rows.shape[0] > shard_rows  # never into the next shard's rows
            or rows.dtype != np.float16
        ):
            raise ValueError(f"shard {shard}: rows or coverage disagree with the store's layout")
        features_file, covered_file = self._shard_files(shard)
        for stale in (features_file, covered_file):  # a whole rewrite: never merge into (maybe damaged) old bytes
            stale.unlink(missing_ok=True)
        written = {covered_file: write_file(covered_file, covered_chunk_parts(covered, self.shard_cells))}
        if rows.size:  # a shard with nothing covered has no features file, as zarr leaves an all-fill shard
            chunk = self.features.chunks[0]
            written[features_file] = write_file(features_file, feature_shard_parts(rows, chunk, shard_rows // chunk))
        files = {str(f.relative_to(self.path)): {"bytes": w.bytes, "sha256": w.sha256} for f, w in written.items()}
        write_json_atomic(self._marker(shard), {"moments": moments.to_json(), "files": files})

    def finalize(self, moments: RunningMoments) -> None:
        """Mark the store complete (write-then-rename), with the running moments over everything written."""
        write_json_atomic(self.path / "progress" / "complete.json", {"running_stats": moments.to_json()})

    @property
    def complete(self) -> bool:
        return (self.path / "progress" / "complete.json").is_file()

    @property
    def running_stats(self) -> RunningMoments:
        return RunningMoments.from_json(
            json.loads((self.path / "progress" / "complete.json").read_text())["running_stats"]
        )

    # ---- reading --------------------------------------------------------------------------
    def read(self, rows: np.ndarray) -> StoredRows:
        """Features (B, G, D), exactly 0 where not covered, and coverage of store rows (B,), in the order given."""
        rows = np.asarray(rows, dtype=np.int64)
        features = np.zeros((rows.size, self.n_genes, self.d_model), dtype=np.float16)  # (B, G, D)
        if rows.size == 0:
            return StoredRows(features, np.zeros((0, self.n_genes), bool))
        try:  # zarr reads each chunk once, whatever the order of the indices
            covered = np.asarray(self.covered.oindex[rows], dtype=bool)  # (B, G)
            counts = covered.sum(axis=1)  # (B,)
            index = packed_index(self.row_start[rows], counts)
            packed = self.features.oindex[index] if index.size else np.zeros((0, self.d_model), np.float16)
        except Exception as err:  # a damaged shard fails inside zarr's codecs with many error types
            shards = sorted({int(r) // self.shard_cells for r in rows})
            raise CCFMError(
                f"cannot read latent store {self.path} (shards {shards}: {type(err).__name__}); it is damaged — "
                "`ccfm extract ... --resume` verifies every shard and rebuilds the damaged ones"
            ) from err
        features[covered] = packed
        return StoredRows(features, covered)


class ShardWriter:
    """Writes shards in background threads, so that the next shards are computed while earlier ones are written
    and fsynced (numpy, file I/O, checksums and fsync release the GIL). With `threads` k, at most k shards are
    being written at once: `submit` first finishes the oldest; 0 writes each shard inside `submit`. Errors
    surface at a later `submit` or at `wait`; each shard's marker is still written only after its own data, so a
    crash leaves exactly the finished shards marked.

        with ShardWriter(store, threads=1) as writer:
            for shard in shards:
                writer.submit(shard, shard_rows)  # returns the cells of the shards finished meanwhile
    """

    def __init__(self, store: LatentStore, threads: int = 1) -> None:
        self.store = store
        self.threads = threads
        self._pool = ThreadPoolExecutor(max_workers=max(1, threads), thread_name_prefix="ccfm-shard-writer")
        self._pending: deque[Future[tuple[int, float]]] = deque()
        self.seconds = 0.0  # time spent writing, summed over the writing threads

    def _write(self, shard: int, data: ShardRows) -> tuple[int, float]:
        started = time.perf_counter()
        self.store.write_shard(shard, data.rows, data.covered, data.moments)
        return data.covered.shape[0], time.perf_counter() - started

    def _finish_oldest(self) -> int:
        cells, seconds = self._pending.popleft().result()
        self.seconds += seconds
        return cells

    def wait(self) -> int:
        """Finish every shard being written; the number of their cells."""
        done = 0
        while self._pending:
            done += self._finish_oldest()
        return done

    def submit(self, shard: int, data: ShardRows) -> int:
        """Write a shard; the cells of the shards finished to make room for it (or, with threads 0, of this one)."""
        done = 0
        while len(self._pending) >= max(1, self.threads):
            done += self._finish_oldest()
        self._pending.append(self._pool.submit(self._write, shard, data))
        return done + (self.wait() if self.threads == 0 else 0)

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, kind: type | None, error: BaseException | None, trace: TracebackType | None) -> None:
        try:
            if kind is None:
                self.wait()
        finally:
            self._pool.shutdown(wait=True)  # on an error, the shards being written still finish (or fail) whole
