"""Training: streaming batches, the loop, checkpoints, resume and ranks, on a tiny real setup."""

from __future__ import annotations

import csv
import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from clitools import tiny_train_args, torchrun_command

from ccfm.config import ExtractConfig, TrainConfig
from ccfm.errors import CCFMError
from pipeline import extract, train
from pipeline.checkpoints import last_checkpoint, load_checkpoint
from pipeline.train_setup import prepare

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def setup_dir(tiny_workspace: Path) -> Path:
    root = tiny_workspace
    for name, ckpt in (("train_store.zarr", "scgpt"), ("train_store_other.zarr", "scgpt_other")):
        extract.run(
            ExtractConfig(
                data=root / "data.h5ad",
                scgpt=root / ckpt,
                out=root / name,
                n_genes=24,
                norm_cells=64,
                shard_cells=32,
                device="cpu",
            )
        )
    return root


def _cfg(root: Path, out: Path, **kw) -> TrainConfig:
    base = dict(
        data=root / "data.h5ad",
        cache=root / "train_store.zarr",
        out=out,
        steps=12,
        batch_size=8,
        checkpoint_every=4,
        workers=0,
        device="cpu",
        lr=1e-3,
        warmup_steps=2,
        split_seed=1,
    )
    return TrainConfig(**base).replace(preset="tiny", **kw)


def _losses(run: Path) -> dict[str, np.ndarray]:
    with open(run / "loss.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    return {k: np.array([float(r[k]) for r in rows]) for k in rows[0]}


def test_batches_hold_one_perturbation_with_latents(setup_dir: Path) -> None:
    from ccfm.data.batches import BatchStream
    from pipeline.train_setup import SourceSpec

    setup = prepare(_cfg(setup_dir, setup_dir / "unused"))
    stream = BatchStream(
        setup.cells, SourceSpec(setup_dir / "train_store.zarr", None), batch_size=8, gene_subset=10, seed=0, steps=5
    )
    batch = stream[3]
    assert batch.target.shape == (8, 10) and batch.control.shape == (8, 10) and batch.genes.shape == (10,)
    assert batch.latent.shape == (8, 10, 16) and batch.latent_covered.shape == (8, 10)
    assert (batch.pert == batch.pert[0]).all()  # one perturbation per batch
    again = stream[3]
    assert torch.equal(batch.target, again.target) and torch.equal(batch.latent, again.latent)
    assert not torch.equal(stream[4].target, batch.target)


def test_training_lowers_both_stream_losses_and_writes_the_run(setup_dir: Path, tmp_path: Path) -> None:
    run = train.run(
        _cfg(setup_dir, tmp_path / "run", steps=200, checkpoint_every=100, batch_size=16, lr=3e-3, warmup_steps=10)
    )
    losses = _losses(run)
    assert losses["step"].tolist() == list(range(1, 201))
    for stream in ("expr_mse", "latent_mse"):
        first, last = losses[stream][:25].mean(), losses[stream][-25:].mean()
        assert last < 0.9 * first, f"{stream} did not fall: {first:.3f} -> {last:.3f}"
    info = json.loads((run / "run.json").read_text())
    split = json.loads((run / "split.json").read_text())
    assert info["panel"] and info["model_config"]["latent"] == "scgpt" and split["kind"] == "additive"
    payload = load_checkpoint(last_checkpoint(run))
    assert payload["completed_steps"] == 200 and payload["cache_fingerprint"]["checkpoint"]
    assert (run / "loss.png").stat().st_size > 10_000


def test_latent_space_is_fitted_on_the_training_cells(setup_dir: Path, tmp_path: Path) -> None:
    """PCA basis orthonormal per panel gene; the prior table holds each single's mean code shift over controls."""
    from ccfm.latent.source import LatentSource
    from pipeline.run_folder import load_run

    run = train.run(_cfg(setup_dir, tmp_path / "run", steps=2, latent_pca=4))
    assert load_checkpoint(last_checkpoint(run))["latent_fit"]["pca_components"] == 4
    model = load_run(run).model
    space, setup = model.latent_space, prepare(_cfg(setup_dir, tmp_path / "unused"))
    n_panel = len(setup.genes)
    basis = space.basis[:n_panel]  # (G, D, 4)
    assert torch.allclose(basis.transpose(1, 2) @ basis, torch.eye(4).expand(n_panel, 4, 4), atol=1e-4)
    source, cells = LatentSource.open(setup_dir / "train_store.zarr", None), setup.cells
    genes = torch.arange(n_panel)

    def mean_code(rows: np.ndarray) -> torch.Tensor:  # every cell of a tiny condition is read (< 24 cells)
        z = source.get(cells.obs_names[rows].tolist(), cells.expression[rows].toarray()).features
        return space.encode(torch.from_numpy(z).mean(0, keepdim=True), genes)[0]  # (G, 4)

    single = next(lab for lab, tok in cells.tokens.items() if (tok >= 0).sum() == 1)
    token = int(cells.tokens[single][cells.tokens[single] >= 0][0])
    control = mean_code(cells.controls)
    assert torch.allclose(space.control[:n_panel], control, atol=1e-4)
    assert torch.allclose(
        space.shift[space.token_row[token], :n_panel], mean_code(cells.by_condition[single]) - control, atol=1e-4
    )


def test_no_latent_model_trains_without_latent_parameters(setup_dir: Path, tmp_path: Path) -> None:
    run = train.run(_cfg(setup_dir, tmp_path / "none", latent="none", steps=4))
    state = load_checkpoint(last_checkpoint(run))["model"]
    assert not [k for k in state if "latent" in k]
    assert np.all(_losses(run)["latent_mse"] == 0)


def test_resume_refuses_another_cache_and_an_existing_folder(setup_dir: Path, tmp_path: Path) -> None:
    run = train.run(_cfg(setup_dir, tmp_path / "run", steps=4))
    with pytest.raises(CCFMError, match="cache fingerprint differs"):
        train.run(_cfg(setup_dir, run, cache=setup_dir / "train_store_other.zarr", resume=True, steps=8))
    with pytest.raises(CCFMError, match="already exists; pass --resume"):
        train.run(_cfg(setup_dir, run, steps=8))


def _train_args(root: Path, out: Path) -> list[object]:
    return tiny_train_args(root / "data.h5ad", root / "train_store.zarr", out, 40, 5)


@pytest.mark.slow
def test_two_gloo_ranks_train_with_ddp(setup_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "ddp"
    cmd = torchrun_command(*_train_args(setup_dir, out))
    cmd[cmd.index("--steps") + 1] = "6"
    result = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    payload = load_checkpoint(last_checkpoint(out))
    assert payload["completed_steps"] == 6
    assert all(torch.isfinite(v).all() for v in payload["model"].values() if v.dtype.is_floating_point)
    assert _losses(out)["step"].tolist() == list(range(1, 7))


def test_cpu_threads_leave_a_core_to_each_busy_loader_and_share_cores_between_ranks(monkeypatch) -> None:
    from pipeline.runtime import share_cpu_cores

    before = torch.get_num_threads()
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(8)), raising=False)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    try:
        torch.set_num_threads(8)
        assert share_cpu_cores(torch.device("cpu"), busy_helpers=2) == 6
        monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
        torch.set_num_threads(8)
        assert share_cpu_cores(torch.device("cpu"), busy_helpers=0) == 2
        assert share_cpu_cores(torch.device("cpu"), busy_helpers=5) == 1  # at least one
        torch.set_num_threads(1)
        monkeypatch.delenv("LOCAL_WORLD_SIZE")
        assert share_cpu_cores(torch.device("cpu")) == 1  # never raised above what was set
    finally:
        torch.set_num_threads(before)
