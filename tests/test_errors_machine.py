"""The bad-input catalog (docs/errors.md) for outputs and the machine, through the real CLI: outputs that exist,
outputs that cannot be written, Ctrl-C, devices, writer locks and torchrun ranks. Exit code 1 (130 for Ctrl-C),
one `error:` line, no traceback, nothing half-written. Test names follow the catalog's rows."""

from __future__ import annotations

import errno
import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import anndata as ad
import pytest
import torch
from clitools import ccfm_command, ok, refused, tiny_extract_args, tiny_train_args, torchrun_command


@pytest.fixture(scope="module")
def env(cli_env: dict[str, Path]) -> dict[str, Path]:
    return cli_env


# --- outputs and the machine -----------------------------------------------------------------------------------


def test_output_path_exists(env: dict, tmp_path: Path) -> None:
    existing = tmp_path / "exists.h5ad"
    existing.write_text("keep me")
    refused("simulate", "combosciplex", "--out", existing, "--scale", "0.002", match="already exists")
    refused(
        "extract",
        env["data"],
        "--scgpt",
        env["scgpt"],
        "--out",
        env["store"],
        "--device",
        "cpu",
        match="already exists",
    )
    refused(
        "train", env["store"], "--data", env["data"], "--out", env["run"], "--device", "cpu", match="already exists"
    )
    refused("generate", env["run"], "--out", existing, "--device", "cpu", match="already exists")
    refused("toy-scgpt", "--out", env["scgpt"], match="already exists")
    assert existing.read_text() == "keep me"


def test_generate_out_is_checked_before_sampling(env: dict, tmp_path: Path) -> None:
    error = refused("generate", env["run"], "--out", tmp_path, "--device", "cpu", match="is a folder; name the")
    assert ".tmp" not in error


def test_ctrl_c_during_training_says_how_to_resume(env: dict, tmp_path: Path) -> None:
    run = tmp_path / "run"
    args = tiny_train_args(env["data"], env["store"], run, steps=100_000, checkpoint_every=1)
    proc = subprocess.Popen(ccfm_command(*args), stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not list(run.glob("checkpoints/*.pt")) and time.monotonic() < deadline:
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert stderr.strip().splitlines()[-1] == (
        "error: interrupted; continue from the last checkpoint with the same command plus --resume"
    )
    assert "Traceback" not in stderr


def test_unwritable_output_folder(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    refused(
        "simulate",
        "combosciplex",
        "--out",
        blocker / "out.h5ad",
        "--scale",
        "0.002",
        match="check that the output location is writable",
    )


def test_disk_full_while_writing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def full_disk(self: ad.AnnData, path: Path, *args: object, **kwargs: object) -> None:
        Path(path).write_bytes(b"half a file")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr(ad.AnnData, "write_h5ad", full_disk)
    refused(
        "simulate", "combosciplex", "--out", tmp_path / "out.h5ad", "--scale", "0.002", match="No space left on device"
    )
    assert list(tmp_path.iterdir()) == []  # neither the output nor a temporary file remains


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_device_cuda_without_a_gpu(env: dict, tmp_path: Path) -> None:
    refused(
        "extract",
        env["data"],
        "--scgpt",
        env["scgpt"],
        "--out",
        tmp_path / "s.zarr",
        "--device",
        "cuda",
        match="no CUDA GPU is visible",
    )
    assert not (tmp_path / "s.zarr").exists()


def test_writer_lock_of_a_live_dead_and_foreign_holder(env: dict, tmp_path: Path) -> None:
    out = tmp_path / "locked.zarr"
    lock = tmp_path / "locked.zarr.lock"
    args = tiny_extract_args(env["data"], env["scgpt"], out, 32, batch_size=32)  # extract's default batch
    lock.write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname()}))
    refused(*args, match="is being written by pid")
    lock.write_text(json.dumps({"pid": 2**22 + 12345, "host": "another-node"}))
    refused(*args, match="--break-lock")
    assert not out.exists()
    lock.write_text(json.dumps({"pid": 2**22 + 12345, "host": socket.gethostname()}))  # dead, this host: stale
    ok(*args)
    assert not lock.exists() and out.exists()


@pytest.mark.slow
def test_a_refusal_on_rank_0_stops_every_rank(env: dict) -> None:
    """Under torchrun a user's mistake met by rank 0 must end the job, not leave rank 1 waiting in a barrier."""
    import subprocess

    cmd = torchrun_command(
        "extract", env["data"], "--scgpt", env["scgpt"], "--out", env["store"], "--genes", "24", "--device", "cpu"
    )
    result = subprocess.run(
        cmd, capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"}
    )
    assert result.returncode != 0
    assert result.stderr.count("already exists; pass --resume") == 2  # both ranks say why, then stop
