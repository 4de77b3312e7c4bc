"""The bad-input catalog (docs/errors.md) for the data file itself, through the real CLI: exit code 1, one `error:`
line naming the problem and the fix, no traceback. Test names follow the catalog's rows."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
from clitools import refused
from factories import GENES, tiny_gears_adata, write_h5ad


def _with_x(tmp_path: Path, value: float) -> Path:
    adata = tiny_gears_adata()
    x = adata.X.toarray()
    x[2, 3] = value
    adata.X = sp.csr_matrix(x)
    return write_h5ad(adata, tmp_path / "bad.h5ad")


# --- data ---------------------------------------------------------------------------------------------------


def test_missing_perturbation_column(tmp_path: Path) -> None:
    adata = tiny_gears_adata()
    adata.obs = adata.obs.rename(columns={"condition": "guide_identity"})
    path = write_h5ad(adata, tmp_path / "renamed.h5ad")
    refused("inspect", path, match="no perturbation column found")
    refused("inspect", path, "--pert-col", "perturbation", match="'perturbation' is not in obs")


def test_control_label_absent(tmp_path: Path) -> None:
    path = write_h5ad(tiny_gears_adata(), tmp_path / "d.h5ad")
    refused("inspect", path, "--control", "NT", match="control label 'NT' not found")


def test_condition_with_more_than_two_tokens(tmp_path: Path) -> None:
    adata = tiny_gears_adata()
    adata.obs["condition"] = ["G001+G002+G003"] + adata.obs["condition"].astype(str).tolist()[1:]
    refused("inspect", write_h5ad(adata, tmp_path / "d.h5ad"), match="has 3 tokens")


@pytest.mark.parametrize(("value", "match"), [(np.nan, "NaN"), (np.inf, "infinite"), (-0.5, "negative values")])
def test_nan_inf_negative_expression(tmp_path: Path, value: float, match: str) -> None:
    refused("inspect", _with_x(tmp_path, value), match=match)


def test_counts_expected_but_log_data_given(tmp_path: Path) -> None:
    adata = tiny_gears_adata()
    adata.layers["counts"] = adata.X.copy()  # log values where raw counts belong
    refused("inspect", write_h5ad(adata, tmp_path / "d.h5ad"), "--counts-layer", "counts", match="not raw counts")


def test_log_expected_but_other_values_given(tmp_path: Path) -> None:
    adata = tiny_gears_adata()
    adata.X = adata.X * 57.3  # scaled, neither integer counts nor log1p
    refused("inspect", write_h5ad(adata, tmp_path / "d.h5ad"), match="neither raw counts nor log1p")


def test_duplicated_gene_names(tmp_path: Path) -> None:
    adata = tiny_gears_adata()
    adata.var["gene_name"] = ["G000", "G000", *GENES[2:]]
    refused("inspect", write_h5ad(adata, tmp_path / "d.h5ad"), match="duplicated gene names")


def test_fewer_than_two_perturbations(tmp_path: Path) -> None:
    adata = tiny_gears_adata()
    adata.obs["condition"] = ["ctrl"] * (adata.n_obs - 6) + ["G001+ctrl"] * 6
    refused("inspect", write_h5ad(adata, tmp_path / "d.h5ad"), match="needs at least 2")


def test_all_perturbation_labels_missing(tmp_path: Path) -> None:
    adata = tiny_gears_adata()
    adata.obs["condition"] = np.nan
    refused("inspect", write_h5ad(adata, tmp_path / "d.h5ad"), match="obs['condition'] has no labels: all 60 cells")


def test_data_file_missing_or_not_h5ad(tmp_path: Path) -> None:
    refused("inspect", tmp_path / "absent.h5ad", match="does not exist")
    write_h5ad(tiny_gears_adata(), tmp_path / "inside.h5ad")
    refused("inspect", tmp_path, match="is a folder (it holds inside.h5ad); pass the path of an .h5ad file")
    (tmp_path / "text.h5ad").write_text("hello")
    refused("inspect", tmp_path / "text.h5ad", match="cannot read")
