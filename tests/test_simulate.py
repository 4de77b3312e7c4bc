"""The stand-in simulators: real metadata shapes, GEARS/scDFM formats, planted ground truth, the stage."""

from __future__ import annotations

import dataclasses
import re
from collections import Counter

import anndata as ad
import numpy as np
import pytest
import scanpy as sc

from ccfm.config import SchemaOverrides, SimulateConfig
from ccfm.data.conditions import parse_condition
from ccfm.errors import CCFMError
from ccfm.simulate.combosciplex import DRUG_MECHANISM, simulate_combosciplex
from ccfm.simulate.common import MODULE_PROGRAM_GENES, MODULE_RULES, k562_baseline
from ccfm.simulate.norman import (
    INTERACTION_FRACTION,
    load_norman_metadata,
    simulate_norman,
    single_effects,
)
from pipeline import simulate as stage
from pipeline.inspect import describe

MIN_CELLS = 20  # enough cells per condition for per-condition means to show planted signs


@pytest.fixture(scope="module")
def norman() -> ad.AnnData:
    return simulate_norman(scale=0.02, seed=0, min_cells=MIN_CELLS)  # ~5,800 cells


@pytest.fixture(scope="module")
def combo() -> ad.AnnData:
    return simulate_combosciplex(scale=0.02, seed=0, min_cells=10)


def _canonical(adata: ad.AnnData) -> np.ndarray:
    return np.array([parse_condition(c).label for c in adata.obs["condition"].astype(str)])


def test_norman_has_the_real_conditions_and_genes(norman: ad.AnnData) -> None:
    labels = norman.obs["condition"].astype(str).unique()
    perts = [parse_condition(label) for label in labels]
    singles = [p for p in perts if len(p.tokens) == 1]
    assert len(labels) == 284
    assert len(singles) == 152 and len({p.tokens for p in singles}) == 105
    assert sum(p.is_double for p in perts) == 131
    assert sum(p.is_control for p in perts) == 1
    assert {"CBL+ctrl", "ctrl+CNN1", "CBL+CNN1", "ctrl"} <= set(labels)  # real spellings kept
    assert norman.obs["condition"].value_counts().min() >= MIN_CELLS
    assert norman.shape[1] == 5045 and norman.var.index.name == "gene_id"
    assert norman.var_names[0] == "ENSG00000239945" and norman.var["gene_name"].iloc[0] == "RP11-34P13.8"
    assert norman.var_names.str.startswith("ENSG").all()


def test_norman_obs_follow_gears(norman: ad.AnnData) -> None:
    obs = norman.obs
    is_ctrl = obs["condition"] == "ctrl"
    assert (obs["control"] == is_ctrl.astype(int)).all()
    assert set(obs.loc[is_ctrl, "dose_val"]) == {"1"} and set(obs.loc[~is_ctrl, "dose_val"]) == {"1+1"}
    assert set(obs["cell_type"]) == {"A549"}
    expected = "A549_" + obs["condition"].astype(str) + "_" + obs["dose_val"].astype(str)
    assert (obs["condition_name"].astype(str) == expected).all()
    assert obs.index.is_unique
    assert all(re.fullmatch(r"[ACGT]{16}-[1-8]", b) for b in obs.index[:200])


def test_x_is_log1p_normalize_total_of_counts(norman: ad.AnnData) -> None:
    counts = norman.layers["counts"]
    assert counts.dtype == np.float32 and norman.X.dtype == np.float32
    assert np.array_equal(counts.data, np.round(counts.data))
    recomputed = ad.AnnData(X=counts.copy())
    sc.pp.normalize_total(recomputed)
    sc.pp.log1p(recomputed)
    np.testing.assert_allclose(norman.X.toarray(), recomputed.X.toarray(), rtol=1e-5, atol=1e-5)
    totals = np.asarray(counts.sum(axis=1)).ravel()
    assert 2000 < np.median(totals) < 4000 and totals.min() >= 322 and totals.max() <= 11831


def test_same_seed_same_data_other_seed_other_data() -> None:
    first, again = simulate_norman(0.001, 3, 2), simulate_norman(0.001, 3, 2)
    other = simulate_norman(0.001, 4, 2)
    assert (first.X != again.X).nnz == 0 and (first.obs_names == again.obs_names).all()
    assert first.shape == other.shape and (first.X != other.X).nnz > 0


def _mean_lfc(adata: ad.AnnData, canonical: np.ndarray, label: str, ctrl_mean: np.ndarray) -> np.ndarray:
    """(G,) mean log1p expression of a condition minus control's."""
    return np.asarray(adata.X[canonical == label].mean(axis=0)).ravel() - ctrl_mean


def test_planted_single_effects_show_with_their_signs(norman: ad.AnnData) -> None:
    canonical = _canonical(norman)
    ctrl_mean = np.asarray(norman.X[canonical == "ctrl"].mean(axis=0)).ravel()
    column = {g: i for i, g in enumerate(norman.var_names)}
    symbol = {s: i for i, s in enumerate(norman.var["gene_name"])}
    sim = norman.uns["simulation"]
    up_ok, down_ok, target_up = [], [], []
    for target, up_genes in sim["planted_up"].items():
        delta = _mean_lfc(norman, canonical, target, ctrl_mean)
        up_ok.append(np.mean(delta[[column[g] for g in up_genes]] > 0))
        down_ok.append(np.mean(delta[[column[g] for g in sim["planted_down"][target]]] < 0))
        target_up.append(delta[symbol[target]] > 0)
    assert len(up_ok) == 105
    assert np.mean(up_ok) >= 0.85 and np.mean(down_ok) >= 0.85  # ~0.93 / ~0.97 observed; ~0.05 if flipped
    assert np.mean(target_up) >= 0.95


def test_ground_truth_record(norman: ad.AnnData) -> None:
    sim = norman.uns["simulation"]
    assert norman.uns["stand_in"] and sim["simulated"] and "SIMULATED" in sim["description"]
    assert sim["interaction_rule"] == "random"
    labels = list(sim["lfc_labels"])
    assert sim["lfc"].shape == (105 + 131, 5045) and sim["lfc"].dtype == np.float32
    assert set(_canonical(norman)) - {"ctrl"} == set(labels)  # A+ctrl and ctrl+A share one row
    kinds = Counter(sim["interactions"].values())
    assert len(sim["interactions"]) == 131
    assert sum(kinds.values()) - kinds["additive"] == round(INTERACTION_FRACTION * 131)
    row = {label: sim["lfc"][i] for i, label in enumerate(labels)}
    symbol = {s: i for i, s in enumerate(norman.var["gene_name"])}
    for label, kind in sim["interactions"].items():
        a, b = parse_condition(label).tokens
        off_target = np.ones(5045, dtype=bool)
        off_target[[symbol[a], symbol[b]]] = False
        total = row[a] + row[b]
        if kind == "additive":
            np.testing.assert_allclose(row[label][off_target], total[off_target], atol=1e-5)
        elif kind == "synergy":
            ratio = row[label][off_target] @ total[off_target] / (total[off_target] @ total[off_target])
            assert 1.5 <= ratio <= 2.0


def test_modules_rule_ties_every_pair_to_its_members_modules() -> None:
    adata = simulate_norman(0.001, 0, 2, interactions="modules")
    sim = adata.uns["simulation"]
    assert sim["interaction_rule"] == "modules" and len(sim["modules"]) == 105
    programs = sim["module_programs"]  # (N_MODULES, G)
    assert programs.shape == (4, adata.n_vars) and ((programs != 0).sum(axis=1) == MODULE_PROGRAM_GENES).all()
    row = {label: sim["lfc"][i] for i, label in enumerate(sim["lfc_labels"])}
    symbol = {s: i for i, s in enumerate(adata.var["gene_name"])}
    kinds = Counter()
    for label, kind in sim["interactions"].items():
        a, b = parse_condition(label).tokens
        m = sim["modules"][a]
        same = m == sim["modules"][b]
        assert (kind == "additive") != same, label  # within a module non-additive, across additive
        expected = MODULE_RULES[m] if same else ("additive", 1.0)
        assert kind == expected[0]
        off_target = np.ones(adata.n_vars, dtype=bool)
        off_target[[symbol[a], symbol[b]]] = False
        shared = (programs[m] != 0) & off_target if same else np.zeros(adata.n_vars, dtype=bool)
        total = row[a] + row[b]
        np.testing.assert_allclose(row[label][shared], expected[1] * total[shared], atol=1e-5)  # the program
        np.testing.assert_allclose(row[label][off_target & ~shared], total[off_target & ~shared], atol=1e-5)
        kinds[kind] += 1
    assert kinds["additive"] < 131 and kinds["synergy"] and kinds["suppression"]  # every kind is planted
    for token, m in sim["modules"].items():  # every member's single shows its module's program
        genes = (programs[m] != 0) & (np.arange(adata.n_vars) != symbol[token])
        moved = np.corrcoef(row[token][genes], programs[m][genes])[0, 1]
        assert moved > 0.5, token


def test_target_without_summary_gets_drawn_effects() -> None:
    meta = load_norman_metadata()
    meta = dataclasses.replace(meta, summaries=meta.summaries.drop(index="CEBPA"))
    rng = np.random.default_rng(0)
    baseline = k562_baseline(meta.var.index.tolist(), rng, detected=set())
    lfc, up, down = single_effects(meta, baseline, rng)
    column = {g: i for i, g in enumerate(meta.var.index)}
    assert len(up["CEBPA"]) == 10 and len(down["CEBPA"]) == 10
    assert all(lfc["CEBPA"][column[g]] > 0 for g in up["CEBPA"])
    assert all(lfc["CEBPA"][column[g]] < 0 for g in down["CEBPA"])


def test_combosciplex_shape_and_labels(combo: ad.AnnData) -> None:
    obs = combo.obs
    assert obs["condition"].nunique() == 32 and "control+control" in set(obs["condition"])
    drugs = (set(obs["Drug1"]) | set(obs["Drug2"])) - {"control"}
    assert len(drugs) == 17 and drugs == set(DRUG_MECHANISM)
    assert (obs["condition"].astype(str) == obs["Drug1"].astype(str) + "+" + obs["Drug2"].astype(str)).all()
    assert (obs["control"] == (obs["condition"] == "control+control").astype(int)).all()
    assert set(obs.loc[obs["split"] == "test", "condition"]) == {
        "Panobinostat+Crizotinib", "Panobinostat+Curcumin", "Panobinostat+SRT1720", "Panobinostat+Sorafenib",
        "SRT2104+Alvespimycin", "control+Alvespimycin", "control+Dacinostat",
    }  # fmt: skip
    assert combo.shape[1] == 2000 and combo.var_names.is_unique and not combo.var_names.str.startswith("ENSG").any()
    assert "counts" in combo.layers and combo.uns["stand_in"]
    assert len(combo.uns["simulation"]["lfc_labels"]) == 17 + 25


def test_combosciplex_hdac_inhibitors_share_a_program(combo: ad.AnnData) -> None:
    sim = combo.uns["simulation"]
    row = {label: sim["lfc"][i] for i, label in enumerate(sim["lfc_labels"])}
    same_class = np.corrcoef(row["Panobinostat"], row["Givinostat"])[0, 1]
    other_class = np.corrcoef(row["Panobinostat"], row["Sorafenib"])[0, 1]
    assert same_class > 0.3 and abs(other_class) < 0.15  # ~0.5 and ~0.0 over seeds


def test_bad_scale_is_refused() -> None:
    with pytest.raises(CCFMError, match="scale must be in"):
        simulate_norman(scale=0.0, seed=0, min_cells=5)
    with pytest.raises(CCFMError, match="min_cells"):
        simulate_combosciplex(scale=0.1, seed=0, min_cells=0)


def test_stage_writes_then_refuses_without_overwrite(tmp_path) -> None:
    out = tmp_path / "nested" / "combo.h5ad"
    cfg = SimulateConfig(kind="combosciplex", out=out, scale=0.002, seed=1, min_cells=3)
    assert stage.run(cfg) == out
    back = ad.read_h5ad(out)
    assert back.uns["stand_in"] and back.uns["simulation"]["simulated"]
    assert back.obs["condition"].nunique() == 32 and "counts" in back.layers
    assert "SIMULATED stand-in" in describe(out, SchemaOverrides())
    with pytest.raises(CCFMError, match="already exists; pass --overwrite"):
        stage.run(cfg)
    assert stage.run(dataclasses.replace(cfg, overwrite=True, seed=2)) == out
    assert ad.read_h5ad(out).uns["simulation"]["seed"] == 2
    assert [p.name for p in out.parent.iterdir()] == ["combo.h5ad"]  # no temporary file left behind
