"""`ccfm inspect`: load a data set through the data layer and describe what CCFM sees."""

from __future__ import annotations

from pathlib import Path

import anndata as ad
import numpy as np

from ccfm.config import SchemaOverrides
from ccfm.data.loading import PerturbationData, from_anndata, read_h5ad


def _stand_in_line(adata: ad.AnnData) -> str:
    if not adata.uns.get("stand_in", False):
        return "origin: real data (no stand-in flag in uns)"
    description = adata.uns.get("simulation", {}).get("description", "")
    return f"origin: {description or 'SIMULATED stand-in (uns[stand_in] is set)'}"


def summary_lines(data: PerturbationData) -> list[str]:
    perts = [data.perturbations[lab] for lab in data.condition_labels]
    singles = [p for p in perts if len(p.tokens) == 1]
    doubles = [p for p in perts if p.is_double]
    tokens = {t for p in perts for t in p.tokens}
    cells_per = np.array([np.sum(data.cell_labels == lab) for lab in data.condition_labels])
    totals = np.asarray(np.expm1(data.expression).sum(axis=1)).ravel()
    return [
        f"schema: {data.schema.kind} (perturbation column {data.schema.pert_col!r}, "
        f"control {data.schema.control_label!r}, gene symbols from "
        f"{('var[' + repr(data.schema.gene_col) + ']') if data.schema.gene_col else 'var_names'})",
        f"cells × genes: {data.n_cells:,} × {data.n_genes:,}; {data.control_indices().size:,} control cells",
        f"perturbations: {len(perts)} ({len(singles)} single, {len(doubles)} double) over {len(tokens)} "
        f"targets; {len(data.perturbed_genes())} targets are measured genes",
        f"cells per perturbation: min {cells_per.min()}, median {int(np.median(cells_per))}, max {cells_per.max()}",
        f"expression: {data.expression_note}; {100 * data.expression.nnz / max(1, np.prod(data.expression.shape)):.1f}%"
        f" non-zero; normalized totals median {np.median(totals):,.0f}",
    ]


def describe(path: Path, overrides: SchemaOverrides) -> str:
    """A short human summary of an h5ad as CCFM loads it."""
    path = Path(path)
    adata = read_h5ad(path)
    data = from_anndata(adata, overrides, source=str(path))
    n_labels = adata.obs[data.schema.pert_col].nunique()
    lines = [f"{path}", *summary_lines(data), f"labels: {n_labels} distinct in obs[{data.schema.pert_col!r}]"]
    if data.schema.counts_layer is not None:
        totals = np.asarray(adata.layers[data.schema.counts_layer].sum(axis=1)).ravel()  # (N,)
        lines.append(f"median total counts in layers[{data.schema.counts_layer!r}]: {np.median(totals):,.0f}")
    return "\n".join([*lines, _stand_in_line(adata)])
