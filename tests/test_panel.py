import numpy as np
import pytest
import scipy.sparse as sp
from factories import tiny_gears_adata

from ccfm.data.loading import from_anndata
from ccfm.data.panel import choose_panel
from ccfm.errors import CCFMError


def _with_variable_gene(col: int, rows: slice) -> np.ndarray:
    adata = tiny_gears_adata()
    x = adata.X.toarray()
    rng = np.random.default_rng(0)
    # mostly zero with rare high values: a typical mean but far more dispersed than any other gene
    x[rows, col] = rng.choice([0.0, 2.5], p=[0.9, 0.1], size=x[rows, col].shape)
    adata.X = sp.csr_matrix(x)
    return adata


def test_panel_has_targets_and_top_hvgs_in_data_order() -> None:
    data = from_anndata(_with_variable_gene(30, slice(None)))
    panel = choose_panel(data, n_genes=8)
    assert len(panel) == 8
    assert {"G001", "G002", "G003", "G004"} <= set(panel.symbols)
    assert "G030" in panel.symbols  # the planted most-variable gene
    assert list(panel.columns) == sorted(panel.columns)
    assert [s for s, p in zip(panel.symbols, panel.perturbed, strict=True) if p] == [
        "G001",
        "G002",
        "G003",
        "G004",
    ]
    np.testing.assert_array_equal(panel.index_in(data), np.array(panel.columns))


def test_controls_panel_uses_control_cells_only() -> None:
    # G030 varies only among perturbed cells (rows 6..): chosen with `all`, not with `controls`
    data = from_anndata(_with_variable_gene(30, slice(6, None)))
    assert "G030" in choose_panel(data, n_genes=5, cells="all").symbols
    assert "G030" not in choose_panel(data, n_genes=5, cells="controls").symbols


def test_panel_too_small_for_targets_and_missing_genes() -> None:
    data = from_anndata(tiny_gears_adata())
    with pytest.raises(CCFMError, match="raise --genes to at least 4"):
        choose_panel(data, n_genes=3)
    panel = choose_panel(data, n_genes=6)
    other = tiny_gears_adata()
    other.var["gene_name"] = [f"X{i}" for i in range(other.n_vars)]
    other.obs["condition"] = other.obs["condition"].astype(str).str.replace("G00", "X").to_numpy()
    with pytest.raises(CCFMError, match="panel genes are not in"):
        panel.index_in(from_anndata(other))
