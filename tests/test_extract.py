"""Extraction, the latent store and the cache-with-fallback source, on a tiny real checkpoint."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
from clitools import tiny_extract_args, torchrun_command
from factories import REAL_GENES, tiny_gears_adata
from typer.testing import CliRunner

from ccfm.config import ExtractConfig
from ccfm.data.loading import load_dataset
from ccfm.errors import CCFMError
from ccfm.latent.source import LatentSource, normalized_features
from ccfm.latent.store import LatentStore
from ccfm.scgpt.checkpoint import load_scgpt
from cli import app
from pipeline import extract

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def workdir(tiny_workspace: Path) -> Path:
    return tiny_workspace


def _cfg(workdir: Path, out: str, **kw) -> ExtractConfig:
    base = dict(
        data=workdir / "data.h5ad",
        scgpt=workdir / "scgpt",
        out=workdir / out,
        n_genes=24,
        batch_size=8,
        norm_cells=64,
        shard_cells=16,
        device="cpu",
    )
    return ExtractConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def store_path(workdir: Path) -> Path:
    return extract.run(_cfg(workdir, "store.zarr"))


def _arrays(path: Path) -> tuple[np.ndarray, np.ndarray]:
    store = LatentStore.open(path)
    stored = store.read(np.arange(store.n_cells))
    return stored.features, stored.covered


def test_store_layout(store_path: Path) -> None:
    store = LatentStore.open(store_path)
    attrs = store.attrs
    assert store.complete and store.features.dtype == np.float16
    assert (store.n_cells, store.n_genes, store.d_model, store.n_shards) == (120, 24, 16, 8)
    labels = store.array("cell_labels")
    assert all(labels[i] <= labels[i + 1] for i in range(len(labels) - 1))  # grouped by perturbation
    assert set(attrs["groups"]) == set(labels.tolist())
    assert attrs["stand_in"]["scgpt"] is True
    running = store.running_stats.to_json()
    assert running["count"] == int(store.covered[:].sum())
    # normalized on covered positions: running mean ≈ 0 and std ≈ 1 per dimension (the sample is all cells)
    assert np.abs(np.mean(running["mean"])) < 0.05
    # only covered positions are stored, each cell's rows right after its predecessor's within a shard
    covered = store.covered[:]
    counts = covered.sum(axis=1)
    for shard in range(store.n_shards):
        start, stop = store.shard_range(shard)
        starts = store.row_start[start:stop]
        np.testing.assert_array_equal(np.diff(starts), counts[start : stop - 1])
        assert starts[0] == shard * store.features.shape[0] // store.n_shards


def test_round_trip_equals_extractor(store_path: Path, workdir: Path) -> None:
    data = load_dataset(workdir / "data.h5ad")
    store = LatentStore.open(store_path)
    source = LatentSource.open(store_path, load_scgpt(workdir / "scgpt"))
    names = store.array("obs_names")[16:32].tolist()
    rows = [int(np.flatnonzero(data.obs_names == n)[0]) for n in names]
    cols = [int(np.flatnonzero(data.gene_symbols == g)[0]) for g in source.genes]
    expression = data.expression[rows][:, cols].toarray()
    direct = normalized_features(source.extractor, source.stats, expression, names, batch_size=8)
    stored = store.read(np.arange(16, 32))
    np.testing.assert_array_equal(stored.features, direct.features)
    np.testing.assert_array_equal(stored.covered, direct.covered)

    # the fallback computes these cells in another batch composition, and still bit for bit the same
    computed = source.compute(names[:5], expression[:5])
    np.testing.assert_array_equal(computed.features, stored.features[:5])
    np.testing.assert_array_equal(computed.covered, stored.covered[:5])
    fresh = source.get(["not-cached-1", "not-cached-2"], expression[:2])
    assert fresh.n_hits == 0
    expected = source.compute(["not-cached-1", "not-cached-2"], expression[:2])
    np.testing.assert_array_equal(fresh.features, expected.features.astype(np.float32))
    cached = source.get(names[:5], expression[:5])
    assert cached.n_hits == 5
    np.testing.assert_array_equal(cached.features, stored.features[:5].astype(np.float32))


def test_extract_twice_is_byte_identical(store_path: Path, workdir: Path) -> None:
    again = extract.run(_cfg(workdir, "store_again.zarr"))
    for a, b in zip(_arrays(store_path), _arrays(again), strict=True):
        assert a.tobytes() == b.tobytes()


def test_helper_processes_and_writer_threads_write_the_same_files(
    store_path: Path, workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As on a GPU: 2 processes tokenize ahead and 3 threads write shards (here on CPU, as `ccfm extract` does
    there); every shard file and marker is the same as when this process does it all."""
    monkeypatch.setattr(extract, "cpu_helpers", lambda device: (2, 3))
    tokenized_by = workdir / "tokenized_by"  # one empty file per process that tokenized a group
    tokenized_by.mkdir()
    real = extract.GroupTokens.__getitem__

    def recorded(self: extract.GroupTokens, i: int) -> object:
        (tokenized_by / str(os.getpid())).touch()
        return real(self, i)

    monkeypatch.setattr(extract.GroupTokens, "__getitem__", recorded)
    helped = extract.run(_cfg(workdir, "store_helped.zarr"))
    helpers = {int(f.name) for f in tokenized_by.iterdir()}
    assert len(helpers) == 2 and os.getpid() not in helpers

    def files(root: Path) -> dict[str, bytes]:
        return {str(f.relative_to(root)): f.read_bytes() for f in sorted(root.rglob("*")) if f.is_file()}

    a, b = files(store_path), files(helped)
    assert a.keys() == b.keys()
    assert [name for name in a if a[name] != b[name]] == ["zarr.json"]  # the output path in the attributes


def test_source_refuses_other_checkpoint_panel_and_data(store_path: Path, workdir: Path) -> None:
    with pytest.raises(CCFMError, match="another scGPT checkpoint"):
        LatentSource.open(store_path, load_scgpt(workdir / "scgpt_other"))
    source = LatentSource.open(store_path, load_scgpt(workdir / "scgpt"))
    with pytest.raises(CCFMError, match="another gene panel"):
        source.check_panel(source.genes[::-1])
    name = source.store.array("obs_names")[0]
    with pytest.raises(CCFMError, match="different expression"):
        source.get([name], np.full((1, len(source.genes)), 3.0, dtype=np.float32))
    no_model = LatentSource.open(store_path, None)
    with pytest.raises(CCFMError, match="not in latent store .* pass --scgpt"):
        no_model.get(["unknown-cell"], np.ones((1, len(source.genes)), dtype=np.float32))


def test_resume_refuses_other_data_and_existing_store(store_path: Path, workdir: Path, tmp_path: Path) -> None:
    tiny_gears_adata(cells_per_condition=12, genes=REAL_GENES, seed=7).write_h5ad(tmp_path / "other.h5ad")
    with pytest.raises(CCFMError, match="data differ"):
        extract.run(_cfg(workdir, "store.zarr", data=tmp_path / "other.h5ad", resume=True))
    with pytest.raises(CCFMError, match="already exists; pass --resume"):
        extract.run(_cfg(workdir, "store.zarr"))


def test_a_live_writer_lock_is_respected(workdir: Path) -> None:
    lock = workdir / "locked.zarr.lock"
    lock.write_text(f'{{"pid": {os.getpid()}, "host": "{os.uname().nodename}"}}')
    try:
        result = CliRunner().invoke(
            app,
            [
                "extract",
                str(workdir / "data.h5ad"),
                "--scgpt",
                str(workdir / "scgpt"),
                "--out",
                str(workdir / "locked.zarr"),
                "--genes",
                "24",
                "--device",
                "cpu",
            ],
        )
    finally:
        lock.unlink()
    assert result.exit_code == 1
    assert "is being written by pid" in result.output and "Traceback" not in result.output
    assert not (workdir / "locked.zarr").exists()


def _extract_args(workdir: Path, out: Path) -> list[object]:
    return tiny_extract_args(workdir / "data.h5ad", workdir / "scgpt", out, 4)


@pytest.mark.slow
def test_two_ranks_take_disjoint_shards(workdir: Path, tmp_path: Path) -> None:
    reference = (
        extract.run(_cfg(workdir, "reference_4.zarr", shard_cells=4, batch_size=1))
        if not (workdir / "reference_4.zarr").exists()
        else workdir / "reference_4.zarr"
    )
    out = tmp_path / "ranks.zarr"
    cmd = torchrun_command(*_extract_args(workdir, out))
    result = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    assert "rank 1: 15 shards" in result.stderr and "rank 0: 15 shards" in result.stderr
    for a, b in zip(_arrays(reference), _arrays(out), strict=True):
        assert a.tobytes() == b.tobytes()


def test_every_cell_runs_through_the_model_once_and_the_store_is_the_two_pass_store(
    workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The normalization sample's features are reused for its cells' shards: one model pass over the data, and
    the same bytes as a store whose sample was computed again."""
    from ccfm.scgpt.extractor import FeatureExtractor
    from pipeline import extract as stage

    tokenized: list[int] = []  # cells through the model, batch by batch
    real = FeatureExtractor.encode
    monkeypatch.setattr(
        FeatureExtractor, "encode", lambda self, batch: tokenized.append(batch.lengths.size) or real(self, batch)
    )
    once = extract.run(_cfg(workdir, "once.zarr"))
    assert sum(tokenized) == LatentStore.open(once).n_cells
    monkeypatch.setattr(stage, "SAMPLE_CACHE_BYTES", 0)  # nothing kept: sampled cells are computed again
    tokenized.clear()
    twice = extract.run(_cfg(workdir, "twice.zarr"))
    assert sum(tokenized) > LatentStore.open(twice).n_cells
    for a, b in zip(_arrays(once), _arrays(twice), strict=True):
        assert np.array_equal(a, b)
