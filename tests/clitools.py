"""The real `ccfm` command line, run in-process from tests."""

from __future__ import annotations

import sys
from pathlib import Path

from click.testing import Result
from typer.testing import CliRunner

from cli import app

runner = CliRunner()


def invoke(*args: object) -> Result:
    return runner.invoke(app, [str(a) for a in args])


def refused(*args: object, match: str) -> str:
    """Run the CLI, expect a clean refusal: exit 1, no traceback, one `error:` line (the last) containing `match`."""
    result = invoke(*args)
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output, result.output
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1 and lines[-1] == errors[0], result.output
    assert match in errors[0], errors[0]
    return errors[0]


def ok(*args: object) -> None:
    result = invoke(*args)
    assert result.exit_code == 0, result.output


def torchrun_command(*args: object, nproc: int = 2) -> list[str]:
    """argv of `ccfm ARGS` under torchrun with `nproc` local processes (gloo on CPU), for subprocess.run."""
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc)]
    return [*launch, "--module", "cli", *(str(a) for a in args)]


def ccfm_command(*args: object) -> list[str]:
    """argv of `python -m cli ARGS`, for subprocess.run."""
    return [sys.executable, "-m", "cli", *(str(a) for a in args)]


def tiny_extract_args(data: Path, scgpt: Path, out: Path, shard_cells: int, batch_size: int = 1) -> list[object]:
    """`extract` on a tiny workspace: 24 genes, `batch_size` cells per scGPT batch (one), small shards, CPU."""
    return ["extract", data, "--scgpt", scgpt, "--out", out, "--genes", "24", "--batch-size", batch_size] + [
        "--norm-cells", "64", "--shard-cells", shard_cells, "--device", "cpu"
    ]  # fmt: skip


def tiny_train_args(data: Path, cache: Path, out: Path, steps: int, checkpoint_every: int) -> list[object]:
    """`train` on a tiny workspace: the tiny preset, batch 8, one loader process, CPU, split seed 1."""
    return ["train", cache, "--data", data, "--out", out, "--preset", "tiny", "--steps", steps] + [
        "--batch-size", "8", "--checkpoint-every", checkpoint_every, "--workers", "1", "--device", "cpu",
        "--lr", "0.001", "--split-seed", "1",
    ]  # fmt: skip
