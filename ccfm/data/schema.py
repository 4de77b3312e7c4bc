"""Which kind of perturbation h5ad a file is, and where its labels, control and genes live."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import anndata as ad
import numpy as np

from ccfm.config import SchemaOverrides
from ccfm.data.conditions import CONTROL_LABELS
from ccfm.errors import CCFMError

SchemaKind = Literal["gears_norman", "scdfm_norman", "combosciplex", "cell_eval", "custom"]

#: Perturbation columns recognised without `--pert-col`, in order of preference.
PERT_COL_CANDIDATES = ("condition", "target_gene", "target", "perturbation", "gene")


@dataclass(frozen=True)
class DatasetSchema:
    """Where a data set keeps what CCFM needs."""

    kind: SchemaKind  # which known layout was detected
    pert_col: str  # obs column with the perturbation label of each cell
    control_label: str  # value of `pert_col` that marks control cells
    gene_col: str | None  # var column with gene symbols; None means var_names are symbols
    counts_layer: str | None  # layer with raw counts, if any


def _is_ensembl(names: np.ndarray) -> bool:
    sample = [str(n) for n in names[: min(50, len(names))]]
    return bool(sample) and sum(n.startswith("ENS") for n in sample) > len(sample) // 2


def _detect_kind(obs_cols: set[str], pert_col: str, has_gene_name: bool, ensembl: bool) -> SchemaKind:
    if {"Drug1", "Drug2"} <= obs_cols:
        return "combosciplex"
    if pert_col in ("target_gene", "target"):
        return "cell_eval"
    if pert_col == "condition":
        return "gears_norman" if (has_gene_name and ensembl) else "scdfm_norman"
    return "custom"


def _pick_pert_col(adata: ad.AnnData, requested: str | None) -> str:
    cols = [str(c) for c in adata.obs.columns]
    if requested is not None:
        if requested not in adata.obs:
            raise CCFMError(
                f"perturbation column {requested!r} is not in obs (columns: {', '.join(cols) or 'none'}); "
                "pass the right name with --pert-col"
            )
        return requested
    for name in PERT_COL_CANDIDATES:
        if name in adata.obs:
            return name
    raise CCFMError(
        f"no perturbation column found in obs (looked for {', '.join(PERT_COL_CANDIDATES)}; "
        f"columns present: {', '.join(cols) or 'none'}); name it with --pert-col"
    )


def _pick_control(labels: set[str], pert_col: str, requested: str | None) -> str:
    if requested is not None:
        if requested not in labels:
            shown = ", ".join(sorted(labels)[:8])
            raise CCFMError(
                f"control label {requested!r} not found in obs[{pert_col!r}] (labels include: {shown}); "
                "pass the label your control cells carry with --control"
            )
        return requested
    for name in CONTROL_LABELS:
        if name in labels:
            return name
    raise CCFMError(
        f"no control cells found in obs[{pert_col!r}] (looked for {', '.join(CONTROL_LABELS)}); "
        "pass the label your control cells carry with --control"
    )


def _pick_counts_layer(adata: ad.AnnData, requested: str | None) -> str | None:
    if requested is not None:
        if requested not in adata.layers:
            present = ", ".join(adata.layers.keys()) or "none"
            raise CCFMError(f"counts layer {requested!r} not found (layers: {present}); fix --counts-layer or omit it")
        return requested
    return "counts" if "counts" in adata.layers else None


def detect_schema(adata: ad.AnnData, overrides: SchemaOverrides | None = None) -> DatasetSchema:
    """Detect the layout of `adata`; every field can be forced through `overrides`."""
    overrides = overrides or SchemaOverrides()
    pert_col = _pick_pert_col(adata, overrides.pert_col)
    if adata.obs[pert_col].isna().all():
        raise CCFMError(
            f"obs[{pert_col!r}] has no labels: all {adata.n_obs} cells are missing (NaN); is --pert-col the "
            "right column?"
        )
    labels = set(adata.obs[pert_col].astype(str).unique())
    control = _pick_control(labels, pert_col, overrides.control)
    gene_col = overrides.gene_col
    if gene_col is not None and gene_col not in adata.var:
        raise CCFMError(
            f"gene column {gene_col!r} is not in var (columns: {', '.join(map(str, adata.var.columns)) or 'none'}); "
            "fix --gene-col or omit it to use var_names"
        )
    ensembl = _is_ensembl(np.asarray(adata.var_names))
    if gene_col is None and ensembl and "gene_name" in adata.var:
        gene_col = "gene_name"  # GEARS keeps Ensembl ids in the index and symbols here
    kind = _detect_kind(set(adata.obs.columns), pert_col, "gene_name" in adata.var, ensembl)
    return DatasetSchema(
        kind=kind,
        pert_col=pert_col,
        control_label=control,
        gene_col=gene_col,
        counts_layer=_pick_counts_layer(adata, overrides.counts_layer),
    )
