"""The real `ccfm` command line, run in-process from tests."""

from __future__ import annotations

import sys

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
    return [*launch, "--module", "ccfm", *(str(a) for a in args)]
