"""How well an in-silico screen recovers the planted interacting pairs that were never measured.

On the simulated Norman with learnable ("modules") interactions, a pair interacts exactly when its two targets
share a hidden module (`uns['simulation']['modules']`): those pairs move their module's shared program by a
factor (0.5 or 1.5) instead of adding it. A screen (`ccfm screen RUN`) ranks every unmeasured pair by its
predicted departure from additivity; this scores that ranking against the planted truth — precision among the
top 20 and AUROC — beside the additive baseline's ranking (every pair exactly additive: all ties, broken in a
seeded random order, so its expected precision is the base rate and its AUROC 0.5) and a random ranking.

    python -m bench.screen RUN [--screen RUN/screen] [--out docs/screen.json]

The run must be trained on the modules stand-in (e.g. `bench/results/quality_modules_pretrained/fold0/
ccfm_prior-pca32-ptok`, made by `make quality`); the screen is run first when its folder holds no finished one.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd

from ccfm.config import ScreenConfig
from ccfm.eval.interactions import auroc, precision_at
from pipeline import screen
from pipeline.run_folder import read_run

TOP_K = 20
RANDOM_DRAWS = 200  # random rankings averaged for the null reference


def planted_truth(data: Path, pairs: pd.DataFrame) -> np.ndarray:
    """(N,) bool: the pair's two targets share a module (the simulator's ground truth)."""
    simulation = ad.read_h5ad(data, backed="r").uns["simulation"]
    if simulation.get("interaction_rule") != "modules":
        raise SystemExit(f"{data} was not simulated with --interactions modules: it has no planted modules")
    member = {str(k): int(v) for k, v in simulation["modules"].items()}
    return np.array([member[a] == member[b] for a, b in zip(pairs["a"], pairs["b"], strict=True)])


def recovery(pairs: pd.DataFrame, truth: np.ndarray, seed: int = 0) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    additive = np.zeros(len(pairs))  # the additive baseline predicts δa + δb: non-additivity 0 for every pair
    randoms = [rng.random(len(pairs)) for _ in range(RANDOM_DRAWS)]
    rows = {
        "ccfm (predicted non-additivity)": pairs["non_additivity"].to_numpy(),
        "ccfm (|magnitude − √2|)": np.abs(pairs["magnitude"].to_numpy() - np.sqrt(2)),
        "additive baseline": additive,
    }
    table = {
        name: {"precision_at_20": precision_at(s, truth, TOP_K, rng), "auroc": auroc(s, truth)}
        for name, s in rows.items()
    }
    table["random ranking (mean of 200)"] = {
        "precision_at_20": float(np.mean([precision_at(s, truth, TOP_K, rng) for s in randoms])),
        "auroc": float(np.mean([auroc(s, truth) for s in randoms])),
    }
    return {"pairs": len(pairs), "planted": int(truth.sum()), "base_rate": float(truth.mean()), "rankings": table}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run", type=Path)
    p.add_argument("--screen", type=Path, help="screen folder (default RUN/screen; screened first if unfinished)")
    p.add_argument("--cells", type=int, default=16)
    p.add_argument("--out", type=Path, help="write the result as JSON here")
    args = p.parse_args(argv)
    folder = args.screen or args.run / "screen"
    if not (folder / screen.RESULT).is_file():
        screen.run(ScreenConfig(run=args.run, cells=args.cells, out=folder, device="cpu"))
    pairs = pd.read_csv(folder / screen.RESULT)
    result = recovery(pairs, planted_truth(read_run(args.run).data, pairs))
    result["screen"] = json.loads((folder / screen.PLAN).read_text())
    rate = result["screen"]["finished"]["pairs_per_minute"]
    print(f"{result['pairs']} unmeasured pairs, {result['planted']} planted interacting (base rate "
          f"{result['base_rate']:.3f}); screen: {rate} pairs/min")  # fmt: skip
    print("| ranking | precision at 20 | AUROC |\n|---|---|---|")
    for name, row in result["rankings"].items():
        print(f"| {name} | {row['precision_at_20']:.2f} | {row['auroc']:.3f} |")
    if args.out:
        args.out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
