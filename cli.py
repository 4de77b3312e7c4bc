"""The `ccfm` command line: parse options, build a stage config, call `pipeline.<stage>.run`.

A user's mistake (`CCFMError`) is printed as one line and exits with code 1, with no traceback
(`pipeline/cli_edge.py`).
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Annotated

import typer

from ccfm.config import (
    CascadeTimeConfig,
    ExtractConfig,
    FetchScgptConfig,
    ModelKnobs,
    ObjectiveConfig,
    SchemaOverrides,
    SimulateConfig,
    ToyScgptConfig,
    TrainConfig,
)
from pipeline import train_options as knob
from pipeline.cli_edge import Control, CountsLayer, GeneCol, Overwrite, PertCol
from pipeline.cli_edge import call as _call
from pipeline.run_commands import evaluate, generate, screen

app = typer.Typer(
    name="ccfm",
    help="Cascaded conditional flow matching: predict perturbed single cells via a frozen-scGPT latent.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


@app.callback()
def main(verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")] = False) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
        force=True,
    )


@app.command()
def simulate(
    kind: Annotated[str, typer.Argument(help="Data set to imitate: norman or combosciplex.")],
    out: Annotated[Path, typer.Option("--out", help="Output .h5ad file.")],
    scale: Annotated[float, typer.Option(help="Fraction of the real per-condition cell counts.")] = 0.05,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    min_cells: Annotated[int, typer.Option(help="Minimum cells per condition.")] = 5,
    interactions: Annotated[
        str,
        typer.Option(help="Doubles' non-additivity: random (per pair) or modules (learnable, by hidden modules)."),
    ] = "random",
    overwrite: Overwrite = False,
) -> None:
    """Write a SIMULATED stand-in data set shaped by the real Norman 2019 / ComboSciPlex metadata."""
    from pipeline import inspect
    from pipeline import simulate as stage

    path = _call(
        lambda: stage.run(
            SimulateConfig(
                kind=kind,  # type: ignore[arg-type]  # checked by SimulateConfig
                out=out,
                scale=scale,
                seed=seed,
                min_cells=min_cells,
                interactions=interactions,  # type: ignore[arg-type]
                overwrite=overwrite,
            )
        )
    )
    typer.echo(_call(lambda: inspect.describe(path, SchemaOverrides())))


@app.command("toy-scgpt")
def toy_scgpt(
    out: Annotated[Path, typer.Option("--out", help="Folder for best_model.pt, vocab.json, args.json.")],
    d_model: Annotated[int, typer.Option(help="Embedding width (released: 512).")] = 64,
    layers: Annotated[int, typer.Option(help="Transformer layers (released: 12).")] = 2,
    heads: Annotated[int, typer.Option(help="Attention heads (released: 8).")] = 4,
    genes_from: Annotated[Path | None, typer.Option(help="h5ad whose genes the vocab covers (or --pretrain)")] = None,
    pretrain: Annotated[Path | None, typer.Option(help="h5ad whose control cells pretrain it (masked expr.).")] = None,
    minutes: Annotated[float, typer.Option(help="Pretraining budget, wall-clock minutes.")] = 3.0,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    overwrite: Overwrite = False,
) -> None:
    """Write a toy scGPT checkpoint in the released layout (a stand-in): random, or pretrained with --pretrain."""
    from pipeline import toy_scgpt as stage

    path = _call(
        lambda: stage.run(
            ToyScgptConfig(
                out=out,
                d_model=d_model,
                layers=layers,
                heads=heads,
                genes_from=genes_from,
                pretrain=pretrain,
                minutes=minutes,
                seed=seed,
                overwrite=overwrite,
            )
        )
    )
    typer.echo(f"toy scGPT checkpoint ({'random' if pretrain is None else 'pretrained'}, a STAND-IN) written to {path}")


@app.command("fetch-scgpt")
def fetch_scgpt(
    out: Annotated[Path, typer.Option("--out", help="Checkpoint folder to create (staged in OUT.partial).")],
    source: Annotated[
        list[str] | None,
        typer.Option(
            "--source",
            help="Repeatable. A mirror folder URL holding all three files (https://host/scGPT_human), or one "
            "file's source as FILE=URL or FILE=GOOGLE_DRIVE_ID (FILE: best_model.pt, vocab.json, args.json). "
            "Default: the released scGPT_human files on Google Drive.",
        ),
    ] = None,
    sha256: Annotated[
        list[str] | None,
        typer.Option("--sha256", help="Repeatable FILE=HEX: refuse a file whose sha256 differs."),
    ] = None,
    timeout: Annotated[float, typer.Option(help="Seconds a connection or read may stall.")] = 60.0,
    overwrite: Overwrite = False,
) -> None:
    """Download the whole-human scGPT checkpoint (best_model.pt, vocab.json, args.json) and validate it.

    An interrupted download resumes when the same command is rerun. OUT appears only once every file is
    complete, matches its --sha256 and loads as `ccfm extract` loads it.

    Examples: `--source https://lab.example.org/scGPT_human` (a mirror folder); `--source best_model.pt=DRIVE_ID
    --sha256 best_model.pt=HEX` (one file from elsewhere, the others from the release). Offline, download the
    scGPT_human folder from the scGPT README by hand and pass it to `ccfm extract --scgpt`.
    """
    from pipeline import fetch_scgpt as stage

    path = _call(
        lambda: stage.run(
            FetchScgptConfig(
                out=out,
                sources=tuple(source or ()),
                sha256=tuple(sha256 or ()),
                timeout=timeout,
                overwrite=overwrite,
            )
        )
    )
    typer.echo(f"scGPT checkpoint downloaded and validated in {path}; use it with `ccfm extract DATA --scgpt {path}`")


@app.command()
def inspect(
    data: Annotated[Path, typer.Argument(help="Perturbation .h5ad file.")],
    pert_col: PertCol = None,
    control: Control = None,
    gene_col: GeneCol = None,
    counts_layer: CountsLayer = None,
) -> None:
    """Load a data set, detect its schema and print a summary."""
    from pipeline import inspect as stage

    overrides = SchemaOverrides(pert_col=pert_col, control=control, gene_col=gene_col, counts_layer=counts_layer)
    typer.echo(_call(lambda: stage.describe(data, overrides)))


@app.command()
def demo(
    out: Annotated[Path, typer.Option("--out", help="Folder for every demo artifact.")] = Path("demo_out"),
) -> None:
    """Run the whole pipeline on the embedded default (simulated Norman-shaped data, toy scGPT)."""
    from pipeline import demo as stage

    _call(lambda: stage.run(out))


@app.command()
def extract(
    data: Annotated[Path, typer.Argument(help="Perturbation .h5ad file.")],
    scgpt: Annotated[Path, typer.Option("--scgpt", help="scGPT checkpoint folder.")],
    out: Annotated[Path, typer.Option("--out", help="Latent store folder to write.")] = Path("cache/latents.zarr"),
    genes: Annotated[int, typer.Option("--genes", help="Panel size: top HVGs plus perturbed genes.")] = 1000,
    panel_cells: Annotated[str, typer.Option(help="HVGs from all cells or controls only.")] = "all",
    batch_size: Annotated[int, typer.Option(help="Cells per scGPT forward pass.")] = 32,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")] = "auto",
    resume: Annotated[bool, typer.Option("--resume", help="Finish an interrupted store.")] = False,
    break_lock: Annotated[bool, typer.Option("--break-lock", help="Take over another host's lock.")] = False,
    norm_cells: Annotated[int, typer.Option(help="Cells sampled for the normalization statistics.")] = 4096,
    shard_cells: Annotated[int, typer.Option(help="Cells per zarr shard.")] = 256,
    seed: Annotated[int, typer.Option(help="Seed for binning ties and the normalization sample.")] = 0,
    pert_col: PertCol = None,
    control: Control = None,
    gene_col: GeneCol = None,
    counts_layer: CountsLayer = None,
    overwrite: Overwrite = False,
) -> None:
    """Run the frozen scGPT over every cell and write normalized per-gene features to a latent store."""
    from pipeline import extract as stage

    path = _call(
        lambda: stage.run(
            ExtractConfig(
                data=data,
                scgpt=scgpt,
                out=out,
                schema=SchemaOverrides(
                    pert_col=pert_col, control=control, gene_col=gene_col, counts_layer=counts_layer
                ),
                n_genes=genes,
                panel_cells=panel_cells,
                batch_size=batch_size,
                device=device,
                resume=resume,
                overwrite=overwrite,
                break_lock=break_lock,
                norm_cells=norm_cells,
                shard_cells=shard_cells,
                seed=seed,
            )
        )
    )
    typer.echo(f"latent store written to {path}")


_MODEL, _OBJECTIVE, _TIMES = ModelKnobs(), ObjectiveConfig(), CascadeTimeConfig()  # the knobs' defaults
_TRAIN = {f.name: f.default for f in dataclasses.fields(TrainConfig)}


@app.command()
def train(
    store: Annotated[Path, typer.Argument(help="Latent store from `ccfm extract` (it names its data file).")],
    out: Annotated[Path, typer.Option("--out", help="Run folder.")],
    data: Annotated[Path | None, typer.Option(help="Perturbation .h5ad (default: the store's own).")] = None,
    split: Annotated[str, typer.Option(help="additive, holdout, unseen-single, combosciplex or file.")] = "additive",
    fold: knob.Fold = 0,
    split_seed: Annotated[int, typer.Option(help="Seed of the held-out draw.")] = 0,
    split_file: Annotated[Path | None, typer.Option(help="Test conditions, one per line (--split file).")] = None,
    preset: knob.Preset = _MODEL.preset,
    steps: Annotated[int, typer.Option(help="Optimizer steps, exactly.")] = _TRAIN["steps"],
    batch_size: Annotated[int, typer.Option(help="Target cells (and control cells) per step.")] = _TRAIN["batch_size"],
    latent: knob.Latent = _MODEL.latent,
    lr: Annotated[float, typer.Option(help="Peak learning rate.")] = _TRAIN["lr"],
    latent_first_prob: knob.LatentFirstProb = _TIMES.latent_first_prob,
    t_latent_for_expr: knob.TLatentForExpr = _TIMES.t_latent_for_expr,
    latent_weight: knob.LatentWeight = _OBJECTIVE.latent_weight,
    latent_loss: knob.LatentLoss = _OBJECTIVE.latent_loss,
    latent_target: knob.LatentTarget = _MODEL.latent_target,
    latent_pca: knob.LatentPca = _MODEL.latent_pca,
    latent_source: knob.LatentSource = _MODEL.latent_source,
    latent_source_noise: knob.LatentSourceNoise = _MODEL.latent_source_noise,
    latent_prior_tokens: knob.LatentPriorTokens = _MODEL.latent_prior_tokens,
    source: knob.Source = _MODEL.source,
    source_noise: knob.SourceNoise = _MODEL.source_noise,
    pert_cells: knob.PertCells = _TRAIN["pert_cells"],
    residual_weight: knob.ResidualWeight = _OBJECTIVE.residual_weight,
    latent_residual_weight: knob.LatentResidualWeight = _OBJECTIVE.latent_residual_weight,
    target_flag: knob.TargetFlag = _MODEL.target_flag,
    shift_tokens: knob.ShiftTokens = _MODEL.shift_tokens,
    interaction_head: knob.InteractionHead = _MODEL.interaction_head,
    coupling: knob.Coupling = _OBJECTIVE.coupling,
    cfg_dropout: knob.CfgDropout = _OBJECTIVE.cfg_dropout,
    checkpoint_every: Annotated[int, typer.Option(help="Steps between checkpoints.")] = _TRAIN["checkpoint_every"],
    workers: Annotated[int, typer.Option(help="Data-loading processes.")] = _TRAIN["workers"],
    scgpt: Annotated[Path | None, typer.Option("--scgpt", help="Checkpoint for cells outside the cache.")] = None,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")] = "auto",
    resume: Annotated[bool, typer.Option("--resume", help="Continue from the run's last checkpoint.")] = False,
    seed: Annotated[int, typer.Option(help="Seed of batches, noise, times and initialization.")] = 0,
    pert_col: PertCol = None,
    control: Control = None,
    gene_col: GeneCol = None,
    counts_layer: CountsLayer = None,
    overwrite: Overwrite = False,
) -> None:
    """Train the cascaded flow model, streaming cached latents alongside expression."""
    from pipeline import train as stage

    def config() -> TrainConfig:  # the configs check their own values
        model = ModelKnobs(
            preset=preset, latent=latent, latent_target=latent_target, latent_pca=latent_pca,  # type: ignore[arg-type]
            latent_source=latent_source, latent_source_noise=latent_source_noise,  # type: ignore[arg-type]
            latent_prior_tokens=latent_prior_tokens,
            source=source, source_noise=source_noise, target_flag=target_flag,  # type: ignore[arg-type]
            shift_tokens=shift_tokens, interaction_head=interaction_head,
        )  # fmt: skip
        times = CascadeTimeConfig(latent_first_prob, t_latent_for_expr)  # type: ignore[arg-type]
        objective = ObjectiveConfig(
            times=times, latent_weight=latent_weight, latent_loss=latent_loss,  # type: ignore[arg-type]
            residual_weight=residual_weight, latent_residual_weight=latent_residual_weight,
            coupling=coupling, cfg_dropout=cfg_dropout,  # type: ignore[arg-type]
        )  # fmt: skip
        schema = SchemaOverrides(pert_col=pert_col, control=control, gene_col=gene_col, counts_layer=counts_layer)
        return TrainConfig(
            cache=store, out=out, data=data, scgpt=scgpt, schema=schema, split=split, fold=fold,
            split_seed=split_seed, split_file=split_file, model=model, objective=objective, steps=steps,
            batch_size=batch_size, pert_cells=pert_cells, lr=lr, checkpoint_every=checkpoint_every, workers=workers,
            device=device, resume=resume, overwrite=overwrite, seed=seed,
        )  # fmt: skip

    path = _call(lambda: stage.run(config()))
    typer.echo(f"run written to {path} (checkpoints/, loss.csv, loss.png, split.json, run.json)")


for command in (generate, evaluate, screen):  # the commands on a trained run, in pipeline/run_commands.py
    app.command()(command)

if __name__ == "__main__":
    app()
