"""`make bench`: run every speed benchmark, then write docs/benchmarks.md and docs/benchmarks.json.

Each benchmark runs in its own process (`python -m bench.<name>`) and saves its table as JSON under
bench/results/; this script gathers those into one page with the machine, the date and the commands.
The quality study (`make quality`, an hour or more) is not rerun here: its latest summary in
docs/quality/quality.json is linked, with its date.

    python -m bench.run_all                 # run extract, train, generate; write the page
    python -m bench.run_all --render-only   # rewrite the page from the JSON already in bench/results/
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.common import RESULTS, machine

REPO = Path(__file__).resolve().parent.parent
DOCS = REPO / "docs"
BENCHMARKS: dict[str, str] = {
    "extract": "batched vs one-cell scGPT extraction; store bytes per cell; read throughput; full-size seconds/cell",
    "train": "training step from the latent cache vs on-the-fly scGPT; share of the step spent waiting for data",
    "generate": "two-stage (latent, then expression) sampling vs the no-latent model, per solver and step count",
}


def run_benchmark(name: str) -> float:
    """Run one benchmark in a fresh process; returns its wall time in seconds."""
    print(f"\n== bench.{name}", flush=True)
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", f"bench.{name}"], cwd=REPO, check=True)
    return time.perf_counter() - start


def _table(payload: dict[str, Any]) -> list[str]:
    lines = ["| measure | value | goal |", "|---|---:|---|"]
    lines += [f"| {r['measure']} | {r['value']} | {r['goal'] or ''} |" for r in payload["table"]]
    return lines


def _quality_lines() -> list[str]:
    path = DOCS / "quality" / "quality.json"
    if not path.exists():
        return ["No quality study has been run yet: `make quality`."]
    study = json.loads(path.read_text())
    return [
        f"The latest quality study ({study['date']}, on {study['machine']}; "
        f"{study['stand_in'] or 'real data and weights'}) is reported in [results.md](results.md); "
        "rerun it with `make quality`."
    ]


def _gpu_lines() -> list[str]:
    """The GPU benchmark's last full-size table (bench/gpu.sh writes it on the GPU machine), or why there is none."""
    path = RESULTS / "gpu" / "gpu.md"
    intro = ("Extraction, training and generation at full size on one GPU: `bash bench/gpu.sh` (`make gpu-bench`) on "
             "the GPU machine, with the wheels of `scripts/gpu_wheels.sh`; `bash bench/gpu.sh --rehearse` runs it on a "
             "CPU at tiny sizes (tests/test_gpu_bench.py).")  # fmt: skip
    if path.exists() and json.loads((path.parent / "gpu.json").read_text())["sizes_name"] == "full":
        return [intro, "", path.read_text()]
    return [intro, "", "Not run on a GPU yet: no GPU machine has been lent to this project since the script exists."]


def render(walls: dict[str, float]) -> str:
    lines = [
        "# Benchmarks",
        "",
        f"Written by `make bench` (`python -m bench.run_all`) on {time.strftime('%Y-%m-%d')}.",
        f"Machine: {machine()}.",
        "",
        "Every ratio compares two ways of doing the same work side by side in one run, on the same inputs. "
        "The inputs are STAND-INS: simulated Norman-shaped cells and random-weight scGPT checkpoints in the "
        "released layout, so these figures measure speed and size, not biology. The JSON behind this page is "
        "`docs/benchmarks.json`.",
        "",
    ]
    gathered = {}
    for name, what in BENCHMARKS.items():
        path = RESULTS / f"{name}.json"
        lines += [f"## {name}", "", f"{what}. Command: `.venv/bin/python -m bench.{name}`", ""]
        if not path.exists():
            lines += ["Not run yet.", ""]
            continue
        payload = json.loads(path.read_text())
        gathered[name] = {**payload, "wall_s": walls.get(name)}
        when = f"Measured {payload['date']} on {payload['machine']}"
        lines += [when + (f", {walls[name]:.0f} s wall." if name in walls else "."), ""]
        lines += [*_table(payload), ""]
    lines += ["## gpu", "", *_gpu_lines(), ""]
    lines += ["## Quality", "", *_quality_lines(), ""]
    (DOCS / "benchmarks.json").write_text(json.dumps(gathered, indent=2) + "\n")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--render-only", action="store_true", help="only rewrite the page from existing JSON")
    args = parser.parse_args(argv)
    walls = {} if args.render_only else {name: run_benchmark(name) for name in BENCHMARKS}
    DOCS.mkdir(exist_ok=True)
    (DOCS / "benchmarks.md").write_text(render(walls))
    print(f"\nwrote {DOCS / 'benchmarks.md'} and {DOCS / 'benchmarks.json'}")


if __name__ == "__main__":
    main()
