"""The gene panel: top highly variable genes plus every perturbed gene that is measured.

HVGs are label-free and computed on the whole data set by default (as GEARS, CPA and scDFM do),
so one latent cache serves every split and fold; `controls` computes them on control cells only.
Genes are never selected on held-out cells alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import anndata as ad
import numpy as np
import pandas as pd
import scanpy as sc

from ccfm.data.loading import PerturbationData
from ccfm.errors import CCFMError

PanelCells = Literal["all", "controls"]


@dataclass(frozen=True)
class GenePanel:
    """G genes in the data set's own column order."""

    symbols: tuple[str, ...]  # (G,) gene symbols
    columns: tuple[int, ...]  # (G,) column of each gene in the data set's expression
    perturbed: tuple[bool, ...]  # (G,) the gene is a perturbation target
    cells: PanelCells  # which cells the HVGs came from

    def __len__(self) -> int:
        return len(self.symbols)

    def to_json(self) -> dict:
        return {"symbols": list(self.symbols), "perturbed": list(self.perturbed), "cells": self.cells}

    def index_in(self, data: PerturbationData) -> np.ndarray:
        """Columns of this panel's genes in `data`; refuses data that lacks any of them."""
        return panel_columns(data, list(self.symbols))


def panel_columns(data: PerturbationData, symbols: list[str]) -> np.ndarray:
    """(G,) column of each panel gene in `data`; refuses data that lack any of them."""
    where = {g: i for i, g in enumerate(data.gene_symbols.tolist())}
    missing = [g for g in symbols if g not in where]
    if missing:
        raise CCFMError(
            f"{len(missing)} panel genes are not in {data.source} (e.g. {', '.join(missing[:5])}); "
            "use the data set the panel was chosen on, or re-run `ccfm extract` on this one"
        )
    return np.array([where[g] for g in symbols], dtype=np.int64)


def _dispersion_rank(data: PerturbationData, rows: np.ndarray) -> np.ndarray:
    """Column indices ordered by scanpy's `seurat` normalized dispersion, most variable first."""
    view = ad.AnnData(X=data.expression[rows])
    # scanpy's 20 mean bins, but ≥ ~10 genes a bin: a lone gene's normalized dispersion is meaningless
    n_bins = max(1, min(20, data.n_genes // 10))
    stats: pd.DataFrame = sc.pp.highly_variable_genes(view, flavor="seurat", n_bins=n_bins, inplace=False)
    dispersion = stats["dispersions_norm"].to_numpy(dtype=np.float64)
    dispersion = np.nan_to_num(dispersion, nan=-np.inf)  # constant genes rank last
    return np.argsort(-dispersion, kind="stable")


def choose_panel(data: PerturbationData, n_genes: int = 1000, cells: PanelCells = "all") -> GenePanel:
    """Top HVGs plus measured perturbed genes, `n_genes` in all (or every gene if the data has fewer)."""
    rows = data.control_indices() if cells == "controls" else np.arange(data.n_cells)
    symbol_col = {g: i for i, g in enumerate(data.gene_symbols.tolist())}
    forced = [symbol_col[g] for g in data.perturbed_genes()]
    if len(forced) > n_genes:
        raise CCFMError(
            f"the data perturb {len(forced)} measured genes but --genes is {n_genes}; "
            f"raise --genes to at least {len(forced)} so every target is in the panel"
        )
    chosen = set(forced)
    for col in _dispersion_rank(data, rows):
        if len(chosen) >= min(n_genes, data.n_genes):
            break
        chosen.add(int(col))
    columns = sorted(chosen)
    forced_set = set(forced)
    return GenePanel(
        symbols=tuple(str(data.gene_symbols[c]) for c in columns),
        columns=tuple(columns),
        perturbed=tuple(c in forced_set for c in columns),
        cells=cells,
    )
