"""`ccfm train`'s config: the data, the split, the model knobs, the objective and its cascade times, the loop."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from ccfm.config.checks import MAX_SEED, int_in, one_of, real_in
from ccfm.config.data import SchemaOverrides
from ccfm.config.model import T_DISTS, T_LATENT_FOR_EXPR, ModelKnobs
from ccfm.data.splits import MAX_FOLDS, SPLIT_KINDS
from ccfm.errors import CCFMError


@dataclass(frozen=True)
class CascadeTimeConfig:
    """How training times are drawn (Latent Forcing's cascade; ccfm/flow/time_sampling.py)."""

    latent_first_prob: float = 0.4  # p: share of samples that train the latent stream
    t_latent_for_expr: Literal["clean", "late"] = "clean"  # expression samples' t_latent: 1 or U(0.75, 1)
    t_dist: Literal["uniform", "logit_normal"] = "uniform"  # U(0, 1) or sigmoid(N(0, 1)) for trained times

    def __post_init__(self) -> None:
        real_in(self.latent_first_prob, "--latent-first-prob", 0, 1)
        one_of(self.t_latent_for_expr, "--t-latent-for-expr", T_LATENT_FOR_EXPR)
        one_of(self.t_dist, "t_dist", T_DISTS)


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
    latent_residual_weight: float = 0.0  # the same penalty on the latent velocity (latent prior source only): keeps
    # the generated latent's mean near the additive latent unless the data pull it away
    coupling: Literal["independent", "ot"] = "independent"  # source→target pairing (ccfm/flow/coupling.py)

    def __post_init__(self) -> None:
        real_in(self.latent_weight, "--latent-weight", 0)
        one_of(self.latent_loss, "--latent-loss", ("velocity", "clean"))
        real_in(self.mmd_weight, "mmd_weight", 0)
        real_in(self.cfg_dropout, "--cfg-dropout", 0, 0.99)
        real_in(self.residual_weight, "--residual-weight", 0)
        real_in(self.latent_residual_weight, "--latent-residual-weight", 0)
        if self.latent_residual_weight > 0 and self.latent_loss == "clean":
            raise CCFMError("--latent-residual-weight penalizes latent velocities: use it with --latent-loss velocity")
        one_of(self.coupling, "--coupling", ("independent", "ot"))


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
        one_of(self.split, "--split", SPLIT_KINDS)
        fixed = self.split in ("combosciplex", "file")
        int_in(self.fold, "--fold", 0, 0 if fixed else MAX_FOLDS - 1)  # fixed splits have one fold
        int_in(self.split_seed, "--split-seed", 0, MAX_SEED)
        real_in(self.test_fraction, "test_fraction", 0, 0.95, open_low=True)
        int_in(self.steps, "--steps", 1)
        int_in(self.batch_size, "--batch-size", 2)  # at most the cells of the data: checked on loading
        int_in(self.pert_cells, "--pert-cells", 2)  # the MMD of a perturbation needs 2 of its cells
        real_in(self.lr, "--lr", 0, 1, open_low=True)
        real_in(self.lr_min, "lr_min", 0, self.lr)
        int_in(self.warmup_steps, "warmup_steps", 0)
        real_in(self.grad_clip, "grad_clip", 0, open_low=True)
        real_in(self.ema_decay, "ema_decay", 0, 0.999_999)
        if self.gene_subset is not None:
            int_in(self.gene_subset, "gene_subset", 1)
        int_in(self.checkpoint_every, "--checkpoint-every", 1)
        int_in(self.workers, "--workers", 0, 64)
        int_in(self.seed, "--seed", 0, MAX_SEED)
        if self.objective.latent_residual_weight > 0 and self.model.latent_source != "prior":
            raise CCFMError("--latent-residual-weight keeps the latent near its prior: it needs --latent-source prior")

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
