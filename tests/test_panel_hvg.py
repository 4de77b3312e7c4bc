"""The panel's own `seurat` dispersion against scanpy's `highly_variable_genes`, which it replaces."""

import numpy as np
import pytest
import scipy.sparse as sp

import ccfm.data.panel as panel_module
from ccfm.data.loading import PerturbationData, from_anndata
from ccfm.data.panel import choose_panel, seurat_dispersion
from ccfm.simulate.norman import simulate_norman

N_BINS = (1, 7, 20)


def _scanpy_stats(log_expression: np.ndarray | sp.csr_matrix, n_bins: int) -> dict[str, np.ndarray]:
    import anndata as ad
    import scanpy as sc

    stats = sc.pp.highly_variable_genes(ad.AnnData(X=log_expression), flavor="seurat", n_bins=n_bins, inplace=False)
    return {k: stats[k].to_numpy(dtype=np.float64) for k in ("means", "dispersions", "dispersions_norm")}


def _rank(dispersions_norm: np.ndarray) -> np.ndarray:
    return np.argsort(-np.nan_to_num(dispersions_norm, nan=-np.inf), kind="stable")


def _assert_matches_scanpy(log_expression: np.ndarray | sp.csr_matrix, n_bins: int) -> None:
    ours = seurat_dispersion(log_expression, n_bins)
    ref = _scanpy_stats(log_expression, n_bins)
    for name, expected in ref.items():
        np.testing.assert_allclose(getattr(ours, name), expected, rtol=1e-6, atol=0, equal_nan=True, err_msg=name)
    np.testing.assert_array_equal(_rank(ours.dispersions_norm), _rank(ref["dispersions_norm"]))


def _log_counts(n_cells: int = 300, n_genes: int = 120, seed: int = 0) -> np.ndarray:
    """(N, G) float32 log1p of negative-binomial counts with gene means spread over three decades."""
    rng = np.random.default_rng(seed)
    gene_mean = 10 ** rng.uniform(-2, 1.5, size=n_genes)  # (G,)
    counts = rng.negative_binomial(2, 2 / (2 + gene_mean), size=(n_cells, n_genes))  # (N, G)
    return np.log1p(counts).astype(np.float32)


def _awkward_log_counts() -> np.ndarray:
    """Constant, all-zero and single-cell genes, plus one gene whose mean is far above the rest (a bin of its own)."""
    x = _log_counts(n_cells=60, n_genes=40, seed=1)
    x[:, 3] = 0.0  # all zero: mean 0 (bumped to 1e-12), dispersion NaN
    x[:, 7] = np.log1p(3.0)  # constant, non-zero
    # constant too, but expm1(x)² is rounded in float32 (as scanpy does), so E[x²] - E[x]² is ~1e-8, not 0:
    x[:, 8] = np.float32(0.7)  # > 0, a finite log dispersion near -17 that enters its bin's mean and std
    x[:, 9] = np.float32(0.1)  # < 0, NaN
    x[:, 11] = 0.0
    x[5, 11] = np.log1p(1.0)  # a single expressing cell
    x[:, 20] = np.log1p(np.random.default_rng(2).poisson(500.0, size=60))  # alone in the top mean bin
    return x


@pytest.mark.parametrize("n_bins", N_BINS)
@pytest.mark.parametrize("layout", ["dense", "csr"])
def test_random_counts_match_scanpy(n_bins: int, layout: str) -> None:
    x = _log_counts()
    _assert_matches_scanpy(x if layout == "dense" else sp.csr_matrix(x), n_bins)


@pytest.mark.parametrize("n_bins", N_BINS)
@pytest.mark.parametrize("layout", ["dense", "csr"])
def test_constant_zero_and_lone_bin_genes_match_scanpy(n_bins: int, layout: str) -> None:
    x = _awkward_log_counts()
    _assert_matches_scanpy(x if layout == "dense" else sp.csr_matrix(x), n_bins)


def test_lone_and_constant_genes_take_scanpys_fixed_values() -> None:
    ours = seurat_dispersion(_awkward_log_counts(), n_bins=20)
    assert ours.dispersions_norm[20] == 1.0  # a bin's only gene: centre 0, scale its own dispersion
    assert np.isnan(ours.dispersions[[3, 7, 9]]).all() and np.isnan(ours.dispersions_norm[[3, 7, 9]]).all()
    assert -20 < ours.dispersions[8] < -15  # scanpy's rounding: this constant gene is not NaN
    assert ours.means[3] == np.log1p(1e-12)  # an all-zero gene bins just above 0, not at 0
    # `n_bins=1` is a single bin: the normalized dispersion is a z-score over the finite genes
    whole = seurat_dispersion(_awkward_log_counts(), n_bins=1)
    finite = np.isfinite(whole.dispersions)
    d = whole.dispersions[finite]
    np.testing.assert_allclose(whole.dispersions_norm[finite], (d - d.mean()) / d.std(ddof=1), rtol=1e-12)


@pytest.fixture(scope="module")
def norman() -> PerturbationData:
    return from_anndata(simulate_norman(scale=0.001, seed=0, min_cells=2))  # 573 cells × 5,045 genes


def _scanpy_rank(data: PerturbationData, rows: np.ndarray) -> np.ndarray:
    """The panel ranking as it was computed with scanpy."""
    n_bins = max(1, min(20, data.n_genes // 10))
    return _rank(_scanpy_stats(data.expression[rows], n_bins)["dispersions_norm"])


@pytest.mark.parametrize("cells", ["all", "controls"])
def test_simulated_panel_is_unchanged(norman: PerturbationData, cells: str, monkeypatch: pytest.MonkeyPatch) -> None:
    rows = norman.control_indices() if cells == "controls" else np.arange(norman.n_cells)
    np.testing.assert_array_equal(panel_module._dispersion_rank(norman, rows), _scanpy_rank(norman, rows))
    ours = choose_panel(norman, n_genes=600, cells=cells)
    monkeypatch.setattr(panel_module, "_dispersion_rank", _scanpy_rank)
    assert choose_panel(norman, n_genes=600, cells=cells) == ours
