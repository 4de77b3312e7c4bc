"""The model's configs: what a checkpoint records (ModelConfig), the presets, and the knobs a user chooses."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

from ccfm.config.checks import int_in, one_of, real_in
from ccfm.errors import CCFMError

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
    "latent_prior_tokens": False,
}


def _latent_prior_checks(latent_target: str, latent_source: str, prior_tokens: bool) -> None:
    if latent_target == "residual" and latent_source != "prior":
        raise CCFMError(
            "--latent-target residual predicts the clean latent's difference from the latent prior: it needs "
            "--latent-source prior (or use --latent-target clean)."
        )
    if prior_tokens and latent_source != "prior":
        raise CCFMError("--latent-prior-tokens gives tokens the latent prior's mean: it needs --latent-source prior")


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
    latent_prior_tokens: bool = False  # latent prior source: each token also reads its gene's prior mean code

    def __post_init__(self) -> None:
        one_of(self.latent, "--latent", ("scgpt", "none"))
        one_of(self.source, "--source", SOURCES)
        real_in(self.source_noise, "--source-noise", 0, 10)
        real_in(self.time_scale, "time_scale", 0, open_low=True)
        int_in(self.latent_pca, "--latent-pca", 0, self.latent_dim)
        one_of(self.latent_source, "--latent-source", LATENT_SOURCES)
        real_in(self.latent_source_noise, "--latent-source-noise", 0, 10)
        one_of(self.latent_target, "--latent-target", LATENT_TARGETS)
        _latent_prior_checks(self.latent_target, self.latent_source, self.latent_prior_tokens)

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
    latent_prior_tokens: bool = True  # each token also reads its gene's latent prior mean code (prior source only)
    source: Literal["noise", "control", "prior"] = "prior"  # the flow's x0: N(0, I), control + noise, or prior
    source_noise: float = 0.1  # std of the noise added to the control / prior source
    target_flag: bool = True  # the perturbed genes' own tokens carry a learned target vector
    shift_tokens: bool = True  # every token reads its gene's prior shift under the perturbation
    interaction_head: bool = True  # prior source: + an interaction fitted on the training doubles' pseudobulk

    def __post_init__(self) -> None:
        one_of(self.preset, "--preset", tuple(MODEL_PRESETS))
        one_of(self.latent, "--latent", ("scgpt", "none"))
        one_of(self.latent_target, "--latent-target", LATENT_TARGETS)
        int_in(self.latent_pca, "--latent-pca", 0)
        one_of(self.latent_source, "--latent-source", LATENT_SOURCES)
        real_in(self.latent_source_noise, "--latent-source-noise", 0, 10)
        one_of(self.source, "--source", SOURCES)
        real_in(self.source_noise, "--source-noise", 0, 10)
        _latent_prior_checks(self.latent_target, self.latent_source, False)  # prior tokens: off without the prior

    def build(self, n_genes: int, n_drugs: int, latent_dim: int) -> ModelConfig:
        """The model's config for a data set's vocabularies and a store's feature width D."""
        knobs = dataclasses.asdict(self)
        preset = dataclasses.asdict(MODEL_PRESETS[knobs.pop("preset")])
        pca = self.latent_pca if self.latent == "scgpt" and self.latent_pca < latent_dim else 0  # ≥ D: all of D
        knobs["latent_prior_tokens"] = self.latent_prior_tokens and self.latent_source == "prior"
        return ModelConfig(
            n_genes=n_genes, n_drugs=n_drugs, latent_dim=latent_dim, **{**knobs, "latent_pca": pca}, **preset
        )
