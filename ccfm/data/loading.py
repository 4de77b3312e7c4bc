"""Read a perturbation h5ad into one checked, model-ready object."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from ccfm.config import SchemaOverrides
from ccfm.data.conditions import CONTROL, Perturbation, parse_condition
from ccfm.data.expression import model_expression
from ccfm.data.schema import DatasetSchema, detect_schema
from ccfm.errors import CCFMError


@dataclass(frozen=True)
class PerturbationData:
    """A perturbation data set as the model sees it.

    `expression` rows follow `obs_names`; columns follow `gene_symbols`. Every cell's perturbation
    is a canonical label (`ctrl`, `A`, `A+B`) keyed into `perturbations`.
    """

    expression: sp.csr_matrix  # (N, G) float32 log1p(normalize_total)
    obs_names: np.ndarray  # (N,) cell names
    cell_labels: np.ndarray  # (N,) canonical perturbation label of each cell
    gene_symbols: np.ndarray  # (G,) unique gene symbols
    gene_ids: np.ndarray  # (G,) the file's var_names (Ensembl ids for GEARS files)
    perturbations: dict[str, Perturbation]  # canonical label -> perturbation, control included
    schema: DatasetSchema
    expression_note: str  # how `expression` was obtained
    stand_in: bool  # the file says it is a simulated stand-in
    source: str  # path or description of where the data came from

    @property
    def n_cells(self) -> int:
        return int(self.expression.shape[0])

    @property
    def n_genes(self) -> int:
        return int(self.expression.shape[1])

    @property
    def condition_labels(self) -> list[str]:
        """Non-control canonical labels, sorted."""
        return sorted(lab for lab, p in self.perturbations.items() if not p.is_control)

    def cell_indices(self, label: str) -> np.ndarray:
        """Row indices of the cells of one canonical label; refuses a label with no cells."""
        idx = np.flatnonzero(self.cell_labels == label)
        if idx.size == 0:
            known = ", ".join(self.condition_labels[:10])
            raise CCFMError(
                f"no cells for condition {label!r} in {self.source} (conditions include: {known}); "
                "check the spelling, or list conditions with `ccfm inspect`"
            )
        return idx

    def control_indices(self) -> np.ndarray:
        return self.cell_indices(CONTROL.label)

    def perturbed_genes(self) -> list[str]:
        """Perturbation tokens that are also measured genes (CRISPR targets), sorted."""
        measured = set(self.gene_symbols.tolist())
        tokens = {t for p in self.perturbations.values() for t in p.tokens}
        return sorted(tokens & measured)


def _gene_symbols(adata: ad.AnnData, schema: DatasetSchema) -> np.ndarray:
    symbols = adata.var[schema.gene_col] if schema.gene_col else adata.var_names.to_series()
    symbols = symbols.astype(str).to_numpy()
    dup = [g for g, n in Counter(symbols.tolist()).items() if n > 1]
    if dup:
        where = f"var[{schema.gene_col!r}]" if schema.gene_col else "var_names"
        raise CCFMError(
            f"{len(dup)} duplicated gene names in {where} (e.g. {', '.join(dup[:5])}); make them unique "
            "(anndata's var_names_make_unique) or aggregate the duplicates before running CCFM"
        )
    return symbols


def _cell_labels(adata: ad.AnnData, schema: DatasetSchema) -> tuple[np.ndarray, dict[str, Perturbation]]:
    raw = adata.obs[schema.pert_col]
    if raw.isna().any():
        raise CCFMError(
            f"{int(raw.isna().sum())} cells have no label in obs[{schema.pert_col!r}]; "
            "label or drop them before running CCFM"
        )
    raw = raw.astype(str).to_numpy()
    parsed = {lab: parse_condition(lab, schema.control_label) for lab in pd.unique(raw)}
    labels = np.array([parsed[lab].label for lab in raw], dtype=object)
    perturbations = {p.label: p for p in parsed.values()}
    n_conditions = sum(not p.is_control for p in perturbations.values())
    if n_conditions < 2:
        raise CCFMError(
            f"obs[{schema.pert_col!r}] holds {n_conditions} perturbation(s) besides the control; CCFM needs at "
            "least 2 to train and hold one out — is --pert-col the right column?"
        )
    return labels, perturbations


def from_anndata(
    adata: ad.AnnData, overrides: SchemaOverrides | None = None, source: str = "AnnData"
) -> PerturbationData:
    """Check and convert an in-memory AnnData; the caller's object is not modified."""
    overrides = overrides or SchemaOverrides()
    if adata.n_obs == 0 or adata.n_vars == 0:
        raise CCFMError(f"{source} is empty ({adata.n_obs} cells × {adata.n_vars} genes)")
    schema = detect_schema(adata, overrides)
    symbols = _gene_symbols(adata, schema)
    labels, perturbations = _cell_labels(adata, schema)
    expr = model_expression(adata.X, dict(adata.layers), overrides.counts_layer)
    return PerturbationData(
        expression=expr.matrix,
        obs_names=np.asarray(adata.obs_names, dtype=object),
        cell_labels=labels,
        gene_symbols=symbols,
        gene_ids=np.asarray(adata.var_names, dtype=object),
        perturbations=perturbations,
        schema=schema,
        expression_note=expr.note,
        stand_in=bool(adata.uns.get("stand_in", False)),
        source=source,
    )


def read_h5ad(path: Path) -> ad.AnnData:
    """Read an h5ad file, refusing a missing or unreadable one with one clear message."""
    path = Path(path)
    if path.is_dir():
        inside = sorted(p.name for p in path.glob("*.h5ad"))[:3]
        found = f" (it holds {', '.join(inside)})" if inside else ""
        raise CCFMError(f"data file {path} is a folder{found}; pass the path of an .h5ad file")
    if not path.is_file():
        raise CCFMError(f"data file {path} does not exist; pass the path of an .h5ad file")
    try:
        return ad.read_h5ad(path)
    except Exception as err:  # h5py/anndata raise many types for a bad file
        raise CCFMError(f"cannot read {path} as h5ad ({type(err).__name__}: {err}); is it an AnnData file?") from err


def load_dataset(path: Path, overrides: SchemaOverrides | None = None) -> PerturbationData:
    """Read an h5ad file and return it checked and model-ready."""
    return from_anndata(read_h5ad(path), overrides, source=str(path))
