import anndata as ad
import numpy as np
import pytest
import scipy.sparse as sp
from factories import tiny_gears_adata

from ccfm.config import SchemaOverrides
from ccfm.data.expression import log_normalize
from ccfm.data.loading import from_anndata, load_dataset
from ccfm.data.schema import detect_schema
from ccfm.errors import CCFMError


def test_gears_layout_is_detected_and_labels_canonical() -> None:
    data = from_anndata(tiny_gears_adata())
    assert data.schema.kind == "gears_norman"
    assert data.schema.gene_col == "gene_name" and data.schema.control_label == "ctrl"
    assert data.gene_symbols[0] == "G000" and data.gene_ids[0].startswith("ENSG")
    # `G001+ctrl` and `ctrl+G001` merge into one perturbation with both groups of cells
    assert data.cell_indices("G001").size == 12
    assert "G001+G002" in data.perturbations and len(data.condition_labels) == 8
    assert data.perturbed_genes() == ["G001", "G002", "G003", "G004"]
    assert data.expression_note.startswith("X used as log1p")


def test_scdfm_combosciplex_and_cell_eval_layouts() -> None:
    scdfm = tiny_gears_adata()
    scdfm.var_names = scdfm.var["gene_name"].to_numpy()
    assert detect_schema(scdfm).kind == "scdfm_norman"

    combo = tiny_gears_adata()
    labels = combo.obs["condition"].astype(str).str.replace("ctrl", "control")
    labels = labels.where(labels != "control", "control+control")
    combo.obs["condition"] = labels.values
    combo.obs["Drug1"] = "x"
    combo.obs["Drug2"] = "y"
    schema = detect_schema(combo)
    assert (schema.kind, schema.control_label) == ("combosciplex", "control+control")

    ce = tiny_gears_adata()
    ce.obs = ce.obs.rename(columns={"condition": "target_gene"})
    ce.obs["target_gene"] = ce.obs["target_gene"].astype(str).replace("ctrl", "non-targeting").values
    schema = detect_schema(ce)
    assert (schema.kind, schema.pert_col, schema.control_label) == (
        "cell_eval",
        "target_gene",
        "non-targeting",
    )
    assert from_anndata(ce).control_indices().size == 6


def test_counts_in_x_are_normalized_and_counts_layer_override() -> None:
    adata = tiny_gears_adata()
    expected = log_normalize(adata.layers["counts"]).toarray()
    raw = adata.copy()
    raw.X = raw.layers["counts"].copy()
    data = from_anndata(raw)
    assert "raw counts" in data.expression_note
    np.testing.assert_allclose(data.expression.toarray(), expected, rtol=1e-6)
    forced = from_anndata(adata, SchemaOverrides(counts_layer="counts"))
    np.testing.assert_allclose(forced.expression.toarray(), expected, rtol=1e-6)


def test_log_normalize_matches_scanpy() -> None:
    import scanpy as sc

    adata = tiny_gears_adata()
    ref = ad.AnnData(X=adata.layers["counts"].copy())
    sc.pp.normalize_total(ref)
    sc.pp.log1p(ref)
    np.testing.assert_allclose(log_normalize(adata.layers["counts"]).toarray(), ref.X.toarray(), rtol=1e-5)


def test_caller_object_is_not_modified() -> None:
    adata = tiny_gears_adata()
    raw = adata.copy()
    raw.X = raw.layers["counts"].copy()
    before = raw.X.toarray().copy()
    from_anndata(raw)
    np.testing.assert_array_equal(raw.X.toarray(), before)


def _with_x(values: np.ndarray) -> ad.AnnData:
    adata = tiny_gears_adata()
    adata.X = sp.csr_matrix(values)
    return adata


def _drop_condition(a: ad.AnnData) -> None:
    del a.obs["condition"]


def _rename_control(a: ad.AnnData) -> None:
    a.obs["condition"] = a.obs["condition"].astype(str).replace("ctrl", "CTL").to_numpy()


def _duplicate_genes(a: ad.AnnData) -> None:
    a.var["gene_name"] = ["G000"] * a.n_vars


def _one_perturbation(a: ad.AnnData) -> None:
    a.obs["condition"] = ["ctrl"] * (a.n_obs - 6) + ["G001+ctrl"] * 6


def _triple(a: ad.AnnData) -> None:
    a.obs["condition"] = ["A+B+C"] + a.obs["condition"].astype(str).tolist()[1:]


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (_drop_condition, "no perturbation column found"),
        (_rename_control, "no control cells found"),
        (_duplicate_genes, "duplicated gene names"),
        (_one_perturbation, "needs at least 2"),
        (_triple, "3 tokens"),
    ],
)
def test_bad_metadata_is_refused(mutate, message: str) -> None:
    adata = tiny_gears_adata()
    mutate(adata)
    with pytest.raises(CCFMError, match=message):
        from_anndata(adata)


@pytest.mark.parametrize(("value", "message"), [(np.nan, "NaN"), (np.inf, "infinite"), (-1.0, "negative values")])
def test_bad_values_are_refused(value: float, message: str) -> None:
    x = tiny_gears_adata().X.toarray()
    x[3, 5] = value
    with pytest.raises(CCFMError, match=message):
        from_anndata(_with_x(x))


def test_non_log_non_count_x_and_non_integer_counts_layer_are_refused() -> None:
    x = tiny_gears_adata().X.toarray() * 100.5
    with pytest.raises(CCFMError, match="neither raw counts nor log1p"):
        from_anndata(_with_x(x))
    adata = tiny_gears_adata()
    adata.layers["counts"] = adata.X.copy()
    with pytest.raises(CCFMError, match="not raw counts"):
        from_anndata(adata, SchemaOverrides(counts_layer="counts"))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (SchemaOverrides(pert_col="perturbation"), "'perturbation' is not in obs"),
        (SchemaOverrides(control="NT"), "control label 'NT' not found"),
        (SchemaOverrides(gene_col="symbol"), "gene column 'symbol' is not in var"),
        (SchemaOverrides(counts_layer="raw"), "counts layer 'raw' not found"),
    ],
)
def test_bad_overrides_name_the_flag(overrides: SchemaOverrides, message: str) -> None:
    with pytest.raises(CCFMError, match=message):
        from_anndata(tiny_gears_adata(), overrides)


def test_missing_condition_and_file(tmp_path) -> None:
    data = from_anndata(tiny_gears_adata())
    with pytest.raises(CCFMError, match="no cells for condition 'G009'"):
        data.cell_indices("G009")
    with pytest.raises(CCFMError, match="does not exist"):
        load_dataset(tmp_path / "absent.h5ad")
    (tmp_path / "bad.h5ad").write_text("not hdf5")
    with pytest.raises(CCFMError, match="cannot read"):
        load_dataset(tmp_path / "bad.h5ad")
