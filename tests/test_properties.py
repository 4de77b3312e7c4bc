"""Property-based tests (hypothesis) for condition parsing and schema detection.

The strategies carry their own truth: each generated label knows its token set, each generated AnnData knows
its layout, perturbation column, control label and the canonical label of every cell. Runs are derandomized and
use no example database, so CI sees the same examples on every run.
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ccfm.config import SchemaOverrides
from ccfm.data.conditions import CONTROL, Perturbation, parse_condition
from ccfm.data.loading import from_anndata
from ccfm.data.schema import detect_schema
from ccfm.errors import CCFMError

#: Deterministic and quick: same examples every run, no `.hypothesis` database, no per-example deadline.
PROPERTY = settings(
    max_examples=120, deadline=None, derandomize=True, database=None, suppress_health_check=[HealthCheck.too_slow]
)
#: AnnData examples cost a few ms each; fewer of them.
ANNDATA_PROPERTY = settings(PROPERTY, max_examples=40)

#: Words the parser documents as filling an empty slot (matched case-insensitively).
CONTROL_WORDS = frozenset({"ctrl", "control", "non-targeting", "dmso", "vehicle"})
#: Obs column names that detection looks for, plus the ComboSciPlex drug columns.
RESERVED_OBS_COLUMNS = frozenset({"condition", "target_gene", "target", "perturbation", "gene", "Drug1", "Drug2"})
TOKEN_ALPHABET = string.ascii_letters + string.digits + "-_."
WHITESPACE = " \t\n\r"

tokens = st.text(TOKEN_ALPHABET, min_size=1, max_size=8).filter(lambda t: t.lower() not in CONTROL_WORDS)
fillers = st.sampled_from(["ctrl", "control", "CTRL", "Control"])
padding = st.text(WHITESPACE, max_size=2)


def canonical(parts: list[str] | tuple[str, ...]) -> str:
    """The label the spec promises: sorted unique tokens joined by '+', or 'ctrl' for none."""
    return "+".join(sorted(set(parts))) or "ctrl"


@st.composite
def labels_with_tokens(draw: st.DrawFn, min_tokens: int = 1, max_tokens: int = 2) -> tuple[str, list[str]]:
    """A label made of tokens and control fillers in any order, each part maybe padded; and its tokens."""
    toks = draw(st.lists(tokens, min_size=min_tokens, max_size=max_tokens))
    parts = draw(st.permutations(toks + draw(st.lists(fillers, max_size=2))))
    padded = [draw(padding) + p + draw(padding) for p in parts]
    return "+".join(padded), toks


# --- parse_condition -------------------------------------------------------------------------------------


@PROPERTY
@given(labels_with_tokens())
def test_label_parses_to_sorted_unique_token_set(case: tuple[str, list[str]]) -> None:
    label, toks = case
    parsed = parse_condition(label)
    assert parsed == Perturbation(tuple(sorted(set(toks))))
    assert parsed.is_double == (len(set(toks)) == 2) and not parsed.is_control


@PROPERTY
@given(tokens, tokens)
def test_order_of_two_tokens_does_not_matter(a: str, b: str) -> None:
    assert parse_condition(f"{a}+{b}") == parse_condition(f"{b}+{a}")
    assert parse_condition(f"{b}+{a}").label == canonical([a, b])


@PROPERTY
@given(labels_with_tokens(min_tokens=0))
def test_canonical_label_round_trips(case: tuple[str, list[str]]) -> None:
    label, toks = case
    if not label:
        label = "ctrl"  # zero tokens and zero fillers: the bare control
    parsed = parse_condition(label)
    assert parsed.label == canonical(toks)
    assert parse_condition(parsed.label) == parsed


@PROPERTY
@given(st.data())
def test_three_or_more_distinct_tokens_are_refused_with_the_count(data: st.DataObject) -> None:
    toks = data.draw(st.lists(tokens, min_size=3, max_size=6, unique=True))
    parts = data.draw(st.permutations(toks + data.draw(st.lists(fillers, max_size=2))))
    with pytest.raises(CCFMError, match=rf"has {len(toks)} tokens"):
        parse_condition("+".join(parts))


#: Free text, plus text dense in separators, padding and control words, where parsing edge cases live.
messy_text = (
    st.text()
    | st.text("+ \t\nAb1.-_", max_size=12)
    | st.lists(st.sampled_from(["+", " ", "ctrl", "CONTROL", "NT", "A", "b", ""]), max_size=6).map("".join)
)


@PROPERTY
@given(messy_text, st.none() | st.sampled_from(["NT", ""]) | st.text(max_size=12))
def test_any_text_parses_or_raises_ccfm_error(label: str, control_label: str | None) -> None:
    try:
        parsed = parse_condition(label, control_label)
    except CCFMError:
        return
    assert isinstance(parsed, Perturbation) and len(parsed.tokens) <= 2
    assert list(parsed.tokens) == sorted(set(parsed.tokens))
    for tok in parsed.tokens:
        assert tok and tok == tok.strip() and "+" not in tok and tok.lower() not in CONTROL_WORDS
        assert not control_label or tok.lower() != control_label.lower()
    assert parse_condition(parsed.label) == parsed


@PROPERTY
@given(st.none() | st.integers() | st.floats() | st.binary() | st.lists(st.text(), max_size=2))
def test_non_text_labels_raise_ccfm_error(label: object) -> None:
    with pytest.raises(CCFMError, match="perturbation label"):
        parse_condition(label)  # type: ignore[arg-type]


@PROPERTY
@given(labels_with_tokens(min_tokens=0), padding, padding)
def test_surrounding_whitespace_is_ignored(case: tuple[str, list[str]], left: str, right: str) -> None:
    label, toks = case
    label = label or "ctrl"
    assert parse_condition(left + label + right) == parse_condition(label)
    assert parse_condition(left + label + right).label == canonical(toks)


dataset_controls = st.sampled_from(["NT", "non-targeting", "Non-Targeting", "DMSO", "vehicle", "NTC"]) | tokens


@PROPERTY
@given(dataset_controls, tokens, padding, padding)
def test_dataset_control_label_parses_as_control(control: str, tok: str, left: str, right: str) -> None:
    assert parse_condition(control, control) == CONTROL
    assert parse_condition(left + control + right, control) == CONTROL
    assert parse_condition(f"{control}+{control}", control) == CONTROL
    if tok.lower() != control.lower():
        assert parse_condition(f"{control}+{tok}", control) == Perturbation((tok,))
        assert parse_condition(f"{tok}+{control}", control) == Perturbation((tok,))


@pytest.mark.parametrize("control", ["NT ", " NTC", "\tsafe-targeting\n"])
def test_padded_control_label_as_stored_parses_as_control(control: str) -> None:
    # `--control` must name the label exactly as the file stores it, padding included
    assert parse_condition(control, control) == CONTROL


# --- detect_schema / from_anndata ------------------------------------------------------------------------


@dataclass(frozen=True)
class GeneratedData:
    """A tiny AnnData and what detection and loading must find in it."""

    adata: ad.AnnData
    layout: str  # gears | scdfm | combosciplex | cell_eval
    kind: str
    pert_col: str
    control_label: str
    gene_col: str | None
    gene_symbols: list[str]
    cell_labels: list[str]  # canonical label of each cell, in obs order


#: Control label, slot filler and perturbation column(s) of each layout.
LAYOUTS = {
    "gears": ("ctrl", "ctrl", ("condition",)),
    "scdfm": ("ctrl", "ctrl", ("condition",)),
    "combosciplex": ("control+control", "control", ("condition",)),
    "cell_eval": ("non-targeting", None, ("target_gene", "target")),
}
KINDS = {"gears": "gears_norman", "scdfm": "scdfm_norman", "combosciplex": "combosciplex", "cell_eval": "cell_eval"}
VAR_LAYOUTS = {
    "gears": ("ensembl+gene_name",),
    "scdfm": ("symbols", "symbols+gene_name"),
    "combosciplex": ("ensembl+gene_name", "symbols", "symbols+gene_name"),
    "cell_eval": ("ensembl+gene_name", "symbols", "symbols+gene_name"),
}
symbols = st.text(string.ascii_uppercase + string.digits, min_size=1, max_size=6).filter(lambda s: not s[:3] == "ENS")
extra_obs_names = st.sampled_from(["batch", "control", "n_counts", "cell_type", "dose", "guide_id"]) | st.text(
    string.ascii_lowercase + "_", min_size=1, max_size=10
).filter(lambda c: c not in RESERVED_OBS_COLUMNS)


def unknown_obs_name(existing: list[str]) -> st.SearchStrategy[str]:
    return st.text(min_size=1, max_size=12).filter(lambda c: c not in RESERVED_OBS_COLUMNS and c not in existing)


@st.composite
def raw_labels(draw: st.DrawFn, toks: tuple[str, ...], filler: str | None) -> list[str]:
    """One or two spellings of one perturbation in the layout's style (orientation, control filler)."""
    if len(toks) == 2:
        spellings = [f"{toks[0]}+{toks[1]}", f"{toks[1]}+{toks[0]}"]
    elif filler is None:
        spellings = [toks[0]]
    else:
        spellings = [f"{toks[0]}+{filler}", f"{filler}+{toks[0]}"]
    return draw(st.lists(st.sampled_from(spellings), min_size=1, max_size=2, unique=True))


@st.composite
def perturbation_adatas(draw: st.DrawFn) -> GeneratedData:
    layout = draw(st.sampled_from(sorted(LAYOUTS)))
    control, filler, pert_cols = LAYOUTS[layout]
    pert_col = draw(st.sampled_from(pert_cols))
    pool = draw(st.lists(tokens, min_size=2, max_size=6, unique=True))
    max_slots = 1 if layout == "cell_eval" else 2
    one_pert = st.lists(st.sampled_from(pool), min_size=1, max_size=max_slots, unique=True).map(
        lambda ts: tuple(sorted(ts))
    )
    perts = draw(st.lists(one_pert, min_size=2, max_size=6, unique=True))
    # (raw label, canonical label, number of cells); ≤ 5 + 6 × 2 × 4 = 53 cells
    groups = [(control, "ctrl", draw(st.integers(1, 5)))]
    for toks in perts:
        groups += [(raw, canonical(toks), draw(st.integers(1, 4))) for raw in draw(raw_labels(toks, filler))]
    raw = np.array([r for r, _, n in groups for _ in range(n)], dtype=object)
    truth = np.array([c for _, c, n in groups for _ in range(n)], dtype=object)
    order = np.array(draw(st.permutations(range(raw.size))))
    raw, truth = raw[order], truth[order]

    seed = draw(st.integers(0, 2**16))
    obs = pd.DataFrame(index=[f"cell{i}" for i in range(raw.size)])
    obs[pert_col] = pd.Categorical(raw) if draw(st.booleans()) else raw
    if layout == "combosciplex":
        obs["Drug1"], obs["Drug2"] = "drug_a", "drug_b"
    for name in draw(st.lists(extra_obs_names, max_size=3, unique=True)):
        obs[name] = _extra_column(np.random.default_rng(seed), raw.size, draw(st.sampled_from(["int", "str", "cat"])))

    var_layout = draw(st.sampled_from(VAR_LAYOUTS[layout]))
    genes = draw(st.lists(symbols, min_size=1, max_size=20, unique=True))
    if var_layout == "ensembl+gene_name":
        var = pd.DataFrame({"gene_name": genes}, index=[f"ENSG{i:011d}" for i in range(len(genes))])
    else:
        var = pd.DataFrame({"gene_name": genes} if var_layout.endswith("gene_name") else {}, index=genes)
    x = _log_expression(np.random.default_rng(seed), raw.size, len(genes))
    adata = ad.AnnData(X=sp.csr_matrix(x) if draw(st.booleans()) else x, obs=obs, var=var)
    return GeneratedData(
        adata=adata,
        layout=layout,
        kind=KINDS[layout],
        pert_col=pert_col,
        control_label=control,
        gene_col="gene_name" if var_layout == "ensembl+gene_name" else None,
        gene_symbols=genes,
        cell_labels=truth.tolist(),
    )


def _extra_column(rng: np.random.Generator, n_cells: int, kind: str) -> np.ndarray | pd.Categorical:
    values = rng.integers(0, 3, size=n_cells)  # (N,)
    if kind == "int":
        return values
    strings = np.array([f"b{v}" for v in values], dtype=object)
    return pd.Categorical(strings) if kind == "cat" else strings


def _log_expression(rng: np.random.Generator, n_cells: int, n_genes: int) -> np.ndarray:
    """Non-negative, non-integer log1p-like values with no empty cell."""
    x = np.log1p(rng.gamma(0.8, 2.0, size=(n_cells, n_genes)))  # (N, G)
    x[rng.random((n_cells, n_genes)) < 0.5] = 0.0
    x[:, 0] += 0.5
    return x.astype(np.float32)


def _rename_pert_col(gen: GeneratedData, new: str) -> ad.AnnData:
    adata = gen.adata.copy()
    adata.obs = adata.obs.rename(columns={gen.pert_col: new})
    return adata


@ANNDATA_PROPERTY
@given(perturbation_adatas())
def test_detect_schema_finds_the_generated_layout(gen: GeneratedData) -> None:
    schema = detect_schema(gen.adata)
    assert (schema.kind, schema.pert_col, schema.control_label) == (gen.kind, gen.pert_col, gen.control_label)
    assert schema.gene_col == gen.gene_col and schema.counts_layer is None


@ANNDATA_PROPERTY
@given(perturbation_adatas())
def test_from_anndata_labels_every_cell_canonically(gen: GeneratedData) -> None:
    obs_before = gen.adata.obs.copy()
    data = from_anndata(gen.adata)
    assert data.schema.kind == gen.kind and data.schema.control_label == gen.control_label
    assert data.cell_labels.tolist() == gen.cell_labels
    assert data.condition_labels == sorted(set(gen.cell_labels) - {"ctrl"})
    assert data.control_indices().size == gen.cell_labels.count("ctrl")
    assert data.gene_symbols.tolist() == gen.gene_symbols
    assert data.expression.shape == (len(gen.cell_labels), len(gen.gene_symbols))
    pd.testing.assert_frame_equal(gen.adata.obs, obs_before)  # the caller's object is untouched


@ANNDATA_PROPERTY
@given(st.data())
def test_unknown_pert_col_is_refused_until_named(data: st.DataObject) -> None:
    gen = data.draw(perturbation_adatas())
    new = data.draw(unknown_obs_name(list(gen.adata.obs.columns)))
    adata = _rename_pert_col(gen, new)
    with pytest.raises(CCFMError, match="no perturbation column found"):
        detect_schema(adata)
    with pytest.raises(CCFMError, match="no perturbation column found"):
        from_anndata(adata)

    loaded = from_anndata(adata, SchemaOverrides(pert_col=new, control=gen.control_label))
    expected_kind = "combosciplex" if gen.layout == "combosciplex" else "custom"  # Drug1/Drug2 still mark it
    assert (loaded.schema.kind, loaded.schema.pert_col) == (expected_kind, new)
    assert loaded.schema.control_label == gen.control_label and loaded.schema.gene_col == gen.gene_col
    assert loaded.cell_labels.tolist() == gen.cell_labels


@ANNDATA_PROPERTY
@given(st.data())
def test_absent_pert_col_override_is_refused_by_name(data: st.DataObject) -> None:
    gen = data.draw(perturbation_adatas())
    missing = data.draw(unknown_obs_name(list(gen.adata.obs.columns)))
    with pytest.raises(CCFMError, match=re.escape(f"perturbation column {missing!r} is not in obs")):
        detect_schema(gen.adata, SchemaOverrides(pert_col=missing))


@ANNDATA_PROPERTY
@given(st.data())
def test_absent_control_override_is_refused_by_name(data: st.DataObject) -> None:
    gen = data.draw(perturbation_adatas())
    present = set(gen.adata.obs[gen.pert_col].astype(str))
    missing = data.draw((tokens | dataset_controls).filter(lambda c: c not in present))
    overrides = SchemaOverrides(control=missing)
    with pytest.raises(CCFMError, match=re.escape(f"control label {missing!r} not found")):
        detect_schema(gen.adata, overrides)
    with pytest.raises(CCFMError, match=re.escape(f"control label {missing!r} not found")):
        from_anndata(gen.adata, overrides)
    # also when the perturbation column itself had to be named
    new = data.draw(unknown_obs_name(list(gen.adata.obs.columns)))
    with pytest.raises(CCFMError, match=re.escape(f"control label {missing!r} not found")):
        detect_schema(_rename_pert_col(gen, new), SchemaOverrides(pert_col=new, control=missing))


def test_non_string_obs_column_names_still_give_ccfm_error() -> None:
    # in-memory AnnData allows an int column name (write_h5ad would refuse it); from_anndata must still say CCFMError
    obs = pd.DataFrame({0: ["a", "b"], "batch": [1, 2]}, index=["c0", "c1"])
    adata = ad.AnnData(X=np.ones((2, 2), dtype=np.float32), obs=obs)
    with pytest.raises(CCFMError, match="no perturbation column found"):
        detect_schema(adata)
