"""SIGKILL at seeded points, then resume: extraction and training end exactly where an uninterrupted run ends.

Each killed process is the real CLI (`python -m cli ...`) started as a subprocess and killed with SIGKILL, which
no handler can intercept. The uninterrupted references are built once per module, in process. Resumes run in
process (the same `run(cfg)` the CLI calls, without ~7 s of imports) except for one case per stage that goes
through the CLI's `--resume`.
"""

from __future__ import annotations

import csv
import json
import logging
import random
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from clitools import ccfm_command, tiny_extract_args, tiny_train_args

from ccfm.config import ExtractConfig, TrainConfig
from ccfm.latent.store import LatentStore
from pipeline import extract, train
from pipeline.checkpoints import last_checkpoint, load_checkpoint

REPO = Path(__file__).resolve().parents[1]
SEEDS = (0, 1, 5)  # each draws one kill point per stage; these three spread over early, middle and late
KILL_TIMEOUT_S = 120.0  # a child that reaches no kill point within this is a failure, not a hang
POLL_S = 0.002  # shards take ~25 ms and the staging folder lives ~30 ms: polls must be finer than both


def _kill_when(cmd: list[str], landed: Callable[[], bool], log: Path) -> None:
    """Start `cmd` and SIGKILL it as soon as `landed()` holds; fail if it ends or stalls first."""
    with open(log, "w") as stderr:
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=stderr)
    deadline = time.monotonic() + KILL_TIMEOUT_S
    try:
        while not landed():
            if proc.poll() is not None:
                pytest.fail(
                    f"{cmd[3]} ended (exit {proc.returncode}) before its kill point:\n{log.read_text()[-2000:]}"
                )
            if time.monotonic() > deadline:
                pytest.fail(f"{cmd[3]} reached no kill point within {KILL_TIMEOUT_S} s:\n{log.read_text()[-2000:]}")
            time.sleep(POLL_S)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()


def _cli(cmd: list[str]) -> subprocess.CompletedProcess:
    result = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


# --- extraction ------------------------------------------------------------------------------------------

SHARD_CELLS = 4  # 120 cells in tiny_workspace -> 30 shards, a few seconds of work after start-up
N_SHARDS = 30


def _extract_cfg(ws: Path, out: Path, **kw: object) -> ExtractConfig:
    """The settings of `_extract_cmd`, as the CLI builds them."""
    base = dict(
        data=ws / "data.h5ad",
        scgpt=ws / "scgpt",
        out=out,
        n_genes=24,
        batch_size=1,
        norm_cells=64,
        shard_cells=SHARD_CELLS,
        device="cpu",
    )
    return ExtractConfig(**{**base, **kw})


def _extract_cmd(ws: Path, out: Path, *extra: str) -> list[str]:
    return ccfm_command(*tiny_extract_args(ws / "data.h5ad", ws / "scgpt", out, SHARD_CELLS), *extra)


def _markers(store: Path) -> int:
    return len(list((store / "progress").glob("shard-*.json")))


def _store_bytes(path: Path) -> dict[str, bytes]:
    """Decoded arrays and the completion record (merged running moments) of a store."""
    store = LatentStore.open(path)
    return {
        "features": store.features[:].tobytes(),
        "covered": store.covered[:].tobytes(),
        "complete": (path / "progress" / "complete.json").read_bytes(),
    }


@pytest.fixture(scope="module")
def extract_world(tiny_workspace: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, bytes]]:
    """A folder for killed stores, and the bytes of one uninterrupted store with the same settings."""
    root = tmp_path_factory.mktemp("crash_extract")
    reference = extract.run(_extract_cfg(tiny_workspace, root / "reference.zarr"))
    assert LatentStore.open(reference).n_shards == N_SHARDS
    return root, _store_bytes(reference)


@pytest.mark.slow
@pytest.mark.parametrize("seed", SEEDS)
def test_extract_killed_mid_way_resumes_to_the_same_bytes(
    seed: int,
    extract_world: tuple[Path, dict[str, bytes]],
    tiny_workspace: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    root, reference = extract_world
    wait_for = random.Random(seed).randint(1, N_SHARDS - 2)  # completed shards to wait for before the kill
    out = root / f"killed-{seed}.zarr"
    _kill_when(_extract_cmd(tiny_workspace, out), lambda: _markers(out) >= wait_for, root / f"killed-{seed}.log")

    done = _markers(out)
    assert wait_for <= done < N_SHARDS, f"kill did not land mid-way ({done} of {N_SHARDS} shards complete)"
    assert not LatentStore.open(out).complete
    assert out.with_name(out.name + ".lock").is_file()  # the dead writer's lock, to be taken over

    caplog.set_level(logging.INFO, logger="pipeline.extract")
    extract.run(_extract_cfg(tiny_workspace, out, resume=True))
    assert f"{N_SHARDS - done} shards to extract ({done} already complete)" in caplog.text
    assert LatentStore.open(out).complete
    assert _store_bytes(out) == reference
    assert not out.with_name(out.name + ".lock").exists()


@pytest.mark.slow
@pytest.mark.parametrize("point", ["lock", "staging"])
def test_extract_killed_while_creating_the_store_reruns_cleanly(
    point: str, extract_world: tuple[Path, dict[str, bytes]], tiny_workspace: Path
) -> None:
    """Killed once the lock is taken (normalization sample, before any folder) or while the store is laid out
    in `<out>.creating`: nothing is at `out`, and a rerun (plain, or with --resume through the CLI) discards
    the staging folder, takes over the dead writer's lock and writes the reference bytes."""
    root, reference = extract_world
    out = root / f"creating-{point}.zarr"
    staging, lock = out.with_name(out.name + ".creating"), out.with_name(out.name + ".lock")

    def landed() -> bool:
        if point == "lock":
            return lock.is_file() and lock.stat().st_size > 0  # once written: an empty lock is refused as live
        return staging.exists() or out.exists()  # `out` already there: the poll missed the staging folder

    for _attempt in range(3):  # the staging folder lives ~30 ms; a poll that misses it starts over
        shutil.rmtree(out, ignore_errors=True)
        shutil.rmtree(staging, ignore_errors=True)
        lock.unlink(missing_ok=True)
        _kill_when(_extract_cmd(tiny_workspace, out), landed, root / f"creating-{point}.log")
        if not out.exists():
            break
    assert not out.exists(), f"the kill did not land before the store was renamed into place ({point})"
    assert lock.is_file()
    assert staging.exists() == (point == "staging")

    if point == "staging":
        result = _cli(_extract_cmd(tiny_workspace, out, "--resume"))
        assert f"{N_SHARDS} shards to extract (0 already complete)" in result.stderr
    else:
        extract.run(_extract_cfg(tiny_workspace, out))
    assert not staging.exists() and not lock.exists()
    assert _store_bytes(out) == reference


# --- training --------------------------------------------------------------------------------------------

STEPS = 40
CHECKPOINT_EVERY = 5


def _train_cfg(root: Path, ws: Path, out: Path, **kw: object) -> TrainConfig:
    """The settings of `_train_cmd`, as the CLI builds them."""
    base = dict(
        data=ws / "data.h5ad",
        cache=root / "store.zarr",
        out=out,
        steps=STEPS,
        batch_size=8,
        checkpoint_every=CHECKPOINT_EVERY,
        workers=1,
        device="cpu",
        lr=1e-3,
        split_seed=1,
    )
    return TrainConfig(**base).replace(preset="tiny", **kw)


def _train_cmd(root: Path, ws: Path, out: Path, *extra: str) -> list[str]:
    args = tiny_train_args(ws / "data.h5ad", root / "store.zarr", out, STEPS, CHECKPOINT_EVERY)
    return ccfm_command(*args, *extra)


def _last_step(run: Path) -> int:
    pointer = run / "checkpoints" / "last.json"
    return int(json.loads(pointer.read_text())["step"]) if pointer.is_file() else 0


def _weights(run: Path) -> dict[str, torch.Tensor]:
    payload = load_checkpoint(last_checkpoint(run))
    assert payload["completed_steps"] == STEPS
    return {
        **{f"model.{k}": v for k, v in payload["model"].items()},
        **{f"ema.{k}": v for k, v in payload["ema"].items()},
    }


def _assert_same_weights(run: Path, reference: dict[str, torch.Tensor]) -> None:
    weights = _weights(run)
    assert weights.keys() == reference.keys()
    differ = [k for k in reference if not torch.equal(reference[k], weights[k])]
    assert not differ, f"{len(differ)} tensors differ from the uninterrupted run, e.g. {differ[:3]}"


def _loss_rows(run: Path) -> dict[int, dict[str, float]]:
    """loss.csv by step, without the wall-clock column; steps must be written as integers, also after a resume."""
    with open(run / "loss.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    return {int(r["step"]): {k: float(v) for k, v in r.items() if k != "data_wait_s"} for r in rows}


def _rewind(reference: Path, out: Path, step: int) -> Path:
    """A copy of the reference run as a kill right after checkpoint `step` leaves it (later files gone)."""
    shutil.copytree(reference, out)
    for ckpt in (out / "checkpoints").glob("step-*.pt"):
        if int(ckpt.stem.split("-")[1]) > step:
            ckpt.unlink()
    (out / "checkpoints" / "last.json").write_text(json.dumps({"step": step, "file": f"step-{step:08d}.pt"}))
    return out


@pytest.fixture(scope="module")
def train_world(
    tiny_workspace: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, Path, dict[str, torch.Tensor]]:
    """A folder with a latent store, the uninterrupted reference run in it, and the reference's final weights."""
    root = tmp_path_factory.mktemp("crash_train")
    extract.run(
        ExtractConfig(
            data=tiny_workspace / "data.h5ad",
            scgpt=tiny_workspace / "scgpt",
            out=root / "store.zarr",
            n_genes=24,
            norm_cells=64,
            shard_cells=32,
            device="cpu",
        )
    )
    reference = train.run(_train_cfg(root, tiny_workspace, root / "reference"))
    return root, reference, _weights(reference)


@pytest.mark.slow
@pytest.mark.parametrize("seed", SEEDS)
def test_train_killed_after_a_checkpoint_resumes_to_the_same_weights(
    seed: int,
    train_world: tuple[Path, Path, dict[str, torch.Tensor]],
    tiny_workspace: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    root, reference, reference_weights = train_world
    n_checkpoints = STEPS // CHECKPOINT_EVERY - 1  # the last one is the end of training
    target = CHECKPOINT_EVERY * random.Random(seed).randint(1, n_checkpoints)
    out = root / f"killed-{seed}"
    _kill_when(_train_cmd(root, tiny_workspace, out), lambda: _last_step(out) >= target, root / f"killed-{seed}.log")

    step = _last_step(out)
    assert target <= step < STEPS, f"kill did not land mid-way (last checkpoint at step {step})"

    caplog.set_level(logging.INFO, logger="pipeline.train")
    train.run(_train_cfg(root, tiny_workspace, out, resume=True))
    assert f"steps {step}..{STEPS}" in caplog.text
    _assert_same_weights(out, reference_weights)
    assert _loss_rows(out) == _loss_rows(reference)  # every row, those before the kill included


@pytest.mark.slow
def test_train_resume_never_loads_a_half_written_checkpoint(
    train_world: tuple[Path, Path, dict[str, torch.Tensor]], tiny_workspace: Path
) -> None:
    """A kill mid-write leaves `.step-N.pt.<hex>.tmp` (write_bytes_atomic's temporary name) beside the
    checkpoints; a truncated file under a final name with a higher step (what a non-atomic writer would
    leave) is planted too. `--resume` follows last.json, ignores both and finishes identically."""
    root, reference, reference_weights = train_world
    out = _rewind(reference, root / "half_written", step=10)
    whole = (reference / "checkpoints" / "step-00000015.pt").read_bytes()
    (out / "checkpoints" / f".step-00000015.pt.{'0' * 32}.tmp").write_bytes(whole[: len(whole) // 2])
    (out / "checkpoints" / "step-00000035.pt").write_bytes(whole[: len(whole) // 3])
    kept = {name: (out / "checkpoints" / name).stat().st_mtime_ns for name in ("step-00000005.pt", "step-00000010.pt")}

    result = _cli(_train_cmd(root, tiny_workspace, out, "--resume"))
    assert f"steps 10..{STEPS}" in result.stderr
    assert kept == {name: (out / "checkpoints" / name).stat().st_mtime_ns for name in kept}  # not rewritten
    assert _last_step(out) == STEPS
    _assert_same_weights(out, reference_weights)
    assert load_checkpoint(out / "checkpoints" / "step-00000035.pt")["completed_steps"] == 35  # rewritten whole


class _Killed(Exception):
    """Raised where a SIGKILL is to land; nothing in the code under test catches it."""


@pytest.mark.slow
def test_train_killed_between_checkpoint_and_loss_flush_keeps_every_loss_row(
    train_world: tuple[Path, Path, dict[str, torch.Tensor]],
    tiny_workspace: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The process dies the instant checkpoint 10 is durable: a window SIGKILL polling on last.json hits often,
    but not always, so it is hit here exactly."""
    root, reference, _ = train_world
    out = root / "unflushed"
    save = train.save_checkpoint

    def save_then_die(run: Path, step: int, payload: dict) -> Path:
        path = save(run, step, payload)
        if step == 10:
            raise _Killed
        return path

    monkeypatch.setattr(train, "save_checkpoint", save_then_die)
    with pytest.raises(_Killed):
        train.run(_train_cfg(root, tiny_workspace, out))
    monkeypatch.undo()
    assert _last_step(out) == 10
    train.run(_train_cfg(root, tiny_workspace, out, resume=True))
    assert _loss_rows(out) == _loss_rows(reference)
