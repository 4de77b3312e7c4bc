"""Shared helpers for the benchmarks: a simulated data set, a machine line, a table, JSON output."""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from ccfm.config import SimulateConfig
from pipeline import simulate

RESULTS = Path(__file__).resolve().parent / "results"


def machine() -> str:
    cuda = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, {cuda}"


def simulated_norman(folder: Path, scale: float, seed: int = 0) -> Path:
    """A simulated Norman-shaped h5ad (a STAND-IN), made once per folder."""
    path = folder / f"norman_sim_{scale}.h5ad"
    if not path.exists():
        simulate.run(SimulateConfig(kind="norman", out=path, scale=scale, seed=seed))
    return path


def timed(fn: Callable[[], Any], repeat: int = 1) -> tuple[float, Any]:
    """Best wall time over `repeat` runs and the last result."""
    best, result = float("inf"), None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


def report(name: str, rows: list[tuple[str, str, str]], extra: dict[str, Any]) -> None:
    """Print a table (what, value, goal) and save everything as JSON under bench/results/."""
    width = max(len(r[0]) for r in rows)
    print(f"\n{name} — {machine()}")
    print(f"{'measure'.ljust(width)}  {'value':>16}  goal")
    for what, value, goal in rows:
        print(f"{what.ljust(width)}  {value:>16}  {goal}")
    RESULTS.mkdir(exist_ok=True)
    payload = {
        "benchmark": name,
        "machine": machine(),
        "date": time.strftime("%Y-%m-%d"),
        "table": [dict(zip(("measure", "value", "goal"), r, strict=True)) for r in rows],
        **extra,
    }
    (RESULTS / f"{name}.json").write_text(json.dumps(payload, indent=2))
