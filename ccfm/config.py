"""Frozen, typed configurations: one per pipeline stage, serialized as JSON into every artifact."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal


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
    overwrite: bool = False  # replace an existing output file


@dataclass(frozen=True)
class ToyScgptConfig:
    """`ccfm toy-scgpt`: a randomly initialized scGPT checkpoint in the released whole-human layout."""

    out: Path  # folder to write best_model.pt, vocab.json, args.json into
    d_model: int = 64  # embsize (released: 512)
    layers: int = 2  # nlayers (released: 12)
    heads: int = 4  # nheads (released: 8)
    genes_from: Path | None = None  # h5ad whose gene symbols must be in the vocab (else the whole census vocab)
    seed: int = 0  # seeds the random weights
    overwrite: bool = False  # replace an existing folder
