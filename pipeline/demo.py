"""`make demo` / `ccfm demo`: simulate → toy scGPT → extract → train (CCFM and the no-latent ablation) →
generate → evaluate, on the embedded default, with the stand-ins said as such.

Sized for 2 CPU cores (about five minutes): a 256-gene panel instead of the seed's 1000, the `tiny` model
preset, a few hundred steps at a raised learning rate, and the default sampler. Its table shows what the quality
study shows (docs/results.md) at a smaller budget; on stand-ins, it is not a biological result.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import typer

from ccfm.config import (
    EvaluateConfig,
    ExtractConfig,
    GenerateConfig,
    ModelKnobs,
    SamplerConfig,
    SchemaOverrides,
    SimulateConfig,
    ToyScgptConfig,
    TrainConfig,
)
from ccfm.latent.store import LatentStore
from pipeline import evaluate, extract, generate, inspect, simulate, toy_scgpt, train

log = logging.getLogger(__name__)

DEMO_SCALE = 0.05  # ~4,600 cells: every real condition, small enough for 2 CPU cores
DEMO_SEED = 0
DEMO_GENES = 256  # top HVGs + the 105 targets (the seed default is 1000: GPU-sized)
DEMO_STEPS = 300
DEMO_LR = 1e-3  # short run: the seed's 5e-5 is tuned for 200k steps
DEMO_PRETRAIN_MINUTES = 1.0  # the toy scGPT's masked-expression pretraining on the control cells


def _banner(text: str) -> None:
    typer.echo(f"\n== {text}")


def _train(data: Path, store: Path, out: Path, latent: str) -> Path:
    return train.run(
        TrainConfig(
            data=data,
            cache=store,
            out=out,
            model=ModelKnobs(preset="tiny", latent=latent),  # type: ignore[arg-type]
            steps=DEMO_STEPS,
            batch_size=32,
            lr=DEMO_LR,
            warmup_steps=30,
            checkpoint_every=DEMO_STEPS,
            workers=0,  # on 2 CPU cores a loader process takes a core from the step
            device="auto",
            overwrite=True,
            seed=DEMO_SEED,
        )
    )


def _generate(run: Path) -> Path:
    return generate.run(GenerateConfig(run=run, device="auto", overwrite=True, seed=DEMO_SEED))


def run(out: Path) -> Path:
    out, started = Path(out), time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    typer.echo(
        "CCFM demo — STAND-INS: the data are SIMULATED (shaped by real Norman 2019 metadata) and the scGPT "
        "checkpoint is a toy in the released layout, pretrained for a minute on the simulated control cells. No number "
        "below is a biological result."
    )
    _banner("1/6 simulate a Norman-shaped data set")
    data = simulate.run(
        SimulateConfig(
            kind="norman", out=out / "norman_simulated.h5ad", scale=DEMO_SCALE, seed=DEMO_SEED, overwrite=True
        )
    )
    typer.echo(inspect.describe(data, SchemaOverrides()))
    _banner(f"2/6 build a toy scGPT checkpoint, pretrained {DEMO_PRETRAIN_MINUTES:g} min (masked expression)")
    scgpt = toy_scgpt.run(
        ToyScgptConfig(
            out=out / "scgpt_toy", pretrain=data, minutes=DEMO_PRETRAIN_MINUTES, seed=DEMO_SEED, overwrite=True
        )
    )
    _banner(f"3/6 extract the latent store ({DEMO_GENES}-gene panel)")
    store_path = extract.run(
        ExtractConfig(
            data=data,
            scgpt=scgpt,
            out=out / "latents.zarr",
            n_genes=DEMO_GENES,
            device="auto",
            overwrite=True,
            seed=DEMO_SEED,
        )
    )
    store = LatentStore.open(store_path)
    typer.echo(f"{store_path}: {store.n_cells:,} cells × {store.n_genes} genes × {store.d_model} features (fp16)")
    _banner(f"4/6 train CCFM and the no-latent ablation ({DEMO_STEPS} steps each, tiny preset)")
    ccfm_run = _train(data, store_path, out / "run_ccfm", "scgpt")
    none_run = _train(data, store_path, out / "run_no_latent", "none")
    sampler = SamplerConfig()
    _banner(f"5/6 generate the held-out perturbations ({sampler.method}, {sampler.steps} steps per stage)")
    _generate(ccfm_run)
    _generate(none_run)
    _banner("6/6 evaluate with cell-eval against the baselines")
    report = evaluate.run(EvaluateConfig(run=ccfm_run, baseline_runs=(none_run,), overwrite=True, seed=DEMO_SEED))
    typer.echo((report / "report.md").read_text())
    typer.echo(f"demo finished in {time.perf_counter() - started:.0f} s; everything is in {out}")
    return out
