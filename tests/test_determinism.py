"""The same command twice on CPU gives the same outputs, and every artifact records how it was made.

Each stage runs twice in process (`pipeline.<stage>.run`, what the CLI calls) on the tiny workspace with
non-default seeds, so an artifact that recorded a default instead of the seed it was given is caught.
"""

from __future__ import annotations

import csv
import json
import platform
import sys
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import torch

from ccfm.config import ExtractConfig, GenerateConfig, ModelKnobs, SamplerConfig, TrainConfig
from ccfm.latent.store import LatentStore
from pipeline import extract, generate, train
from pipeline.checkpoints import last_checkpoint, load_checkpoint

EXTRACT_SEED, TRAIN_SEED, GENERATE_SEED = 3, 5, 7
VERSIONED = {"python", "platform", "host", "ccfm", "torch", "scgpt", "zarr", "numpy", "anndata"}


def _assert_provenance(record: dict, seed: int) -> None:
    """The command line of the process that made the artifact, its device, seed and versions."""
    assert record["command"] == " ".join(sys.argv)
    assert record["device"] == "cpu"
    assert record["seed"] == seed
    assert VERSIONED <= set(record["versions"])
    assert record["versions"]["python"] == platform.python_version()
    assert record["versions"]["torch"] == torch.__version__


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("determinism")


# --- extract ---------------------------------------------------------------------------------------------


def _extract(ws: Path, out: Path) -> Path:
    return extract.run(
        ExtractConfig(
            data=ws / "data.h5ad",
            scgpt=ws / "scgpt",
            out=out,
            n_genes=24,
            batch_size=8,
            norm_cells=64,
            shard_cells=32,
            device="cpu",
            seed=EXTRACT_SEED,
        )
    )


@pytest.fixture(scope="module")
def stores(tiny_workspace: Path, root: Path) -> tuple[Path, Path]:
    return _extract(tiny_workspace, root / "a.zarr"), _extract(tiny_workspace, root / "b.zarr")


def _files(store: Path) -> dict[str, bytes]:
    return {str(p.relative_to(store)): p.read_bytes() for p in sorted(store.rglob("*")) if p.is_file()}


def test_extract_twice_writes_the_same_files(stores: tuple[Path, Path]) -> None:
    """Every file on disk (shard files, progress markers, completion record, array metadata) is byte-identical;
    the group attributes differ only in the output path. (test_extract compares the decoded arrays.)"""
    a, b = map(_files, stores)
    assert a.keys() == b.keys() and "progress/complete.json" in a
    assert sum(name.startswith("features/c/") for name in a) == LatentStore.open(stores[0]).n_shards
    differ = [name for name in a if a[name] != b[name]]
    assert differ == ["zarr.json"]
    attrs_a, attrs_b = (json.loads(files["zarr.json"])["attributes"] for files in (a, b))
    assert attrs_a["config"].pop("out") != attrs_b["config"].pop("out")
    assert attrs_a == attrs_b


def test_store_records_provenance(stores: tuple[Path, Path]) -> None:
    _assert_provenance(LatentStore.open(stores[0]).attrs["provenance"], EXTRACT_SEED)


# --- train -----------------------------------------------------------------------------------------------


def _train(ws: Path, store: Path, out: Path) -> Path:
    return train.run(
        TrainConfig(
            data=ws / "data.h5ad",
            cache=store,
            out=out,
            model=ModelKnobs(preset="tiny"),
            steps=6,
            batch_size=8,
            checkpoint_every=3,
            workers=0,
            device="cpu",
            lr=1e-3,
            warmup_steps=2,
            split_seed=1,
            seed=TRAIN_SEED,
        )
    )


@pytest.fixture(scope="module")
def runs(tiny_workspace: Path, stores: tuple[Path, Path], root: Path) -> tuple[Path, Path]:
    return _train(tiny_workspace, stores[0], root / "run_a"), _train(tiny_workspace, stores[0], root / "run_b")


def _loss_table(run: Path) -> list[dict[str, str]]:
    """loss.csv as written, without `data_wait_s` (wall-clock seconds spent waiting for data)."""
    with open(run / "loss.csv", newline="") as handle:
        return [{k: v for k, v in row.items() if k != "data_wait_s"} for row in csv.DictReader(handle)]


def test_train_twice_gives_the_same_weights_and_losses(runs: tuple[Path, Path]) -> None:
    a, b = (load_checkpoint(last_checkpoint(run)) for run in runs)
    assert a["completed_steps"] == b["completed_steps"] == 6
    for part in ("model", "ema"):
        assert a[part].keys() == b[part].keys()
        differ = [k for k in a[part] if not torch.equal(a[part][k], b[part][k])]
        assert not differ, f"{part}: {len(differ)} tensors differ, e.g. {differ[:3]}"
    losses = _loss_table(runs[0])
    assert [row["step"] for row in losses] == [str(s) for s in range(1, 7)]
    assert losses == _loss_table(runs[1])
    assert (runs[0] / "split.json").read_bytes() == (runs[1] / "split.json").read_bytes()


def test_run_records_provenance(runs: tuple[Path, Path]) -> None:
    info = json.loads((runs[0] / "run.json").read_text())
    _assert_provenance(info["provenance"], TRAIN_SEED)
    _assert_provenance(load_checkpoint(last_checkpoint(runs[0]))["provenance"], TRAIN_SEED)


# --- generate --------------------------------------------------------------------------------------------


def _generate(run: Path, out: Path) -> ad.AnnData:
    cfg = GenerateConfig(run=run, cells="3", sampler=SamplerConfig(steps=2), device="cpu", seed=GENERATE_SEED, out=out)
    return ad.read_h5ad(generate.run(cfg))


@pytest.fixture(scope="module")
def predictions(runs: tuple[Path, Path], root: Path) -> tuple[ad.AnnData, ad.AnnData]:
    return _generate(runs[0], root / "pred_a.h5ad"), _generate(runs[0], root / "pred_b.h5ad")


def test_generate_twice_gives_the_same_cells(predictions: tuple[ad.AnnData, ad.AnnData]) -> None:
    a, b = predictions
    assert a.n_obs > 3 and np.asarray(a.X).std() > 0  # predicted cells plus the control cells, not all equal
    assert np.asarray(a.X).tobytes() == np.asarray(b.X).tobytes()
    pd.testing.assert_frame_equal(a.obs, b.obs)
    assert a.var_names.equals(b.var_names)


def test_predictions_record_provenance(predictions: tuple[ad.AnnData, ad.AnnData]) -> None:
    _assert_provenance(predictions[0].uns["ccfm"], GENERATE_SEED)
