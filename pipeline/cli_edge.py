"""What every `ccfm` command shares at the command-line edge: the schema and --overwrite options, and turning
the project's errors into one `error:` line and an exit code."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Annotated, Any

import typer

from ccfm.errors import CCFMError, Interrupted

PertCol = Annotated[str | None, typer.Option("--pert-col", help="obs column with perturbation labels.")]
Control = Annotated[str | None, typer.Option("--control", help="Label of control cells in that column.")]
GeneCol = Annotated[str | None, typer.Option("--gene-col", help="var column with gene symbols.")]
CountsLayer = Annotated[str | None, typer.Option("--counts-layer", help="Layer with raw counts to normalize.")]
Overwrite = Annotated[bool, typer.Option("--overwrite", help="Replace an existing output.")]


def call(work: Callable[[], Any]) -> Any:
    """Build a stage's config and run it; a CCFMError becomes one line on stderr and exit code 1
    (130 when the user pressed Ctrl-C)."""
    try:
        return work()
    except Interrupted as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(code=130) from None
    except KeyboardInterrupt:
        typer.echo("error: interrupted before the output was complete; nothing was written", err=True)
        raise typer.Exit(code=130) from None
    except CCFMError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(code=1) from None
    except OSError as err:  # the file system said no: permissions, no space left, a file where a folder belongs
        logging.getLogger("ccfm").debug("file system error", exc_info=True)
        where = f": {err.filename}" if err.filename else ""
        typer.echo(
            f"error: {err.strerror or err}{where}; check that the output location is writable and has free space "
            "(rerun as `ccfm --verbose ...` for the full error)",
            err=True,
        )
        raise typer.Exit(code=1) from None
