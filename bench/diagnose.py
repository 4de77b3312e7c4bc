"""Why does (or doesn't) the latent help? Diagnostics on one fold of the quality study.

For every held-out perturbation, with the same control cells and noise seeds for every arm:
- `ccfm`: the full two-stage sampler (stage 1 latent from noise, stage 2 expression);
- `ccfm + measured latent`: stage 2 alone, guided by the latents extraction wrote for real cells of that
  perturbation — what a perfect stage 1 would give (an upper bound: the latent is a function of the very cells
  it is compared with);
- `ccfm + control latent`: stage 2 guided by latents of control cells — does stage 2 read the latent at all?
- `no-latent`: the ablation.
Expression is scored by pearson_delta and mse of the pseudobulk against the real cells (computed here, not
by cell-eval, so the arms are compared on the same cells). Stage 1 is scored in latent space: the Pearson
correlation of the generated and measured mean latent shifts from the control latent mean, and the latent
MSE of the trained model against the loss of predicting a zero velocity.

    python -m bench.diagnose CCFM_RUN NO_LATENT_RUN STORE [--cells 32] [--steps 10]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from ccfm.data.conditions import parse_condition
from ccfm.data.panel import panel_columns
from ccfm.flow.generation import generate_cells, generate_from_latent
from ccfm.flow.sampling import SamplerConfig
from ccfm.latent.source import LatentSource
from pipeline.run_folder import TrainedRun, load_real_data, load_run

ARMS = ("ccfm", "ccfm + measured latent", "ccfm + control latent", "no-latent")


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.ravel() - a.mean(), b.ravel() - b.mean()
    denom = float(np.sqrt((a * a).sum() * (b * b).sum()))
    return float((a * b).sum() / denom) if denom > 0 else float("nan")


def _dense(x: Any) -> np.ndarray:
    return np.asarray(x.toarray() if hasattr(x, "toarray") else x, dtype=np.float32)


def zero_velocity_loss(source: LatentSource, names: list[str], expression: np.ndarray) -> float:
    """The latent MSE of always predicting v = 0: E[(z1 − z0)²] = E[z1²] + 1 over the cells given."""
    z1 = source.get(names, expression).features  # (B, G, D)
    return float((z1.astype(np.float64) ** 2).mean() + 1.0)


def final_losses(run: Path, last: int = 50) -> dict[str, float]:
    """Mean of the last `last` logged steps of each loss term."""
    log = pd.read_csv(run / "loss.csv").tail(last)
    return {c: float(log[c].mean()) for c in ("expr_mse", "latent_mse", "mmd") if c in log.columns}


def _sample(
    run: TrainedRun,
    start: torch.Tensor,
    tokens: torch.Tensor,
    noise: int,
    sampler: SamplerConfig,
    latent: torch.Tensor | None = None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Expression (n, G) and the generated latent (n, G, D) (None when `latent` is given or the model has none)."""
    generator = torch.Generator().manual_seed(noise)
    if latent is not None:
        return generate_from_latent(run.model, start, tokens, latent, generator, sampler).numpy(), None
    sample = generate_cells(run.model, start, tokens, generator, sampler)
    return sample.expression.numpy(), None if sample.latent is None else sample.latent.numpy()


def diagnose(ccfm_run: Path, none_run: Path, store: Path, cells: int, steps: int, seed: int = 0) -> dict[str, Any]:
    ccfm, none = load_run(ccfm_run), load_run(none_run)
    data = load_real_data(ccfm.info)
    columns = panel_columns(data, ccfm.info.panel)
    source = LatentSource.open(store, None)
    rng = np.random.default_rng(seed)
    control_rows = data.control_indices()
    control_all = _dense(data.expression[control_rows][:, columns])  # (Nc, G)
    control_mean = control_all.mean(0)  # (G,)
    probe = rng.choice(control_rows.size, size=min(256, control_rows.size), replace=False)
    control_names = data.obs_names[control_rows[probe]].tolist()
    control_latent = source.get(control_names, control_all[probe]).features  # (256, G, D)
    sampler = SamplerConfig(method="euler", steps=steps, latent_steps=steps)
    rows = []
    for label in tqdm(ccfm.info.split.test, desc="diagnose", unit="perturbation"):
        cell_rows = data.cell_indices(label)
        take = rng.choice(cell_rows.size, size=min(cells, cell_rows.size), replace=False)
        real_rows = cell_rows[take]
        real = _dense(data.expression[real_rows][:, columns])  # (n, G)
        real_latent = source.get(data.obs_names[real_rows].tolist(), real).features  # (n, G, D)
        n = real.shape[0]
        start = torch.from_numpy(control_all[rng.integers(control_all.shape[0], size=n)])  # (n, G)
        ctrl_latent = torch.from_numpy(control_latent[rng.integers(control_latent.shape[0], size=n)])  # (n, G, D)
        tokens = torch.from_numpy(np.stack([ccfm.vocab.ids(parse_condition(label))] * n))  # (n, P)
        noise = seed + len(rows)  # the same noise for every arm of this perturbation

        full, generated_latent = _sample(ccfm, start, tokens, noise, sampler)
        arms = {
            "ccfm": full,
            "ccfm + measured latent": _sample(ccfm, start, tokens, noise, sampler, torch.from_numpy(real_latent))[0],
            "ccfm + control latent": _sample(ccfm, start, tokens, noise, sampler, ctrl_latent)[0],
            "no-latent": _sample(none, start, tokens, noise, sampler)[0],
        }
        real_delta = real.mean(0) - control_mean
        record = {"perturbation": label}
        for arm, pred in arms.items():
            record[f"{arm}: pearson_delta"] = _pearson(pred.mean(0) - control_mean, real_delta)
            record[f"{arm}: mse"] = float(((pred.mean(0) - real.mean(0)) ** 2).mean())
        latent_shift = real_latent.mean(0) - control_latent.mean(0)  # (G, D)
        generated_shift = generated_latent.mean(0) - control_latent.mean(0)  # (G, D)
        record["latent: pearson of mean shift"] = _pearson(generated_shift, latent_shift)
        record["latent: |measured shift| / |control spread|"] = float(
            np.linalg.norm(latent_shift) / np.linalg.norm(control_latent.std(0))
        )
        rows.append(record)
    table = pd.DataFrame(rows).set_index("perturbation")
    sample_names = data.obs_names[control_rows[probe[:64]]].tolist()
    return {
        "run": str(ccfm_run),
        "no_latent_run": str(none_run),
        "cells_per_perturbation": cells,
        "sampler": f"euler {steps} steps per stage",
        "mean": table.mean().to_dict(),
        "per_perturbation": table.reset_index().to_dict(orient="records"),
        "losses_last_50_steps": {"ccfm": final_losses(ccfm_run), "no-latent": final_losses(none_run)},
        "latent_mse_of_zero_velocity": zero_velocity_loss(source, sample_names, control_all[probe[:64]]),
    }


def markdown(result: dict[str, Any]) -> str:
    mean = result["mean"]
    lines = ["| arm | pearson_delta ↑ | mse ↓ |", "|---|---|---|"]
    lines += [f"| {arm} | {mean[f'{arm}: pearson_delta']:.3f} | {mean[f'{arm}: mse']:.4f} |" for arm in ARMS]
    losses = result["losses_last_50_steps"]["ccfm"]
    lines += [
        "",
        f"- stage 1: Pearson of generated vs measured mean latent shift {mean['latent: pearson of mean shift']:.3f}; "
        f"measured shift / control spread {mean['latent: |measured shift| / |control spread|']:.3f}",
        f"- latent MSE over the last 50 steps {losses.get('latent_mse', float('nan')):.3f} vs "
        f"{result['latent_mse_of_zero_velocity']:.3f} for predicting a zero velocity",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("ccfm_run", type=Path)
    p.add_argument("no_latent_run", type=Path)
    p.add_argument("store", type=Path)
    p.add_argument("--cells", type=int, default=32)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--out", type=Path, help="write the result as JSON here")
    args = p.parse_args(argv)
    result = diagnose(args.ccfm_run, args.no_latent_run, args.store, args.cells, args.steps)
    if args.out:
        args.out.write_text(json.dumps(result, indent=2))
    print(markdown(result))


if __name__ == "__main__":
    main()
