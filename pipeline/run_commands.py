"""The `ccfm` commands on a trained run folder: generate, screen, evaluate (registered on the app in cli.py).

Each parses its options, builds the stage's config (which checks the values) and calls `pipeline.<stage>.run`
inside `cli_edge.call`, so a user's mistake is one line and exit code 1.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ccfm.config import EvaluateConfig, GenerateConfig, SamplerConfig, ScreenConfig
from pipeline.cli_edge import Overwrite
from pipeline.cli_edge import call as _call

_SAMPLER = SamplerConfig()


def generate(
    run: Annotated[Path, typer.Argument(help="Run folder written by `ccfm train`.")],
    checkpoint: Annotated[str, typer.Option(help="'last' or a checkpoint file.")] = "last",
    perturbations: Annotated[str, typer.Option(help="test, all, or a file of conditions.")] = "test",
    cells: Annotated[str, typer.Option(help="'matched' or a number of cells per perturbation.")] = "matched",
    steps: Annotated[int, typer.Option(help="ODE steps per stage.")] = _SAMPLER.steps,
    method: Annotated[str, typer.Option(help="ODE solver: euler or rk4.")] = _SAMPLER.method,
    guidance_expr: Annotated[float, typer.Option(help="Guidance scale, expression stage (1 = none).")] = 1.0,
    guidance_latent: Annotated[float, typer.Option(help="Guidance scale, latent stage (1 = none).")] = 1.0,
    batch_size: Annotated[int, typer.Option(help="Cells integrated together.")] = 64,
    out: Annotated[Path | None, typer.Option("--out", help="Predictions file (default RUN/predictions.h5ad).")] = None,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")] = "auto",
    seed: Annotated[int, typer.Option(help="Seed of control draws and noise.")] = 0,
    overwrite: Overwrite = False,
) -> None:
    """Sample predicted cells in two stages (latent, then expression) into a cell-eval-ready h5ad."""
    from pipeline import generate as stage

    path = _call(
        lambda: stage.run(
            GenerateConfig(
                run=run,
                checkpoint=checkpoint,
                perturbations=perturbations,
                cells=cells,
                sampler=SamplerConfig(
                    method=method,  # type: ignore[arg-type]  # checked by SamplerConfig
                    steps=steps,
                    latent_steps=steps,
                    guidance_expr=guidance_expr,
                    guidance_latent=guidance_latent,
                ),
                batch_size=batch_size,
                out=out,
                device=device,
                seed=seed,
                overwrite=overwrite,
            )
        )
    )
    typer.echo(f"predictions written to {path}")


def evaluate(
    run: Annotated[Path, typer.Argument(help="Run folder from `ccfm train`, with predictions from `ccfm generate`.")],
    predictions: Annotated[Path | None, typer.Option(help="Predictions file (default RUN/predictions.h5ad).")] = None,
    profile: Annotated[str, typer.Option(help="cell-eval metric profile: full, minimal or vcc.")] = "full",
    baseline_run: Annotated[
        list[Path] | None,
        typer.Option("--baseline-run", help="Another run to compare (repeatable), e.g. --latent none."),
    ] = None,
    baselines: Annotated[
        str, typer.Option(help="Built-in baselines, comma-separated.")
    ] = "control,perturbation_mean,additive,train_mean",
    out: Annotated[Path | None, typer.Option("--out", help="Report folder (default RUN/eval).")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the baselines' control-cell draws.")] = 0,
    threads: Annotated[int, typer.Option(help="Threads for cell-eval's differential expression.")] = 1,
    overwrite: Overwrite = False,
) -> None:
    """Score predictions with cell-eval against the held-out cells, beside built-in baselines and other runs."""
    from pipeline import evaluate as stage

    path = _call(
        lambda: stage.run(
            EvaluateConfig(
                run=run,
                predictions=predictions,
                profile=profile,
                baseline_runs=tuple(baseline_run or ()),
                baselines=tuple(b.strip() for b in baselines.split(",") if b.strip()),
                out=out,
                seed=seed,
                num_threads=threads,
                overwrite=overwrite,
            )
        )
    )
    typer.echo(f"evaluation written to {path} (report.md, summary.csv, metrics.csv, metrics.png, pca.png)")


_SCREEN = ScreenConfig(run=Path("."))


def screen(
    run: Annotated[Path, typer.Argument(help="Run folder written by `ccfm train`.")],
    pairs: Annotated[str, typer.Option(help="all (every unmeasured pair of training components) or a file.")] = "all",
    cells: Annotated[int, typer.Option(help="Predicted cells per pair.")] = _SCREEN.cells,
    batch_pairs: Annotated[int, typer.Option(help="Pairs predicted together (one resumable chunk).")] = 32,
    steps: Annotated[int, typer.Option(help="ODE steps per stage.")] = _SAMPLER.steps,
    method: Annotated[str, typer.Option(help="ODE solver: euler or rk4.")] = _SAMPLER.method,
    checkpoint: Annotated[str, typer.Option(help="'last' or a checkpoint file.")] = "last",
    out: Annotated[Path | None, typer.Option("--out", help="Screen folder (default RUN/screen).")] = None,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")] = "auto",
    seed: Annotated[int, typer.Option(help="Seed of control draws and noise.")] = 0,
    overwrite: Overwrite = False,
) -> None:
    """Predict every unmeasured pair and rank the pairs by genetic interaction (Norman et al. 2019's measures).

    A killed screen continues when the same command is run again."""
    from pipeline import screen as stage

    path = _call(
        lambda: stage.run(
            ScreenConfig(
                run=run,
                pairs=pairs,
                cells=cells,
                sampler=SamplerConfig(method=method, steps=steps, latent_steps=steps),  # type: ignore[arg-type]
                checkpoint=checkpoint,
                batch_pairs=batch_pairs,
                out=out,
                device=device,
                seed=seed,
                overwrite=overwrite,
            )
        )
    )
    typer.echo(f"screen written to {path} (pairs.csv ranked, screen.png, screen.json)")
