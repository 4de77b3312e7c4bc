"""Configs of the stages that make inputs: simulated data, the toy and the released scGPT, the latent store."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from ccfm.config.checks import MAX_SEED, int_in, need, one_of, real_in


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
        one_of(self.kind, "the data set", ("norman", "combosciplex"))
        real_in(self.scale, "--scale", 0, 1, open_low=True)
        int_in(self.seed, "--seed", 0, MAX_SEED)
        int_in(self.min_cells, "--min-cells", 2, 10_000)
        one_of(self.interactions, "--interactions", ("random", "modules"))
        need(self.kind == "norman" or self.interactions == "random", "--interactions",
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
        int_in(self.d_model, "--d-model", 1, 4096)
        int_in(self.layers, "--layers", 1, 48)
        int_in(self.heads, "--heads", 1, 64)
        need(self.d_model % self.heads == 0, "--d-model", f"a multiple of --heads {self.heads}", self.d_model)
        real_in(self.minutes, "--minutes", 0, 24 * 60, open_low=True)
        int_in(self.seed, "--seed", 0, MAX_SEED)


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
        int_in(self.n_genes, "--genes", 2)  # at most the data's genes: checked when the panel is chosen
        one_of(self.panel_cells, "--panel-cells", ("all", "controls"))
        int_in(self.batch_size, "--batch-size", 1, 65_536)
        int_in(self.norm_cells, "--norm-cells", 1)
        real_in(self.target_std, "target_std", 0, open_low=True)
        int_in(self.shard_cells, "--shard-cells", 1, 65_536)
        int_in(self.seed, "--seed", 0, MAX_SEED)

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
        real_in(self.timeout, "--timeout", 0, 3600, open_low=True)
