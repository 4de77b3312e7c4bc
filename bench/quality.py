"""Quality study: does the scGPT latent help? CCFM vs the same model without a latent vs simple baselines.

    python -m bench.quality                      # the CPU study on a simulated Norman set (≈ 1 h on 2 cores)
    python -m bench.quality --data perturb_processed.h5ad --scgpt scGPT_human \\
        --genes 1000 --preset base --steps 200000 --batch 48 --lr 5e-5 --sampler-steps 20 --device cuda

Per fold of the additive split (seeded draws of held-out doubles) it trains CCFM and the no-latent
model with the same budget and seeds, generates the held-out doubles, and scores both with cell-eval
against the control, training-mean (cell-eval's perturbation-mean) and additive baselines. Scores are
averaged over perturbations within a fold, then reported as mean ± sd over folds — for all held-out
doubles and, on simulated data, separately for the doubles with a planted non-additive interaction and
the additive ones.

A sweep of the cascade's knobs (latent-first probability, t_latent of expression samples, latent loss
weight, velocity vs clean-latent prediction) runs first on a separate validation draw (split seed 1,
not one of the reported folds); the best variant by mean pearson_delta there is the CCFM configuration
the folds use.

Every finished run keeps its folder under --work; rerunning the command skips what is done, so an
interrupted study continues. The summary (JSON, markdown tables, plots) goes to --report.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from bench.common import machine  # noqa: E402
from bench.diagnose import diagnose  # noqa: E402
from bench.diagnose import markdown as diagnostics_markdown  # noqa: E402
from bench.quality_jobs import in_parallel, job_threads, on_worker_device  # noqa: E402
from bench.quality_scores import (  # noqa: E402
    METRICS,
    across_folds,
    arrow,
    double_types,
    fold_means,
    markdown,
    per_perturbation,
    plot_folds,
    plot_sweep,
)
from ccfm.config import (  # noqa: E402
    EvaluateConfig,
    ExtractConfig,
    GenerateConfig,
    SamplerConfig,
    SimulateConfig,
    ToyScgptConfig,
    TrainConfig,
)
from pipeline import evaluate, extract, generate, simulate, toy_scgpt, train  # noqa: E402

log = logging.getLogger("bench.quality")

REPO = Path(__file__).resolve().parent.parent
BASELINES = ("control", "train_mean", "additive")  # train_mean: mean training delta (a held-out double has no own mean)
SWEEP_SPLIT_SEED = 1  # the validation draw the sweep is scored on; the folds use split seed 0
SELECT_BY = "pearson_delta"


@dataclass(frozen=True)
class Variant:
    """One setting of the cascade's knobs: TrainConfig settings by name (TrainConfig.replace); the rest default."""

    name: str
    settings: dict[str, Any] = field(default_factory=dict)


OLD = dict(latent_prior_tokens=False)  # the rows before the prior tokens became the default keep their meaning
SWEEP = (
    Variant("noise-full", dict(latent_pca=0, latent_source="noise")),  # the cascade before this study (xpred)
    Variant("noise-pca8", dict(latent_pca=8, latent_source="noise")),
    Variant("prior-full", dict(latent_pca=0, **OLD)),
    Variant("prior-pca8", dict(latent_pca=8, **OLD)),
    Variant("prior-pca8-late", dict(latent_pca=8, t_latent_for_expr="late", **OLD)),
    Variant("prior-pca8-p0.2", dict(latent_pca=8, latent_first_prob=0.2, **OLD)),
    Variant("prior-pca32", dict(latent_pca=32, **OLD)),
    Variant("prior-pca32-s2", dict(latent_pca=32, latent_source_noise=2.0, **OLD)),
    Variant("prior-pca32-residual", dict(latent_pca=32, latent_target="residual", **OLD)),
    Variant("prior-pca32-residual-s2", dict(latent_pca=32, latent_target="residual", latent_source_noise=2.0, **OLD)),
    Variant("prior-pca32-xloss", dict(latent_pca=32, latent_loss="clean", **OLD)),
    Variant("prior-pca32-ptok", dict(latent_pca=32, latent_prior_tokens=True)),
    Variant("prior-pca32-lres10", dict(latent_pca=32, latent_residual_weight=10.0, **OLD)),
    Variant("prior-pca32-ptok-lres10", dict(latent_pca=32, latent_prior_tokens=True, latent_residual_weight=10.0)),
    Variant(
        "prior-pca32-residual-lres10", dict(latent_pca=32, latent_target="residual", latent_residual_weight=10.0, **OLD)
    ),
)


@dataclass(frozen=True)
class Settings:
    """The study's budget; every CCFM and no-latent run gets the same."""

    work: Path
    report: Path
    data: Path | None  # a real h5ad; None simulates a stand-in of `dataset`
    dataset: str  # simulated stand-in: norman (additive split, `folds` draws) or combosciplex (its fixed test set)
    interactions: str  # simulated norman: random (per pair) or modules (learnable) non-additivity
    scgpt: Path | None  # a real scGPT folder; None builds a toy checkpoint
    pretrain_minutes: float  # the toy: 0 random weights, else pretrained this long on the data's control cells
    scale: float
    genes: int
    preset: str
    steps: int
    batch: int
    lr: float
    sampler_steps: int
    sampler: str  # rk4 | euler
    cells: str  # generated cells per perturbation ("matched" or a number)
    folds: int
    sweep: bool
    device: str
    seed: int
    jobs: int  # runs trained side by side
    threads: int  # torch threads per job (0: cpu_count // jobs)
    variant: str  # with --no-sweep: the SWEEP variant the folds use
    diagnose: bool  # run bench.diagnose on every fold (about 3 min a fold on 2 CPU cores)


def _done(folder: Path) -> bool:
    return (folder / "eval" / "summary.csv").exists()


def prepare_inputs(s: Settings) -> tuple[Path, Path]:
    """The data file and the latent store (made once under the work folder)."""
    s.work.mkdir(parents=True, exist_ok=True)
    data = s.data
    if data is None:
        rule = "" if s.interactions == "random" else f"_{s.interactions}"
        data = s.work / f"{s.dataset}_simulated_{s.scale}{rule}.h5ad"
        if not data.exists():
            simulate.run(
                SimulateConfig(
                    kind=s.dataset,  # type: ignore[arg-type]
                    out=data,
                    scale=s.scale,
                    seed=s.seed,
                    interactions=s.interactions,  # type: ignore[arg-type]
                )
            )
    scgpt, kind = s.scgpt, ""
    if scgpt is None:
        kind = f"_pretrained{s.pretrain_minutes:g}min" if s.pretrain_minutes > 0 else ""
        scgpt = s.work / f"scgpt_toy{kind}"
        if not scgpt.exists():
            pretrain = dict(pretrain=data, minutes=s.pretrain_minutes) if s.pretrain_minutes > 0 else {}
            toy_scgpt.run(ToyScgptConfig(out=scgpt, genes_from=data, seed=s.seed, **pretrain))
    store = s.work / f"latents_{s.genes}{kind}.zarr"
    if not (store / "progress" / "complete.json").exists():
        extract.run(
            ExtractConfig(
                data=data, scgpt=scgpt, out=store, n_genes=s.genes, device=s.device, seed=s.seed, resume=store.exists()
            )
        )
    return data, store


def train_and_generate(
    s: Settings, data: Path, store: Path, out: Path, latent: str, variant: Variant, split_seed: int, fold: int
) -> Path:
    """One trained run with predictions for its held-out perturbations (skipped when already there)."""
    if (out / "predictions.h5ad").exists():
        return out
    cfg = TrainConfig(
        data=data,
        cache=store,
        out=out,
        split="combosciplex" if s.dataset == "combosciplex" else "additive",
        fold=fold,
        split_seed=split_seed,
        steps=s.steps,
        batch_size=s.batch,
        lr=s.lr,
        warmup_steps=max(1, s.steps // 10),
        checkpoint_every=s.steps,
        workers=2 if torch.cuda.is_available() and s.device != "cpu" else 0,  # on CPU a loader competes for cores
        device=s.device,
        overwrite=True,
        seed=s.seed,
    )
    train.run(cfg.replace(preset=s.preset, latent=latent, **variant.settings))
    generate.run(
        GenerateConfig(
            run=out,
            sampler=SamplerConfig(method=s.sampler, steps=s.sampler_steps, latent_steps=s.sampler_steps),  # type: ignore[arg-type]
            cells=s.cells,
            device=s.device,
            seed=s.seed,
        )
    )
    return out


def score(s: Settings, run: Path, others: tuple[Path, ...], baselines: tuple[str, ...]) -> Path:
    if not _done(run):
        evaluate.run(EvaluateConfig(run=run, baseline_runs=others, baselines=baselines, seed=s.seed, overwrite=True))
    return run / "eval"


@dataclass(frozen=True)
class Job:
    """One run to train and generate."""

    folder: Path
    latent: str  # scgpt | none
    variant: Variant
    split_seed: int
    fold: int


def _train_job(s: Settings, data: Path, store: Path, job: Job) -> Path:
    s = on_worker_device(s)
    return train_and_generate(s, data, store, job.folder, job.latent, job.variant, job.split_seed, job.fold)


def _score_job(s: Settings, run: Path, others: tuple[Path, ...], baselines: tuple[str, ...]) -> Path:
    return score(on_worker_device(s), run, others, baselines)


def fold_jobs(s: Settings, latent: str, variant: Variant) -> list[Job]:
    name = f"ccfm_{variant.name}" if latent == "scgpt" else "no_latent"
    return [Job(s.work / f"fold{fold}" / name, latent, variant, 0, fold) for fold in range(n_folds(s))]


def n_folds(s: Settings) -> int:
    return s.folds if s.dataset == "norman" else 1  # the ComboSciPlex split is one fixed test set


def sweep_jobs(s: Settings) -> list[Job]:
    return [Job(s.work / "sweep" / v.name, "scgpt", v, SWEEP_SPLIT_SEED, 0) for v in SWEEP]


def pick_variant(s: Settings, jobs: list[Job], types: dict[str, str]) -> tuple[Variant, pd.DataFrame]:
    """Score every sweep run on its own (no baselines); the best by mean pearson_delta wins."""
    reports = in_parallel(s, _score_job, [(j.folder, (), ()) for j in jobs])
    frames = [per_perturbation(r, types, variant=j.variant.name) for j, r in zip(jobs, reports, strict=True)]
    means = fold_means(pd.concat(frames, ignore_index=True), ["variant"])
    picked = means[(means["subset"] == "all") & (means["metric"] == SELECT_BY)].set_index("variant")["value"]
    return next(v for v in SWEEP if v.name == picked.idxmax()), means


def score_folds(s: Settings, ccfm: list[Job], none: list[Job], types: dict[str, str]) -> pd.DataFrame:
    calls = [(c.folder, (n.folder,), BASELINES) for c, n in zip(ccfm, none, strict=True)]
    reports = in_parallel(s, _score_job, calls)
    return pd.concat([per_perturbation(r, types, fold=j.fold) for j, r in zip(ccfm, reports, strict=True)])


def _diagnose_job(s: Settings, store: Path, ccfm: Job, none: Job) -> dict[str, Any]:
    """bench.diagnose on one fold, kept under --work (a rerun reuses it while it describes the same run)."""
    path = s.work / f"diagnostics_fold{ccfm.fold}.json"
    saved = json.loads(path.read_text()) if path.exists() else None
    if saved is not None and Path(saved["run"]).resolve() == ccfm.folder.resolve():
        return saved
    s = on_worker_device(s)
    cells = int(s.cells) if s.cells.isdigit() else 32
    result = diagnose(ccfm.folder, none.folder, store, cells, s.sampler_steps, s.seed)
    path.write_text(json.dumps(result, indent=2))
    return result


def latent_diagnostics(s: Settings, store: Path, ccfm: list[Job], none: list[Job]) -> dict[str, Any]:
    """bench.diagnose on every fold; the mean over folds, and each fold's."""
    folds = in_parallel(s, _diagnose_job, [(store, c, n) for c, n in zip(ccfm, none, strict=True)])
    mean = {k: float(np.mean([f["mean"][k] for f in folds])) for k in folds[0]["mean"]}
    return {
        "mean": mean,
        "folds": [f["mean"] for f in folds],
        "cells_per_perturbation": folds[0]["cells_per_perturbation"],
    }


def write_report(s: Settings, result: dict[str, Any], stats: pd.DataFrame, sweep: pd.DataFrame | None) -> None:
    s.report.mkdir(parents=True, exist_ok=True)
    order = [*sorted(m for m in set(stats["method"]) if m not in BASELINES), *BASELINES]
    note = result["stand_in"] or "real data and weights"
    parts = [f"<!-- written by `python -m bench.quality` on {result['date']}; {result['machine']} -->", ""]
    for subset in ("all", "non-additive", "additive"):
        if subset in set(stats["subset"]):
            parts += [f"**{subset} held-out doubles** (mean ± sd over {n_folds(s)} folds)", ""]
            parts += [markdown(stats, subset, order), ""]
    if sweep is not None:
        table = sweep[sweep["subset"] == "all"].pivot(index="variant", columns="metric", values="value")
        table = table[[m for m in METRICS if m in table.columns]].loc[[v.name for v in SWEEP]]
        parts += [f"**sweep** (validation draw, split seed {SWEEP_SPLIT_SEED}; picked: `{result['picked']}`)", ""]
        heads = " | ".join(f"{c} {arrow(c)}" for c in table.columns)
        parts += [f"| variant | {heads} |", "|---" * (len(table.columns) + 1) + "|"]
        parts += [f"| {v} | " + " | ".join(f"{x:.3f}" for x in row) + " |" for v, row in table.iterrows()]
        plot_sweep(sweep, [v.name for v in SWEEP], s.report / "sweep.png", note)
    if result["diagnostics"]:
        parts += ["", f"**why: stage-by-stage diagnostics, mean over {n_folds(s)} folds** (`bench/diagnose.py`)", ""]
        parts += [diagnostics_markdown(result["diagnostics"])]
    (s.report / "tables.md").write_text("\n".join(parts) + "\n")
    (s.report / "quality.json").write_text(json.dumps(result, indent=2, default=str))
    plot_folds(stats, order, s.report / "folds.png", note)


def run(s: Settings) -> dict[str, Any]:
    started = time.perf_counter()
    if s.variant not in {v.name for v in SWEEP}:
        raise SystemExit(f"--variant {s.variant!r} is not one of {', '.join(v.name for v in SWEEP)}")
    torch.set_num_threads(job_threads(s))  # for what runs in this process (--jobs 1, single calls)
    data, store = prepare_inputs(s)
    types = double_types(data)
    none = fold_jobs(s, "none", SWEEP[0])  # the no-latent model ignores the cascade's knobs
    sweep_runs = sweep_jobs(s) if s.sweep else []
    in_parallel(s, _train_job, [(data, store, j) for j in [*sweep_runs, *none]])
    chosen = next(v for v in SWEEP if v.name == s.variant)
    variant, sweep = pick_variant(s, sweep_runs, types) if s.sweep else (chosen, None)
    ccfm = fold_jobs(s, "scgpt", variant)
    in_parallel(s, _train_job, [(data, store, j) for j in ccfm])
    long = score_folds(s, ccfm, none, types)
    diagnostics = latent_diagnostics(s, store, ccfm, none) if s.diagnose else {}
    stats = across_folds(fold_means(long, ["fold"]))
    toy = f"toy scGPT pretrained {s.pretrain_minutes:g} min" if s.pretrain_minutes > 0 else "random-weight toy scGPT"
    stand_in = [w for w, real in (("SIMULATED data", s.data), (toy, s.scgpt)) if real is None]
    result = {
        "benchmark": "quality",
        "date": time.strftime("%Y-%m-%d"),
        "machine": machine(),
        "stand_in": " + ".join(stand_in) + " (STAND-INS: not a biological result)" if stand_in else "",
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(s).items()},
        "picked": variant.name,
        "sweep_variants": [asdict(v) for v in SWEEP] if s.sweep else [],
        "table": stats.drop(columns="text").to_dict(orient="records"),
        "sweep": sweep.to_dict(orient="records") if sweep is not None else [],
        "double_types": {t: sum(1 for v in types.values() if v == t) for t in sorted(set(types.values()))},
        "minutes_this_invocation": round((time.perf_counter() - started) / 60, 1),  # a rerun skips finished runs
        "diagnostics": diagnostics,
    }
    write_report(s, result, stats, sweep)
    return result


def parse(argv: list[str] | None = None) -> Settings:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", type=Path, default=REPO / "bench" / "results" / "quality_work", help="run folders")
    p.add_argument("--report", type=Path, default=REPO / "docs" / "quality", help="tables, JSON and plots")
    p.add_argument("--data", type=Path, help="real perturbation h5ad (default: simulate a Norman stand-in)")
    p.add_argument("--scgpt", type=Path, help="real scGPT folder (default: a toy checkpoint)")
    p.add_argument(
        "--pretrain-minutes", type=float, default=0.0,
        help="the toy scGPT: pretrained this long on the data's control cells (0: random weights)",
    )  # fmt: skip
    p.add_argument("--dataset", default="norman", choices=("norman", "combosciplex"), help="simulated stand-in")
    p.add_argument("--interactions", default="random", choices=("random", "modules"), help="simulated norman's doubles")
    p.add_argument("--scale", type=float, default=0.22, help="simulated cells per real cell (0.22: ≈ 20k cells)")
    p.add_argument("--genes", type=int, default=256, help="panel size G")
    p.add_argument("--preset", default="tiny", choices=("tiny", "base"))
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-3)
    sampler = SamplerConfig()  # `ccfm generate`'s defaults
    p.add_argument("--sampler-steps", type=int, default=sampler.steps, help="ODE steps per stage")
    p.add_argument("--sampler", default=sampler.method, choices=("euler", "rk4"))
    p.add_argument("--cells", default="32", help="generated cells per perturbation, or 'matched'")
    p.add_argument("--folds", type=int, default=3)
    p.add_argument("--no-sweep", dest="sweep", action="store_false", help="skip the sweep; the folds use --variant")
    p.add_argument("--variant", default="prior-pca32-ptok", help="with --no-sweep: the cascade settings (a sweep name)")
    p.add_argument("--no-diagnose", dest="diagnose", action="store_false", help="skip the stage-by-stage diagnostics")
    p.add_argument("--device", default="auto")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--jobs", type=int, default=2, help="runs side by side (each on its own GPU when several are visible)"
    )
    p.add_argument("--threads", type=int, default=0, help="torch threads per job (default: cpu_count // jobs)")
    return Settings(**vars(p.parse_args(argv)))


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    settings = parse(argv)
    result = run(settings)
    print((settings.report / "tables.md").read_text())
    print(f"quality study finished in {result['minutes_this_invocation']} min")


if __name__ == "__main__":
    main()
