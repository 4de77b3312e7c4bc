"""Configs of the stages that use a trained run: sampling, generate, screen, evaluate."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from ccfm.config.checks import MAX_SEED, int_in, need, one_of, real_in
from ccfm.config.model import ODE_METHODS


@dataclass(frozen=True)
class SamplerConfig:
    """How cells are generated (ccfm/flow/sampling.py). Euler with 2 steps per stage was measured within 0.001
    pearson_delta of rk4 with 20, at 40× fewer model evaluations."""

    method: Literal["euler", "rk4"] = "euler"  # torchdiffeq fixed-grid solver
    steps: int = 2  # expression steps on t in [0, 1] (stage 2)
    latent_steps: int = 2  # latent steps on t in [0, 1] (stage 1)
    clamp_min: float | None = 0.0  # generated expression is clamped at >= this; None: no clamp
    guidance_expr: float = 1.0  # classifier-free guidance scale in stage 2 (1.0: none)
    guidance_latent: float = 1.0  # classifier-free guidance scale in stage 1 (1.0: none)

    def __post_init__(self) -> None:
        one_of(self.method, "--method", ODE_METHODS)
        int_in(self.steps, "--steps", 1, 10_000)
        int_in(self.latent_steps, "--steps", 1, 10_000)
        real_in(self.guidance_expr, "--guidance-expr", 0, 20)
        real_in(self.guidance_latent, "--guidance-latent", 0, 20)

    @property
    def guided(self) -> list[str]:
        """The guidance options set to anything but 1."""
        scales = (("--guidance-expr", self.guidance_expr), ("--guidance-latent", self.guidance_latent))
        return [name for name, w in scales if w != 1.0]


@dataclass(frozen=True)
class GenerateConfig:
    """`ccfm generate`: sample predicted cells in two stages (latent, then expression)."""

    run: Path  # run folder written by `ccfm train`
    checkpoint: str = "last"  # "last" or a checkpoint file
    perturbations: str = "test"  # "test" (held-out), "all", or a file listing conditions
    cells: str = "matched"  # "matched" (as many as the real held-out cells) or a number per perturbation
    sampler: SamplerConfig = SamplerConfig()  # ODE solver, steps per stage, guidance
    batch_size: int = 64  # cells integrated together
    out: Path | None = None  # predictions file (default RUN/predictions.h5ad)
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    seed: int = 0  # seeds control-cell draws and noise
    overwrite: bool = False  # replace an existing predictions file

    def __post_init__(self) -> None:
        matched = self.cells == "matched"
        need(matched or (self.cells.isdigit() and 1 <= int(self.cells) <= 1_000_000), "--cells",
              "'matched' or a number of cells in [1, 1000000]", self.cells)  # fmt: skip
        int_in(self.batch_size, "--batch-size", 1, 65_536)
        int_in(self.seed, "--seed", 0, MAX_SEED)


@dataclass(frozen=True)
class ScreenConfig:
    """`ccfm screen`: predict every unmeasured pair of a run's training components and rank them by interaction."""

    run: Path  # run folder written by `ccfm train`
    pairs: str = "all"  # "all": every pair of components with a training single that the data never measured;
    # or a file of pairs, one `A+B` a line
    cells: int = 16  # predicted cells per pair (their pseudobulk is scored)
    sampler: SamplerConfig = SamplerConfig()  # ODE solver and steps per stage
    checkpoint: str = "last"  # "last" or a checkpoint file
    batch_pairs: int = 32  # pairs predicted together (one resumable chunk)
    out: Path | None = None  # screen folder (default RUN/screen)
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    seed: int = 0  # seeds control-cell draws and noise (chunk k uses seed + k: a resumed screen is the same)
    overwrite: bool = False  # replace a finished screen

    def __post_init__(self) -> None:
        int_in(self.cells, "--cells", 2, 100_000)
        int_in(self.batch_pairs, "--batch-pairs", 1, 100_000)
        int_in(self.seed, "--seed", 0, MAX_SEED)


@dataclass(frozen=True)
class EvaluateConfig:
    """`ccfm evaluate`: cell-eval scores of a run's predictions, other runs' predictions and built-in baselines."""

    run: Path  # run folder from `ccfm train` (run.json, split.json)
    predictions: Path | None = None  # predictions file (default: RUN/predictions.h5ad, from `ccfm generate`)
    profile: str = "full"  # cell-eval metric profile: full | minimal | vcc
    baseline_runs: tuple[Path, ...] = ()  # other run folders (e.g. `--latent none`) scored from RUN_i/predictions.h5ad
    baselines: tuple[str, ...] = ("control", "perturbation_mean", "additive", "train_mean")  # built-in baselines
    out: Path | None = None  # report folder (default: RUN/eval)
    seed: int = 0  # seeds the control cells each built-in baseline perturbation starts from
    num_threads: int = 1  # threads for cell-eval's differential expression (pdex)
    overwrite: bool = False  # replace an existing report folder

    def __post_init__(self) -> None:
        one_of(self.profile, "--profile", ("full", "minimal", "vcc"))
        int_in(self.num_threads, "--threads", 1, 256)
        int_in(self.seed, "--seed", 0, MAX_SEED)
