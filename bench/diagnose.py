"""Why does (or doesn't) the latent help? Stage-by-stage diagnostics on one fold of the quality study.

For every held-out perturbation, with the same control cells and noise seeds for every arm:
- expression (stage 2) from four latents: the one stage 1 generated (`ccfm`, the full sampler); the latents
  extraction wrote for real cells of that perturbation (`measured`: what a perfect stage 1 would give — an
  upper bound, the latent being a function of the very cells it is compared with); latents of control cells
  (`control`: does stage 2 read the latent at all?); and the model without a latent (`no-latent`).
  Scored by pearson_delta and mse of the pseudobulk against the real cells (computed here, not by cell-eval,
  so the arms are compared on the same cells).
- the latent (stage 1): the generated mean latent shift from the control latent mean against the measured one
  (Pearson over genes × features, and relative error ‖generated − measured‖ / ‖measured‖), in the full D
  features (codes decoded), beside null references that use no model: an all-zero latent, the training-mean
  latent (mean over training perturbations of their cells' latents) and the latent of other control cells;
  and the ceiling of the code space (the measured latents encoded and decoded: what a perfect stage 1 in codes
  could reach).

    python -m bench.diagnose CCFM_RUN NO_LATENT_RUN STORE [--cells 32] [--steps 2]
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from ccfm.config import SamplerConfig
from ccfm.data.conditions import parse_condition
from ccfm.data.panel import panel_columns
from ccfm.flow.generation import generate_cells, generate_from_latent
from ccfm.latent.source import LatentSource
from pipeline.progress import progress
from pipeline.run_folder import TrainedRun, load_real_data, load_run

ARMS = ("ccfm", "ccfm + measured latent", "ccfm + control latent", "no-latent")
#: stage-1 rows: the generated latent, the code-space ceiling, then the null references (no model)
LATENT_ROWS = (
    "generated",
    "measured, other half of the cells",
    "measured, through the codes",
    "additive latent",
    "training-mean latent",
    "control latent",
    "all-zero latent",
)
REFERENCE_CELLS = 256  # control cells of the shift's baseline; at most this many real cells measure a double's latent
CONDITION_CELLS = 256  # cells per training condition for the training-mean and additive latents (their means)
LATENT_CELLS = 128  # cells stage 1 generates per double for the latent comparison


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


def _relative_error(generated: np.ndarray, measured: np.ndarray) -> float:
    return float(np.linalg.norm(generated - measured) / max(np.linalg.norm(measured), 1e-12))


def _latents(source: LatentSource, data: Any, rows: np.ndarray, columns: np.ndarray) -> np.ndarray:
    """(n, G, D) cached latents of data rows."""
    return source.get(data.obs_names[rows].tolist(), _dense(data.expression[rows][:, columns])).features


@dataclass(frozen=True)
class TrainingLatents:
    """Mean latents (G, D) of training conditions, each from a seeded sample of its cells."""

    control: np.ndarray  # (G, D) mean latent of control cells (another sample than the shift's baseline)
    by_condition: dict[str, np.ndarray]

    def mean(self) -> np.ndarray:
        """The training-mean latent: equal weight per training perturbation."""
        return np.mean(list(self.by_condition.values()), axis=0)

    def additive(self, label: str) -> np.ndarray | None:
        """control + Σ (single − control) over the components' training singles; None if one is missing."""
        parts = parse_condition(label).tokens  # a single's canonical label is its token
        singles = [self.by_condition.get(part) for part in parts]
        if not parts or any(m is None for m in singles):
            return None
        return self.control + sum(m - self.control for m in singles)


def training_latents(
    source: LatentSource, data: Any, train: list[str], columns: np.ndarray, control_rows: np.ndarray, seed: int
) -> TrainingLatents:
    rng = np.random.default_rng([seed, 3])

    def mean(rows: np.ndarray) -> np.ndarray:
        return _latents(
            source, data, np.sort(rng.choice(rows, min(CONDITION_CELLS, rows.size), replace=False)), columns
        ).mean(0)

    return TrainingLatents(mean(control_rows), {label: mean(data.cell_indices(label)) for label in train})


def _expression_scores(arms: dict[str, np.ndarray], real: np.ndarray, control_mean: np.ndarray) -> dict[str, float]:
    """Pseudobulk pearson_delta and mse of each arm's cells (n, G) against the real cells (n, G)."""
    scores = {}
    for arm, pred in arms.items():
        scores[f"{arm}: pearson_delta"] = _pearson(pred.mean(0) - control_mean, real.mean(0) - control_mean)
        scores[f"{arm}: mse"] = float(((pred.mean(0) - real.mean(0)) ** 2).mean())
    return scores


def _latent_scores(
    means: dict[str, np.ndarray], baseline: np.ndarray, measured: np.ndarray, halves: tuple[np.ndarray, np.ndarray]
) -> dict[str, float]:
    """Each candidate mean latent's shift from `baseline` (G, D) against the measured shift; and the two halves'."""
    scores = {}
    for name, mean in means.items():
        scores[f"latent {name}: pearson"] = _pearson(mean - baseline, measured)
        scores[f"latent {name}: relative error"] = _relative_error(mean - baseline, measured)
    scores["latent measured, other half of the cells: pearson"] = _pearson(*halves)
    scores["latent measured, other half of the cells: relative error"] = _relative_error(*halves)
    return scores


def diagnose(ccfm_run: Path, none_run: Path, store: Path, cells: int, steps: int, seed: int = 0) -> dict[str, Any]:
    ccfm, none = load_run(ccfm_run), load_run(none_run)
    data = load_real_data(ccfm.info)
    columns = panel_columns(data, ccfm.info.panel)
    source = LatentSource.open(store, None)
    space = ccfm.model.latent_space
    genes = torch.arange(columns.size)
    codes = lambda z: space.encode(torch.from_numpy(z), genes)  # noqa: E731  (n, G, D) -> (n, G, K)
    full = lambda c: space.decode(c, genes).numpy()  # noqa: E731  (n, G, K) -> (n, G, D)
    rng = np.random.default_rng(seed)
    control_rows = data.control_indices()
    control_all = _dense(data.expression[control_rows][:, columns])  # (Nc, G)
    control_mean = control_all.mean(0)  # (G,)
    half = min(REFERENCE_CELLS, control_rows.size // 2)  # two disjoint control samples: baseline and references
    probe = rng.permutation(control_rows.size)
    base, other = probe[:half], probe[half:]
    control_latent = _latents(source, data, control_rows[base], columns)  # (n, G, D)
    control_latent_mean = control_latent.mean(0)  # (G, D)
    references = training_latents(source, data, list(ccfm.info.split.train), columns, control_rows[other], seed)
    sampler = SamplerConfig(method="euler", steps=steps, latent_steps=steps)
    rows = []
    for label in progress(ccfm.info.split.test, desc="diagnose", unit="perturbation"):
        cell_rows = data.cell_indices(label)
        real_rows = cell_rows[rng.choice(cell_rows.size, size=min(cells, cell_rows.size), replace=False)]
        real = _dense(data.expression[real_rows][:, columns])  # (n, G)
        real_latent = _latents(source, data, real_rows, columns)  # (n, G, D)
        n = real.shape[0]
        start = torch.from_numpy(control_all[rng.integers(control_all.shape[0], size=n)])  # (n, G)
        ctrl_latent = control_latent[rng.integers(control_latent.shape[0], size=n)]  # (n, G, D)
        tokens = torch.from_numpy(np.stack([ccfm.vocab.ids(parse_condition(label))] * n))  # (n, P)
        noise = seed + len(rows)  # the same noise for every arm of this perturbation

        expression, generated = _sample(ccfm, start, tokens, noise, sampler)
        arms = {
            "ccfm": expression,
            "ccfm + measured latent": _sample(ccfm, start, tokens, noise, sampler, codes(real_latent))[0],
            "ccfm + control latent": _sample(ccfm, start, tokens, noise, sampler, codes(ctrl_latent))[0],
            "no-latent": _sample(none, start, tokens, noise, sampler)[0],
        }
        record: dict[str, Any] = {"perturbation": label, **_expression_scores(arms, real, control_mean)}
        # the latent: every real cell of the double (up to REFERENCE_CELLS) against LATENT_CELLS generated ones
        all_rows = cell_rows[rng.permutation(cell_rows.size)[:REFERENCE_CELLS]]
        all_latent = _latents(source, data, all_rows, columns)  # (m, G, D)
        measured = all_latent.mean(0) - control_latent_mean  # (G, D)
        first, second = all_latent[: all_rows.size // 2], all_latent[all_rows.size // 2 :]
        many = rng.integers(control_all.shape[0], size=LATENT_CELLS)
        _, generated = _sample(
            ccfm, torch.from_numpy(control_all[many]), tokens[:1].expand(LATENT_CELLS, -1), noise, sampler
        )
        additive = references.additive(label)
        latent_means = {
            "generated": full(torch.from_numpy(generated)).mean(0),
            "measured, through the codes": full(codes(all_latent)).mean(0),
            "additive latent": additive if additive is not None else np.full_like(measured, np.nan),
            "training-mean latent": references.mean(),
            "control latent": references.control,
            "all-zero latent": np.zeros_like(control_latent_mean),
        }
        halves = (first.mean(0) - control_latent_mean, second.mean(0) - control_latent_mean)
        record.update(_latent_scores(latent_means, control_latent_mean, measured, halves))
        record["latent: |measured shift| / |control spread|"] = float(
            np.linalg.norm(measured) / np.linalg.norm(control_latent.std(0))
        )
        rows.append(record)
    table = pd.DataFrame(rows).set_index("perturbation")
    sample_names = data.obs_names[control_rows[base[:64]]].tolist()
    return {
        "run": str(ccfm_run),
        "no_latent_run": str(none_run),
        "cells_per_perturbation": cells,
        "sampler": f"euler {steps} steps per stage",
        "mean": table.mean().to_dict(),
        "per_perturbation": table.reset_index().to_dict(orient="records"),
        "losses_last_50_steps": {"ccfm": final_losses(ccfm_run), "no-latent": final_losses(none_run)},
        "latent_mse_of_zero_velocity": zero_velocity_loss(source, sample_names, control_all[base[:64]]),
    }


def markdown(result: dict[str, Any]) -> str:
    mean = result["mean"]
    lines = ["| stage 2: expression from | pearson_delta ↑ | mse ↓ |", "|---|---|---|"]
    lines += [f"| {arm} | {mean[f'{arm}: pearson_delta']:.3f} | {mean[f'{arm}: mse']:.4f} |" for arm in ARMS]
    lines += ["", "| stage 1: mean latent shift of | Pearson with measured ↑ | relative error ↓ |", "|---|---|---|"]
    lines += [
        f"| {name} | {mean[f'latent {name}: pearson']:.3f} | {mean[f'latent {name}: relative error']:.3f} |"
        for name in LATENT_ROWS
    ]
    if len(result.get("folds", [])) > 1:
        per_fold = ", ".join(
            f"{f['latent generated: pearson']:.3f} vs {f['latent training-mean latent: pearson']:.3f}"
            for f in result["folds"]
        )
        lines += ["", f"- per fold, generated vs training-mean latent (Pearson): {per_fold}"]
    lines += [
        "",
        f"- measured latent shift / control spread {mean['latent: |measured shift| / |control spread|']:.3f} "
        f"(the shift's size against the cell-to-cell spread; {result['cells_per_perturbation']} cells per double)",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("ccfm_run", type=Path)
    p.add_argument("no_latent_run", type=Path)
    p.add_argument("store", type=Path)
    p.add_argument("--cells", type=int, default=32)
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--out", type=Path, help="write the result as JSON here")
    args = p.parse_args(argv)
    result = diagnose(args.ccfm_run, args.no_latent_run, args.store, args.cells, args.steps)
    if args.out:
        args.out.write_text(json.dumps(result, indent=2))
    print(markdown(result))


if __name__ == "__main__":
    main()
