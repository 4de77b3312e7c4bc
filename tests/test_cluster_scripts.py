"""The cluster templates in scripts/: they parse, and rendered with example values they run exactly the commands
they should. `srun`, `scontrol`, `mpiexec`, `torchrun` and `module` are stub executables that log their argv."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"
SLURM, PJM = SCRIPTS / "slurm_ccfm.sh", SCRIPTS / "pjm_ccfm.sh"
STUB = """#!/bin/bash
echo "$(basename "$0") $*" >>"$STUB_LOG"
if [[ "$(basename "$0") $1 $2" == "scontrol show hostnames" ]]; then printf 'gpu-a01\\ngpu-a02\\n'; fi
if [[ -n "${STUB_HANG:-}" && " $* " == *" train "* ]]; then exec sleep 60; fi
"""
STORE_ARGS = "--genes 1000 --device cuda --resume"
TRAIN_TAIL = (
    "--rdzv-backend c10d --rdzv-endpoint {head}:29500 --rdzv-id ccfm-{job} --module cli train {store} "
    "--data /data/norman.h5ad --out {run} --split additive --preset base --steps 1234 --batch-size 48 --device cuda "
    "--resume --checkpoint-every 500"
)


@pytest.mark.parametrize("script", [SLURM, PJM], ids=["slurm", "pjm"])
def test_scripts_parse(script: Path) -> None:
    result = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def _workspace(tmp_path: Path) -> tuple[dict[str, str], Path]:
    """Stub executables on PATH, a fake venv, and the example values as environment variables."""
    stubs = tmp_path / "stubs"
    stubs.mkdir()
    for name in ("srun", "scontrol", "mpiexec", "torchrun", "module"):
        (stubs / name).write_text(STUB)
        (stubs / name).chmod(0o755)
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "activate").write_text('echo "activate $VENV" >>"$STUB_LOG"\n')
    log = tmp_path / "argv.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BASH_FUNC_", "SLURM_", "PJM_"))}
    env.update(
        PATH=f"{stubs}:{env['PATH']}",
        STUB_LOG=str(log),
        MODULES="cuda/12.4 python/3.11",
        VENV=str(venv),
        DATA="/data/norman.h5ad",
        SCGPT="/models/scGPT_human",
        STORE=str(tmp_path / "cache" / "norman.zarr"),
        RUN=str(tmp_path / "runs" / "norman"),
        NODES="2",
        GPUS_PER_NODE="4",
        STEPS="1234",
        TRAIN_ARGS="--checkpoint-every 500",
    )
    return env, log


def _slurm_env(tmp_path: Path) -> tuple[dict[str, str], Path]:
    env, log = _workspace(tmp_path)
    env.update(SLURM_JOB_ID="4242", SLURM_JOB_NODELIST="gpu-a[01-02]", SLURM_SUBMIT_DIR=str(tmp_path))
    return env, log


def _render(script: Path, env: dict[str, str], log: Path) -> list[str]:
    result = subprocess.run(["bash", str(script)], env=env, cwd=env.get("SLURM_SUBMIT_DIR", "/"), capture_output=True)
    assert result.returncode == 0, result.stderr.decode()
    return log.read_text().splitlines()


def test_slurm_renders_extract_on_one_node_and_train_across_nodes(tmp_path: Path) -> None:
    env, log = _slurm_env(tmp_path)
    lines = _render(SLURM, env, log)
    store, run = env["STORE"], env["RUN"]
    assert lines == [
        "module load cuda/12.4 python/3.11",
        f"activate {env['VENV']}",
        "scontrol show hostnames gpu-a[01-02]",
        "srun --nodes 1 --ntasks 1 torchrun --standalone --nnodes 1 --nproc-per-node 4 --module cli extract "
        f"/data/norman.h5ad --scgpt /models/scGPT_human --out {store} {STORE_ARGS}",
        "srun --nodes 2 --ntasks-per-node 1 torchrun --nnodes 2 --nproc-per-node 4 "
        + TRAIN_TAIL.format(head="gpu-a01", job="4242", store=store, run=run),
    ]
    assert (Path(run) / "logs" / "extract.4242.log").is_file()
    assert (Path(run) / "logs" / "train.4242.log").is_file()


def test_slurm_requeue_breaks_only_its_own_stale_lock_and_skips_a_complete_store(tmp_path: Path) -> None:
    env, log = _slurm_env(tmp_path)
    store = Path(env["STORE"])
    store.parent.mkdir(parents=True)
    store.with_name("norman.zarr.lock").write_text('{"pid": 1, "host": "gpu-b07"}')
    store.with_name("norman.zarr.job").write_text("999\n")  # another job's lock: respected
    assert "--break-lock" not in "\n".join(_render(SLURM, env, log))

    log.unlink()
    store.with_name("norman.zarr.job").write_text("4242\n")  # this job before its requeue: stale
    extract = [line for line in _render(SLURM, env, log) if " extract " in line]
    assert extract[0].endswith(f"--out {store} {STORE_ARGS} --break-lock")

    log.unlink()
    (store / "progress").mkdir(parents=True)
    (store / "progress" / "complete.json").write_text("{}")
    lines = _render(SLURM, env, log)
    assert not any(" extract " in line for line in lines) and " train " in lines[-1]


def test_slurm_usr1_stops_the_step_and_requeues(tmp_path: Path) -> None:
    env, log = _slurm_env(tmp_path)
    env["STUB_HANG"] = "1"
    proc = subprocess.Popen(["bash", str(SLURM)], env=env, cwd=tmp_path, stdout=subprocess.PIPE)
    deadline = time.monotonic() + 30
    while not (log.is_file() and " train " in log.read_text()):
        assert time.monotonic() < deadline and proc.poll() is None, "train step never started"
        time.sleep(0.05)
    proc.send_signal(signal.SIGUSR1)
    assert proc.wait(timeout=20) == 0  # not the stub's 60 s: the step was stopped
    assert log.read_text().splitlines()[-1] == "scontrol requeue 4242"
    assert b"requeueing job 4242" in proc.stdout.read()


def test_pjm_renders_extract_on_one_node_and_train_across_nodes(tmp_path: Path) -> None:
    env, log = _workspace(tmp_path)
    nodes = tmp_path / "nodefile"
    nodes.write_text("wa-c01\nwa-c02\n")
    env.update(PJM_JOBID="777", PJM_O_NODEINF=str(nodes), PJM_O_WORKDIR=str(tmp_path))
    env.pop("NODES")  # counted from PJM's node file
    lines = _render(PJM, env, log)
    store, run = env["STORE"], env["RUN"]
    assert lines[:3] == [
        "module load cuda/12.4 python/3.11",
        f"activate {env['VENV']}",
        "torchrun --standalone --nnodes 1 --nproc-per-node 4 --module cli extract /data/norman.h5ad "
        f"--scgpt /models/scGPT_human --out {store} {STORE_ARGS}",
    ]
    launcher, _, torchrun = lines[3].partition(" torchrun ")
    assert launcher.startswith(f"mpiexec -machinefile {nodes} -n 2 -npernode 1 env PATH=")
    assert torchrun == "--nnodes 2 --nproc-per-node 4 " + TRAIN_TAIL.format(
        head="wa-c01", job="777", store=store, run=run
    )
    assert len(lines) == 4
    assert (Path(run) / "logs" / "train.777.log").is_file()
