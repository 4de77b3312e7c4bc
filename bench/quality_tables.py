"""Tables from the finished runs of a quality study's work folder, whatever `bench.quality` got through.

Every `fold*/<run>/eval/metrics.csv` found is read (a run's report holds its own method, the baselines and any
runs scored beside it); scores are averaged per fold, then mean ± sd over the folds each method has — the table
says how many. Use it when a study was stopped before its end; `bench.quality` writes the full report.

    python -m bench.quality_tables bench/results/q2_random [--out docs/quality/random/tables.md]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from bench.quality import BASELINES
from bench.quality_scores import across_folds, double_types, fold_means, markdown, per_perturbation


def collect(work: Path) -> pd.DataFrame:
    """Per-perturbation scores of every finished report, one row per (fold, method, perturbation, metric)."""
    data = next(work.glob("*_simulated_*.h5ad"), None)
    types = double_types(data) if data is not None else {}
    frames = []
    for metrics in sorted(work.glob("fold*/*/eval/metrics.csv")):
        fold = int(metrics.parents[2].name.removeprefix("fold"))
        frames.append(per_perturbation(metrics.parent, types, fold=fold))
    if not frames:
        raise SystemExit(f"no finished report under {work}/fold*/*/eval")
    long = pd.concat(frames, ignore_index=True)
    return long.drop_duplicates(["fold", "method", "perturbation", "metric"])  # baselines appear in each report


def tables(work: Path) -> str:
    long = collect(work)
    stats = across_folds(fold_means(long, ["fold"]))
    folds = long.groupby("method")["fold"].nunique()
    order = [*sorted(m for m in folds.index if m not in BASELINES), *BASELINES]
    parts = [f"<!-- written by `python -m bench.quality_tables {work}` -->", ""]
    parts += ["folds scored per method: " + ", ".join(f"{m} {folds[m]}" for m in order if m in folds), ""]
    for subset in ("all", "non-additive", "additive"):
        if subset in set(stats["subset"]):
            parts += [f"**{subset} held-out doubles** (mean ± sd over the folds each method has)", ""]
            parts += [markdown(stats, subset, order), ""]
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("work", type=Path)
    p.add_argument("--out", type=Path, help="write the markdown here too")
    args = p.parse_args(argv)
    text = tables(args.work)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
