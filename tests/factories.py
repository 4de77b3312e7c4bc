"""Tiny real AnnData objects in the layouts CCFM reads (no mocks)."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

GENES = [f"G{i:03d}" for i in range(40)]
TARGETS = ["G001", "G002", "G003", "G004"]


def tiny_conditions() -> list[str]:
    """GEARS-style labels: control, singles in both orientations, doubles."""
    return ["ctrl", "G001+ctrl", "ctrl+G001", "G002+ctrl", "G003+ctrl", "G004+ctrl",
            "G001+G002", "G002+G003", "G003+G004", "G001+G004"]


def tiny_counts(n_cells: int, n_genes: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    means = rng.gamma(0.8, 2.0, size=n_genes)  # (G,)
    return rng.poisson(means, size=(n_cells, n_genes)).astype(np.float32)  # (N, G)


def tiny_gears_adata(cells_per_condition: int = 6, seed: int = 0) -> ad.AnnData:
    """GEARS Norman layout: Ensembl var index + gene_name, `condition` with `ctrl`, log1p X, counts layer."""
    labels = np.repeat(tiny_conditions(), cells_per_condition)
    counts = tiny_counts(labels.size, len(GENES), seed)
    counts[counts.sum(axis=1) == 0, 0] = 1  # no empty cells
    totals = counts.sum(axis=1, keepdims=True)
    x = np.log1p(counts / totals * np.median(totals)).astype(np.float32)
    obs = pd.DataFrame(
        {"condition": pd.Categorical(labels), "control": (labels == "ctrl").astype(int)},
        index=[f"cell{i}" for i in range(labels.size)],
    )
    var = pd.DataFrame({"gene_name": GENES}, index=[f"ENSG{i:011d}" for i in range(len(GENES))])
    return ad.AnnData(X=sp.csr_matrix(x), obs=obs, var=var, layers={"counts": sp.csr_matrix(counts)})
