"""`make demo` / `ccfm demo`: the whole pipeline on the embedded default, with stand-ins said as such.

Today: simulate a small Norman-shaped data set and describe it as the data layer loads it back.
"""

from __future__ import annotations

import logging
from pathlib import Path

import typer

from ccfm.config import SchemaOverrides, SimulateConfig
from pipeline import inspect, simulate

log = logging.getLogger(__name__)

DEMO_SCALE = 0.05  # ~4,600 cells: every real condition, small enough for 2 CPU cores
DEMO_SEED = 0


def run(out: Path) -> Path:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    typer.echo("CCFM demo — the data below are a SIMULATED stand-in for Norman 2019, not real measurements.")
    data_path = simulate.run(
        SimulateConfig(
            kind="norman", out=out / "norman_simulated.h5ad", scale=DEMO_SCALE, seed=DEMO_SEED, overwrite=True
        )
    )
    typer.echo(inspect.describe(data_path, SchemaOverrides()))
    return out
