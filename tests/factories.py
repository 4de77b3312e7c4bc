"""Tiny real AnnData objects in the layouts CCFM reads (no mocks)."""

from __future__ import annotations

from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

GENES = [f"G{i:03d}" for i in range(40)]
#: Real symbols that the scGPT vocabulary holds, for tests that tokenize.
REAL_GENES = [
    "ACTB",
    "GATA1",
    "TAL1",
    "KLF1",
    "CEBPA",
    "SPI1",
    "MYC",
    "GAPDH",
    "HBZ",
    "HBG1",
    "HBG2",
    "GYPA",
    "LST1",
    "AIF1",
    "CD3E",
    "PTMA",
    "NME1",
    "SRM",
    "ENO1",
    "NCL",
    "DDX21",
    "RANBP1",
    "HSPD1",
    "VIM",
    "TMSB4X",
    "CFD",
    "CLC",
    "CSF3R",
    "TYROBP",
    "PNRC1",
    "MS4A3",
    "LAPTM4B",
    "PITX1",
    "UBE2S",
    "GYPB",
    "ALAS2",
    "BLVRB",
    "HBA1",
    "HBA2",
    "MALAT1",
]


def tiny_conditions(genes: list[str] = GENES) -> list[str]:
    """GEARS-style labels: control, singles in both orientations, doubles (targets genes[1:5])."""
    a, b, c, d = genes[1:5]
    return [
        "ctrl",
        f"{a}+ctrl",
        f"ctrl+{a}",
        f"{b}+ctrl",
        f"{c}+ctrl",
        f"{d}+ctrl",
        f"{a}+{b}",
        f"{b}+{c}",
        f"{c}+{d}",
        f"{a}+{d}",
    ]


def tiny_counts(n_cells: int, n_genes: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    means = rng.gamma(0.8, 2.0, size=n_genes)  # (G,)
    return rng.poisson(means, size=(n_cells, n_genes)).astype(np.float32)  # (N, G)


def tiny_gears_adata(cells_per_condition: int = 6, seed: int = 0, genes: list[str] = GENES) -> ad.AnnData:
    """GEARS Norman layout: Ensembl var index + gene_name, `condition` with `ctrl`, log1p X, counts layer."""
    labels = np.repeat(tiny_conditions(genes), cells_per_condition)
    counts = tiny_counts(labels.size, len(genes), seed)
    counts[counts.sum(axis=1) == 0, 0] = 1  # no empty cells
    totals = counts.sum(axis=1, keepdims=True)
    x = np.log1p(counts / totals * np.median(totals)).astype(np.float32)
    obs = pd.DataFrame(
        {"condition": pd.Categorical(labels), "control": (labels == "ctrl").astype(int)},
        index=[f"cell{i}" for i in range(labels.size)],
    )
    var = pd.DataFrame({"gene_name": genes}, index=[f"ENSG{i:011d}" for i in range(len(genes))])
    return ad.AnnData(X=sp.csr_matrix(x), obs=obs, var=var, layers={"counts": sp.csr_matrix(counts)})


def write_h5ad(adata: ad.AnnData, path: Path) -> Path:
    """Write `adata` to `path` and return the path."""
    adata.write_h5ad(path)
    return path
