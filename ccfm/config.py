"""Frozen, typed configurations: one per pipeline stage, serialized as JSON into every artifact."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from ccfm.data.splits import MAX_FOLDS, SPLIT_KINDS
from ccfm.errors import CCFMError

MAX_SEED = 2**32 - 1  # numpy and torch generators take seeds in [0, 2**32)


def _need(ok: bool, option: str, rule: str, value: Any) -> None:
    """Refuse an option value outside its range: one line naming the option, the rule and what arrived."""
    if not ok:
        raise CCFMError(f"{option} must be {rule}, got {value!r}")


def _int_in(value: int, option: str, low: int, high: int | None = None) -> None:
    rule = f"an integer in [{low}, {high}]" if high is not None else f"an integer ≥ {low}"
    ok = isinstance(value, int) and value >= low and (high is None or value <= high)
    _need(ok, option, rule, value)


def _real_in(value: float, option: str, low: float, high: float | None = None, *, open_low: bool = False) -> None:
    bracket = "(" if open_low else "["
    rule = f"a number in {bracket}{low}, {high}]" if high is not None else f"a number {'>' if open_low else '≥'} {low}"
    ok = isinstance(value, (int, float)) and math.isfinite(value)
    ok = ok and (value > low if open_low else value >= low) and (high is None or value <= high)
    _need(ok, option, rule, value)


def _one_of(value: str, option: str, choices: tuple[str, ...]) -> None:
    _need(value in choices, option, f"one of {', '.join(choices)}", value)


def to_json_dict(cfg: Any) -> dict[str, Any]:
    """A config as plain JSON types (Paths become strings, tuples lists)."""

    def convert(value: Any) -> Any:
        if isinstance(value, Path):
            return str(value)
        if isinstance(value, (list, tuple)):
            return [convert(v) for v in value]
        if isinstance(value, dict):
            return {k: convert(v) for k, v in value.items()}
        return value

    return {k: convert(v) for k, v in dataclasses.asdict(cfg).items()}


@dataclass(frozen=True)
class SchemaOverrides:
    """User overrides for schema detection; `None` means detect."""

    pert_col: str | None = None  # obs column holding the perturbation label
    control: str | None = None  # the control label in that column
    gene_col: str | None = None  # var column holding gene symbols (else var_names)
    counts_layer: str | None = None  # layer holding raw counts


@dataclass(frozen=True)
class SimulateConfig:
    """`ccfm simulate`: a labelled stand-in data set shaped by real metadata."""

    kind: Literal["norman", "combosciplex"]  # which data set to imitate
    out: Path  # the .h5ad file to write
    scale: float = 0.05  # fraction of the real per-condition cell counts
    seed: int = 0  # seeds every random draw
    min_cells: int = 5  # floor on cells per condition after scaling
    interactions: Literal["random", "modules"] = "random"  # how doubles deviate from additivity (norman only)
    overwrite: bool = False  # replace an existing output file

    def __post_init__(self) -> None:
        _one_of(self.kind, "the data set", ("norman", "combosciplex"))
        _real_in(self.scale, "--scale", 0, 1, open_low=True)
        _int_in(self.seed, "--seed", 0, MAX_SEED)
        _int_in(self.min_cells, "--min-cells", 2, 10_000)
        _one_of(self.interactions, "--interactions", ("random", "modules"))
        _need(self.kind == "norman" or self.interactions == "random", "--interactions",
              "random for combosciplex (the modules rule is simulated for norman)", self.interactions)  # fmt: skip


@dataclass(frozen=True)
class ToyScgptConfig:
    """`ccfm toy-scgpt`: a toy scGPT checkpoint in the released whole-human layout, random or briefly pretrained."""

    out: Path  # folder to write best_model.pt, vocab.json, args.json into
    d_model: int = 64  # embsize (released: 512)
    layers: int = 2  # nlayers (released: 12)
    heads: int = 4  # nheads (released: 8)
    genes_from: Path | None = None  # h5ad whose gene symbols must be in the vocab (else the whole census vocab)
    pretrain: Path | None = None  # h5ad whose control cells train it (masked expression); None: random weights
    minutes: float = 3.0  # wall-clock pretraining budget
    seed: int = 0  # seeds the random weights (and the pretraining's draws)
    overwrite: bool = False  # replace an existing folder

    def __post_init__(self) -> None:
        _int_in(self.d_model, "--d-model", 1, 4096)
        _int_in(self.layers, "--layers", 1, 48)
        _int_in(self.heads, "--heads", 1, 64)
        _need(self.d_model % self.heads == 0, "--d-model", f"a multiple of --heads {self.heads}", self.d_model)
        _real_in(self.minutes, "--minutes", 0, 24 * 60, open_low=True)
        _int_in(self.seed, "--seed", 0, MAX_SEED)


@dataclass(frozen=True)
class ExtractConfig:
    """`ccfm extract`: frozen scGPT features for every cell, normalized, in a sharded zarr store."""

    data: Path  # perturbation .h5ad
    scgpt: Path  # scGPT checkpoint folder (best_model.pt, vocab.json, args.json)
    out: Path  # the store folder to write
    schema: SchemaOverrides = SchemaOverrides()  # where labels, control and genes live
    n_genes: int = 1000  # G: top HVGs plus measured perturbed genes
    panel_cells: Literal["all", "controls"] = "all"  # cells the HVGs are computed on
    batch_size: int = 32  # cells per scGPT forward pass
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    resume: bool = False  # continue an interrupted store: redo incomplete shards only
    overwrite: bool = False  # delete an existing store first
    break_lock: bool = False  # take over a lock whose holder cannot be verified (another host)
    norm_cells: int = 4096  # cells sampled (seeded) for the frozen normalization statistics
    target_std: float = 1.0  # std of normalized features on covered positions
    shard_cells: int = 256  # cells per zarr shard (the unit of writing and resuming)
    seed: int = 0  # seeds binning tie-breaks and the normalization sample

    def __post_init__(self) -> None:
        _int_in(self.n_genes, "--genes", 2)  # at most the data's genes: checked when the panel is chosen
        _one_of(self.panel_cells, "--panel-cells", ("all", "controls"))
        _int_in(self.batch_size, "--batch-size", 1, 65_536)
        _int_in(self.norm_cells, "--norm-cells", 1)
        _real_in(self.target_std, "target_std", 0, open_low=True)
        _int_in(self.shard_cells, "--shard-cells", 1, 65_536)
        _int_in(self.seed, "--seed", 0, MAX_SEED)

    def fingerprint_settings(self) -> dict[str, Any]:
        """Settings that change the stored bytes (batch size and device only move fp16 rounding)."""
        return {
            "n_genes": self.n_genes,
            "panel_cells": self.panel_cells,
            "norm_cells": self.norm_cells,
            "target_std": self.target_std,
            "shard_cells": self.shard_cells,
            "seed": self.seed,
        }


SOURCES = ("noise", "control", "prior")
LATENT_SOURCES = ("noise", "prior")
LATENT_TARGETS = ("velocity", "clean", "residual")  # what the latent head predicts (ccfm/model/cascade.py)
T_LATENT_FOR_EXPR = ("clean", "late")  # expression samples' t_latent: 1, or U(0.75, 1) (ccfm/flow/time_sampling.py)
T_DISTS = ("uniform", "logit_normal")
ODE_METHODS = ("euler", "rk4")

#: Model fields added after the first runs were written, with the behaviour those runs had.
LEGACY_MODEL_FIELDS: dict[str, Any] = {
    "target_flag": False,
    "shift_tokens": False,
    "interaction_head": False,
    "time_scale": 1.0,
    "source": "noise",
    "source_noise": 1.0,
}


def _residual_needs_prior(latent_target: str, latent_source: str) -> None:
    if latent_target == "residual" and latent_source != "prior":
        raise CCFMError(
            "--latent-target residual predicts the clean latent's difference from the latent prior: it needs "
            "--latent-source prior (or use --latent-target clean)."
        )


@dataclass(frozen=True)
class ModelConfig:
    """The built model (scDFM backbone + Latent Forcing latent stream), as every checkpoint records it.

    Training builds it from ModelKnobs (`ModelKnobs.build`); its own defaults describe a model built on its own
    (tests, benchmarks): no PCA, no prior — and LEGACY_MODEL_FIELDS what runs from before a field was trained with.
    """

    n_genes: int  # gene vocabulary: panel genes + perturbed genes outside the panel
    n_drugs: int = 0  # drug table size (0 for CRISPR data)
    latent_dim: int = 512  # D, scGPT feature width (unused when latent == "none")
    latent: Literal["scgpt", "none"] = "scgpt"  # "none" is the scDFM-equivalent ablation
    d_model: int = 128  # H, hidden width
    heads: int = 8  # attention heads
    layers: int = 4  # backbone layers (modulation + adapter + differential perceiver)
    latent_bottleneck: int = 128  # latent embedder D -> bottleneck -> H
    latent_head_blocks: int = 2  # adaLN blocks in the latent head
    latent_target: Literal["velocity", "clean", "residual"] = "velocity"  # latent head output (cascade.py); old runs
    dropout: float = 0.1  # adapter dropout (off in eval mode)
    graph_k: int = 30  # neighbours per gene in the co-expression graph
    value_clamp: float = 512.0  # value encoders clamp inputs at this
    target_flag: bool = True  # a perturbed gene's own token carries a learned "target" vector (as GEARS, scGPT)
    shift_tokens: bool = True  # each token also reads its gene's prior shift Σ Δ(token) (genes and drugs alike)
    interaction_head: bool = True  # prior source: + an interaction on what the components move together (source.py)
    time_scale: float = 1000.0  # flow time × this before the sinusoids: raw t in [0, 1] moves a quarter of them
    source: Literal["noise", "control", "prior"] = "prior"  # the flow's x0 (ccfm/model/source.py)
    source_noise: float = 0.1  # std of the Gaussian added to the control or prior source (noise: N(0, I))
    # The latent space's tables are fitted on training cells (pipeline/train_setup.fit_latent_space), so a model
    # built on its own has neither a PCA nor a prior (which is also what runs before them were trained with).
    latent_pca: int = 0  # k: the latent flows as k PCA components per gene (ccfm/model/latent_space.py); 0: all D
    latent_source: Literal["noise", "prior"] = "noise"  # the latent flow's z0: N(0, I), or control + Σ code shifts
    latent_source_noise: float = 1.0  # std of the Gaussian added to the latent prior source

    def __post_init__(self) -> None:
        _one_of(self.latent, "--latent", ("scgpt", "none"))
        _one_of(self.source, "--source", SOURCES)
        _real_in(self.source_noise, "--source-noise", 0, 10)
        _real_in(self.time_scale, "time_scale", 0, open_low=True)
        _int_in(self.latent_pca, "--latent-pca", 0, self.latent_dim)
        _one_of(self.latent_source, "--latent-source", LATENT_SOURCES)
        _real_in(self.latent_source_noise, "--latent-source-noise", 0, 10)
        _one_of(self.latent_target, "--latent-target", LATENT_TARGETS)
        _residual_needs_prior(self.latent_target, self.latent_source)

    @property
    def latent_width(self) -> int:
        """K, the numbers per gene the latent stream generates: the PCA components, or the full D."""
        return self.latent_pca if self.latent_pca > 0 else self.latent_dim

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> ModelConfig:
        """A run's recorded model config; fields it predates take the value such runs were trained with."""
        return cls(**{**LEGACY_MODEL_FIELDS, **raw})


@dataclass(frozen=True)
class ModelPreset:
    """The network's size; `ccfm train --preset` chooses one of MODEL_PRESETS."""

    d_model: int  # H, hidden width
    heads: int  # attention heads
    layers: int  # backbone layers
    latent_bottleneck: int  # latent embedder D -> bottleneck -> H
    latent_head_blocks: int  # adaLN blocks in the latent head


MODEL_PRESETS: dict[str, ModelPreset] = {
    "tiny": ModelPreset(d_model=32, heads=4, layers=2, latent_bottleneck=32, latent_head_blocks=1),
    "base": ModelPreset(d_model=128, heads=8, layers=4, latent_bottleneck=128, latent_head_blocks=2),
}


@dataclass(frozen=True)
class ModelKnobs:
    """What a user chooses about the model (`ccfm train`); ModelConfig adds what the data decide (the gene and
    drug vocabularies, the scGPT width D). The defaults are the settings the quality study picked."""

    preset: str = "base"  # a MODEL_PRESETS name: tiny | base
    latent: Literal["scgpt", "none"] = "scgpt"  # "none" trains the scDFM-equivalent ablation
    latent_target: Literal["velocity", "clean", "residual"] = "clean"  # the latent head's output (cascade.py)
    latent_pca: int = 32  # PCA components per gene the latent flows as; 0 or ≥ D: all D features
    latent_source: Literal["noise", "prior"] = "prior"  # the latent flow's z0: N(0, I) or control + Σ code shifts
    latent_source_noise: float = 1.0  # std of the noise added to the latent prior source
    source: Literal["noise", "control", "prior"] = "prior"  # the flow's x0: N(0, I), control + noise, or prior
    source_noise: float = 0.1  # std of the noise added to the control / prior source
    target_flag: bool = True  # the perturbed genes' own tokens carry a learned target vector
    shift_tokens: bool = True  # every token reads its gene's prior shift under the perturbation
    interaction_head: bool = True  # prior source: + an interaction fitted on the training doubles' pseudobulk

    def __post_init__(self) -> None:
        _one_of(self.preset, "--preset", tuple(MODEL_PRESETS))
        _one_of(self.latent, "--latent", ("scgpt", "none"))
        _one_of(self.latent_target, "--latent-target", LATENT_TARGETS)
        _int_in(self.latent_pca, "--latent-pca", 0)
        _one_of(self.latent_source, "--latent-source", LATENT_SOURCES)
        _real_in(self.latent_source_noise, "--latent-source-noise", 0, 10)
        _one_of(self.source, "--source", SOURCES)
        _real_in(self.source_noise, "--source-noise", 0, 10)
        _residual_needs_prior(self.latent_target, self.latent_source)

    def build(self, n_genes: int, n_drugs: int, latent_dim: int) -> ModelConfig:
        """The model's config for a data set's vocabularies and a store's feature width D."""
        knobs = dataclasses.asdict(self)
        preset = dataclasses.asdict(MODEL_PRESETS[knobs.pop("preset")])
        pca = self.latent_pca if self.latent == "scgpt" and self.latent_pca < latent_dim else 0  # ≥ D: all of D
        return ModelConfig(
            n_genes=n_genes, n_drugs=n_drugs, latent_dim=latent_dim, **{**knobs, "latent_pca": pca}, **preset
        )


@dataclass(frozen=True)
class CascadeTimeConfig:
    """How training times are drawn (Latent Forcing's cascade; ccfm/flow/time_sampling.py)."""

    latent_first_prob: float = 0.4  # p: share of samples that train the latent stream
    t_latent_for_expr: Literal["clean", "late"] = "clean"  # expression samples' t_latent: 1 or U(0.75, 1)
    t_dist: Literal["uniform", "logit_normal"] = "uniform"  # U(0, 1) or sigmoid(N(0, 1)) for trained times

    def __post_init__(self) -> None:
        _real_in(self.latent_first_prob, "--latent-first-prob", 0, 1)
        _one_of(self.t_latent_for_expr, "--t-latent-for-expr", T_LATENT_FOR_EXPR)
        _one_of(self.t_dist, "t_dist", T_DISTS)


@dataclass(frozen=True)
class ObjectiveConfig:
    """How a batch becomes a loss (ccfm/flow/objective.py)."""

    times: CascadeTimeConfig = CascadeTimeConfig()  # latent-first share, t_latent of expression samples, t law
    latent_weight: float = 1.0  # weight of the latent MSE
    latent_loss: Literal["velocity", "clean"] = "velocity"  # the latent MSE on velocities, or on the clean latent
    # the head implies (ẑ1 = z_t + (1 − t)·v̂: the velocity loss weighted by (1 − t)², every time alike)
    mmd_weight: float = 0.5  # γ, weight of the MMD² term
    cfg_dropout: float = 0.0  # share of samples trained with the null label (for classifier-free guidance)
    residual_weight: float = 10.0  # penalty on each group's mean predicted velocity (prior source only): keeps the
    # learned residual over the prior small
    coupling: Literal["independent", "ot"] = "independent"  # source→target pairing (ccfm/flow/coupling.py)

    def __post_init__(self) -> None:
        _real_in(self.latent_weight, "--latent-weight", 0)
        _one_of(self.latent_loss, "--latent-loss", ("velocity", "clean"))
        _real_in(self.mmd_weight, "mmd_weight", 0)
        _real_in(self.cfg_dropout, "--cfg-dropout", 0, 0.99)
        _real_in(self.residual_weight, "--residual-weight", 0)
        _one_of(self.coupling, "--coupling", ("independent", "ot"))


@dataclass(frozen=True)
class TrainConfig:
    """`ccfm train`: the cascaded model from expression and cached latents."""

    cache: Path  # latent store from `ccfm extract`
    out: Path  # run folder
    data: Path | None = None  # perturbation .h5ad; None: the one the store was extracted from (its record)
    scgpt: Path | None = None  # checkpoint for latents of cells outside the store (on-the-fly fallback)
    schema: SchemaOverrides = SchemaOverrides()  # where labels, control and genes live (None fields: the store's)
    split: str = "additive"  # additive | holdout | unseen-single | combosciplex | file
    fold: int = 0  # fold of the split
    split_seed: int = 0  # seeds the held-out draw
    test_fraction: float = 0.3  # fraction of the pool held out
    split_file: Path | None = None  # test conditions, one per line, for split == "file"
    model: ModelKnobs = ModelKnobs()  # preset, latent stream, flow sources
    objective: ObjectiveConfig = ObjectiveConfig()  # loss terms and the cascade's times
    steps: int = 200_000  # optimizer steps, exactly
    batch_size: int = 48  # target cells (and as many control cells) per step
    pert_cells: int = 6  # cells per perturbation in a batch: it mixes batch_size // this perturbations (≥ 1)
    lr: float = 5e-5  # peak learning rate (Adam)
    lr_min: float = 1e-6  # cosine schedule floor
    warmup_steps: int = 1000  # linear warm-up (capped at a tenth of the steps)
    grad_clip: float = 1.0  # max global gradient norm
    ema_decay: float = 0.999  # EMA of the weights, used for sampling
    gene_subset: int | None = None  # random genes per step (None: the whole panel)
    checkpoint_every: int = 1000  # steps between checkpoints (and one at the end)
    workers: int = 2  # data-loading processes
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    resume: bool = False  # continue from the run folder's last checkpoint
    overwrite: bool = False  # replace an existing run folder (staged beside it, swapped in at the end)
    seed: int = 0  # seeds batches, noise, times and initialization

    def __post_init__(self) -> None:
        _one_of(self.split, "--split", SPLIT_KINDS)
        fixed = self.split in ("combosciplex", "file")
        _int_in(self.fold, "--fold", 0, 0 if fixed else MAX_FOLDS - 1)  # fixed splits have one fold
        _int_in(self.split_seed, "--split-seed", 0, MAX_SEED)
        _real_in(self.test_fraction, "test_fraction", 0, 0.95, open_low=True)
        _int_in(self.steps, "--steps", 1)
        _int_in(self.batch_size, "--batch-size", 2)  # at most the cells of the data: checked on loading
        _int_in(self.pert_cells, "--pert-cells", 2)  # the MMD of a perturbation needs 2 of its cells
        _real_in(self.lr, "--lr", 0, 1, open_low=True)
        _real_in(self.lr_min, "lr_min", 0, self.lr)
        _int_in(self.warmup_steps, "warmup_steps", 0)
        _real_in(self.grad_clip, "grad_clip", 0, open_low=True)
        _real_in(self.ema_decay, "ema_decay", 0, 0.999_999)
        if self.gene_subset is not None:
            _int_in(self.gene_subset, "gene_subset", 1)
        _int_in(self.checkpoint_every, "--checkpoint-every", 1)
        _int_in(self.workers, "--workers", 0, 64)
        _int_in(self.seed, "--seed", 0, MAX_SEED)

    def replace(self, **settings: Any) -> TrainConfig:
        """A copy with settings replaced by name wherever they live: here, in `model`, `objective` or its `times`
        (`cfg.replace(preset="tiny", latent_pca=8, latent_first_prob=0.2)`)."""
        parts: dict[str, dict[str, Any]] = {"model": {}, "objective": {}, "times": {}, "train": {}}
        owners = {"model": ModelKnobs, "objective": ObjectiveConfig, "times": CascadeTimeConfig, "train": TrainConfig}
        for name, value in settings.items():
            part = next((p for p, kind in owners.items() if name in {f.name for f in dataclasses.fields(kind)}), None)
            if part is None or name in ("model", "objective", "times"):
                raise CCFMError(f"TrainConfig has no setting {name!r}")
            parts[part][name] = value
        times = dataclasses.replace(self.objective.times, **parts["times"])
        objective = dataclasses.replace(self.objective, times=times, **parts["objective"])
        model = dataclasses.replace(self.model, **parts["model"])
        return dataclasses.replace(self, model=model, objective=objective, **parts["train"])


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
        _one_of(self.method, "--method", ODE_METHODS)
        _int_in(self.steps, "--steps", 1, 10_000)
        _int_in(self.latent_steps, "--steps", 1, 10_000)
        _real_in(self.guidance_expr, "--guidance-expr", 0, 20)
        _real_in(self.guidance_latent, "--guidance-latent", 0, 20)

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
        _need(matched or (self.cells.isdigit() and 1 <= int(self.cells) <= 1_000_000), "--cells",
              "'matched' or a number of cells in [1, 1000000]", self.cells)  # fmt: skip
        _int_in(self.batch_size, "--batch-size", 1, 65_536)
        _int_in(self.seed, "--seed", 0, MAX_SEED)


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
        _int_in(self.cells, "--cells", 2, 100_000)
        _int_in(self.batch_pairs, "--batch-pairs", 1, 100_000)
        _int_in(self.seed, "--seed", 0, MAX_SEED)


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
        _one_of(self.profile, "--profile", ("full", "minimal", "vcc"))
        _int_in(self.num_threads, "--threads", 1, 256)
        _int_in(self.seed, "--seed", 0, MAX_SEED)


@dataclass(frozen=True)
class FetchScgptConfig:
    """`ccfm fetch-scgpt`: download the released whole-human scGPT checkpoint folder, resumably, and validate it."""

    out: Path  # checkpoint folder to create (best_model.pt, vocab.json, args.json); staged in OUT.partial
    sources: tuple[str, ...] = ()  # a mirror base URL and/or FILE=URL_OR_DRIVE_ID; none: the released Drive files
    sha256: tuple[str, ...] = ()  # FILE=HEX checksums to verify (none are known for the release)
    timeout: float = 60.0  # seconds a connection or a read may stall before it counts as failed
    drive_url: str = "https://drive.usercontent.google.com/download"  # Google Drive's download endpoint
    overwrite: bool = False  # replace an existing checkpoint folder

    def __post_init__(self) -> None:
        _real_in(self.timeout, "--timeout", 0, 3600, open_low=True)
