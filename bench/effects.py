"""Does the expression model learn perturbation effects? A fast pseudobulk check, arm by arm.

Trains the model once per arm (one setting of source, batch mixing, residual penalty, ...) on one fold of the
additive split, samples every held-out double from the same control cells and noise for every arm, and scores the
pseudobulk against the real cells beside the control, train_mean and additive baselines built from the same
training cells, and a data ceiling (all real cells of the double in two random halves, one scored against the
other: each half has half the cells, so the ceiling is a conservative one): pearson_delta, mse, and `spread` —
how much the predictions for different perturbations differ (the std over perturbations of the predicted mean
shift, relative to the real one; 1 = as much as the real cells).
Scored here, not by cell-eval, so that arms are compared on identical inputs; the study (bench/quality.py) scores
with cell-eval.

    python -m bench.effects --arms prior,control,noise --steps 400
    python -m bench.effects --arms prior --samplers euler:1,euler:2,euler:5,euler:10,rk4:20   # solver and steps
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from bench.diagnose import _dense, _pearson
from bench.quality_scores import double_types
from ccfm.config import SamplerConfig, TrainConfig
from ccfm.data.conditions import parse_condition
from ccfm.data.panel import panel_columns
from ccfm.flow.generation import generate_cells
from pipeline import train
from pipeline.evaluate import training_effects
from pipeline.run_folder import load_real_data, load_run

REPO = Path(__file__).resolve().parent.parent

#: Each arm: TrainConfig overrides. The defaults of TrainConfig are the "prior" arm.
ARMS: dict[str, dict[str, Any]] = {
    "prior": {},  # the defaults: prior source, noise 0.1, residual weight 10, target flag, shift tokens
    "prior-s0": {"source_noise": 0.0},
    "prior-s0.3": {"source_noise": 0.3},
    "prior-s0.5": {"source_noise": 0.5},
    "prior-w1": {"residual_weight": 1.0},
    "prior-w100": {"residual_weight": 100.0},
    "prior-no-penalty": {"residual_weight": 0.0},
    "prior-no-shift-tokens": {"shift_tokens": False},
    "prior-no-interaction": {"interaction_head": False},
    "prior-w3": {"residual_weight": 3.0},
    "prior-w0.3": {"residual_weight": 0.3},
    "prior-ot": {"coupling": "ot"},
    "prior-1-pert": {"pert_cells": 10_000},
    "control": {"source": "control"},
    "noise": {"source": "noise", "source_noise": 1.0},
    "noise-1-pert": {"source": "noise", "source_noise": 1.0, "pert_cells": 10_000},
}


@dataclass(frozen=True)
class Budget:
    steps: int
    batch: int
    lr: float
    preset: str
    cells: int  # predicted (and real) cells per held-out double
    samplers: tuple[tuple[str, int], ...]  # (ODE method, steps per stage); more than one: each is an arm
    seed: int


def train_arm(data: Path, store: Path, out: Path, arm: str, b: Budget, fold: int, split_seed: int) -> Path:
    if (out / "checkpoints" / "last.json").exists():
        return out
    overrides = dict(ARMS[arm])
    if overrides.get("pert_cells") == 10_000:
        overrides["pert_cells"] = b.batch  # one perturbation per batch (scDFM)
    cfg = TrainConfig(
        data=data, cache=store, out=out, split="additive", fold=fold, split_seed=split_seed, steps=b.steps,
        batch_size=b.batch, lr=b.lr, warmup_steps=max(1, b.steps // 10), checkpoint_every=b.steps, workers=0,
        device="cpu", overwrite=True, seed=b.seed,
    )  # fmt: skip
    return train.run(cfg.replace(preset=b.preset, latent="none", **overrides))


def score_runs(runs: dict[str, Path], b: Budget, types: dict[str, str]) -> pd.DataFrame:
    """Per held-out double and arm (baselines included): pearson_delta, mse and the predicted mean shift."""
    first = load_run(next(iter(runs.values())))
    data = load_real_data(first.info)
    columns = panel_columns(data, first.info.panel)
    control = _dense(data.expression[data.control_indices()][:, columns])  # (Nc, G)
    control_mean = control.mean(0)
    effects = training_effects(data, first.info)
    models = {arm: load_run(path) for arm, path in runs.items()}
    samplers = {f"@{m}{n}" if len(b.samplers) > 1 else "": SamplerConfig(method=m, steps=n, latent_steps=n)
                for m, n in b.samplers}  # fmt: skip
    rng = np.random.default_rng(b.seed)
    rows = []
    for i, label in enumerate(first.info.split.test):
        cells = data.cell_indices(label)
        real = _dense(data.expression[rng.choice(cells, size=min(b.cells, cells.size), replace=False)][:, columns])
        halves = np.array_split(_dense(data.expression[rng.permutation(cells)][:, columns]), 2)  # the data ceiling
        start = torch.from_numpy(control[rng.integers(control.shape[0], size=b.cells)])  # (n, G)
        tokens = parse_condition(label).tokens
        additive = control_mean + sum(effects.deltas[t] for t in tokens)
        shifts = {"control": control_mean, "train_mean": control_mean + effects.mean_delta(), "additive": additive}
        for (arm, run), (suffix, sampler) in itertools.product(models.items(), samplers.items()):
            ids = torch.from_numpy(np.stack([run.vocab.ids(parse_condition(label))] * b.cells))
            sample = generate_cells(run.model, start, ids, torch.Generator().manual_seed(b.seed + i), sampler)
            shifts[arm + suffix] = sample.expression.numpy().mean(0)
        real_delta = real.mean(0) - control_mean
        rows.append({"perturbation": label, "arm": "ceiling (half vs half)", "type": _type(types, label),
                     "pearson_delta": _pearson(halves[0].mean(0) - control_mean, halves[1].mean(0) - control_mean),
                     "mse": float(((halves[0].mean(0) - halves[1].mean(0)) ** 2).mean()),
                     "shift": halves[0].mean(0) - control_mean, "real": halves[1].mean(0) - control_mean})  # fmt: skip
        for arm, mean in shifts.items():
            rows.append({
                "perturbation": label, "arm": arm, "type": _type(types, label),
                "pearson_delta": _pearson(mean - control_mean, real_delta),
                "mse": float(((mean - real.mean(0)) ** 2).mean()), "shift": mean - control_mean, "real": real_delta,
            })  # fmt: skip
    return pd.DataFrame(rows)


def _type(types: dict[str, str], label: str) -> str:
    return "additive" if types.get(label, "additive") == "additive" else "non-additive"


def summarize(long: pd.DataFrame) -> pd.DataFrame:
    out = [_summary(frame, arm, subset) for (arm, subset), frame in long.groupby(["arm", "type"])]
    out += [_summary(frame, arm, "all") for arm, frame in long.groupby("arm")]
    return pd.DataFrame(out).sort_values(["subset", "pearson_delta"])


def _summary(frame: pd.DataFrame, arm: str, subset: str) -> dict[str, Any]:
    shifts, real = np.stack(frame["shift"].to_list()), np.stack(frame["real"].to_list())  # (n_perts, G)
    spread = float(shifts.std(0).mean() / real.std(0).mean()) if len(frame) > 1 else float("nan")
    return {"arm": arm, "subset": subset, "pearson_delta": frame["pearson_delta"].mean(), "mse": frame["mse"].mean(),
            "spread": spread}  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", type=Path, default=REPO / "bench" / "results" / "quality_work")
    p.add_argument("--data", type=Path, help="default: the quality study's simulated data in --work")
    p.add_argument("--store", type=Path, help="default: the quality study's store in --work")
    p.add_argument("--arms", default="prior,control,noise")
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--batch", type=int, default=48)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--preset", default="tiny")
    p.add_argument("--cells", type=int, default=32)
    p.add_argument("--samplers", default="euler:10", help="comma-separated METHOD:STEPS, e.g. euler:2,rk4:20")
    p.add_argument("--fold", type=int, default=0)
    p.add_argument("--split-seed", type=int, default=1)  # the sweep's validation draw, not a reported fold
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tag", default="", help="suffix of the run folders (e.g. a budget)")
    args = p.parse_args(argv)
    data = args.data or args.work / "norman_simulated_0.22.h5ad"
    store = args.store or args.work / "latents_256.zarr"
    samplers = tuple((m, int(n)) for m, n in (item.split(":") for item in args.samplers.split(",")))
    b = Budget(args.steps, args.batch, args.lr, args.preset, args.cells, samplers, args.seed)
    runs = {}
    for arm in args.arms.split(","):
        started = time.perf_counter()
        out = args.work / "effects" / f"{arm}{args.tag}_s{args.seed}"
        runs[arm] = train_arm(data, store, out, arm, b, args.fold, args.split_seed)
        print(f"{arm}: trained in {time.perf_counter() - started:.0f} s", flush=True)
    table = summarize(score_runs(runs, b, double_types(data)))
    print(table.to_string(index=False, float_format=lambda x: f"{x:.3f}"))
    (args.work / "effects").mkdir(parents=True, exist_ok=True)
    (args.work / "effects" / f"summary{args.tag}_s{args.seed}.json").write_text(
        json.dumps(table.to_dict(orient="records"), indent=2)
    )


if __name__ == "__main__":
    main()
