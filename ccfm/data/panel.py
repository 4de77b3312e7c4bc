"""The gene panel: top highly variable genes plus every perturbed gene that is measured.

HVGs are label-free and computed on the whole data set by default (as GEARS, CPA and scDFM do),
so one latent cache serves every split and fold; `controls` computes them on control cells only.
Genes are never selected on held-out cells alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd
import scipy.sparse as sp

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


@dataclass(frozen=True)
class GeneDispersion:
    """Per-gene statistics of scanpy's `seurat` flavor, on the count scale of log1p data."""

    means: np.ndarray  # (G,) log1p of the mean of expm1(x)
    dispersions: np.ndarray  # (G,) log of variance / mean of expm1(x); NaN where that ratio is ≤ 0
    dispersions_norm: np.ndarray  # (G,) dispersions standardized within their mean bin; NaN if undefined


def _column_mean(x: np.ndarray | sp.csr_matrix, squared: bool) -> np.ndarray:
    """(G,) float64 mean of each column of `x` (or of its square, taken in x's own dtype as scanpy does)."""
    if sp.issparse(x):
        values = x.data * x.data if squared else x.data
        # bincount adds in the order of the stored entries, as scanpy's one-thread CSR kernel does
        return np.bincount(x.indices, weights=values, minlength=x.shape[1]) / x.shape[0]
    return (x * x if squared else x).mean(axis=0, dtype=np.float64)


def seurat_dispersion(log_expression: np.ndarray | sp.spmatrix, n_bins: int) -> GeneDispersion:
    """scanpy's `highly_variable_genes(flavor="seurat", n_bins=n_bins)` statistics, without scanpy.

    `log_expression` (N, G) is log1p data, dense or sparse; a sparse one is never densified.
    """
    if sp.issparse(log_expression):
        log_csr = sp.csr_matrix(log_expression)  # (N, G) no copy if it is CSR already
        counts = sp.csr_matrix((np.expm1(log_csr.data), log_csr.indices, log_csr.indptr), shape=log_csr.shape)
    else:
        counts = np.expm1(np.asarray(log_expression))  # (N, G)
    n_cells = counts.shape[0]
    mean = _column_mean(counts, squared=False)  # (G,)
    var = _column_mean(counts, squared=True) - mean**2  # (G,) may be a hair off 0 for a constant gene
    if n_cells != 1:
        var *= n_cells / (n_cells - 1)  # unbiased, as R and scanpy
    mean[mean == 0] = 1e-12  # an all-zero gene: dispersion 0, then NaN; its mean bins at log1p(1e-12)
    with np.errstate(divide="ignore", invalid="ignore"):
        dispersion = var / mean
        dispersion[dispersion == 0] = np.nan
        dispersion = np.log(dispersion)  # a negative variance from cancellation gives NaN too
    log_mean = np.log1p(mean)
    # pandas does the binning and the per-bin mean / std (ddof 1, NaN skipped), so they are scanpy's own arithmetic
    frame = pd.DataFrame({"dispersion": dispersion, "bin": pd.cut(log_mean, bins=n_bins, labels=False)})
    per_bin = frame.groupby("bin")["dispersion"].agg(["mean", "std"])
    # a bin with < 2 finite dispersions has no std: scanpy divides by its mean with a centre of 0 instead,
    # so its one gene scores 1 (NaN if its log dispersion is exactly 0)
    lone = per_bin["std"].isna()
    per_bin.loc[lone, "std"] = per_bin.loc[lone, "mean"]
    per_bin.loc[lone, "mean"] = 0.0
    centre = per_bin["mean"].reindex(frame["bin"]).to_numpy()  # (G,)
    scale = per_bin["std"].reindex(frame["bin"]).to_numpy()  # (G,)
    with np.errstate(divide="ignore", invalid="ignore"):
        norm = (dispersion - centre) / scale
    return GeneDispersion(means=log_mean, dispersions=dispersion, dispersions_norm=norm)


def _dispersion_rank(data: PerturbationData, rows: np.ndarray) -> np.ndarray:
    """Column indices ordered by normalized dispersion, most variable first, genes without one (NaN) last.

    The dispersion reproduces scanpy's `seurat` flavor of `highly_variable_genes` (see `seurat_dispersion`),
    so panels chosen before scanpy was dropped stay the same. NaN marks all-zero genes and constant genes
    whose float32 variance rounds to ≤ 0; a constant gene whose variance rounds above 0 ranks low but finite.
    """
    # scanpy's 20 mean bins, but ≥ ~10 genes a bin: a lone gene's normalized dispersion is meaningless
    n_bins = max(1, min(20, data.n_genes // 10))
    dispersion = seurat_dispersion(data.expression[rows], n_bins).dispersions_norm
    dispersion = np.nan_to_num(dispersion, nan=-np.inf)  # genes without a dispersion rank last
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
