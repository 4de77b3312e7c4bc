"""Evaluation: prediction format, baselines (closed form), the cell-eval wrapper, report, plots, `ccfm evaluate`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from ccfm.config import EvaluateConfig
from ccfm.data.splits import Split
from ccfm.errors import CCFMError
from ccfm.eval.baselines import TrainingEffects, baseline_predictions
from ccfm.eval.celleval import evaluate_method
from ccfm.eval.predictions import CONTROL_LABEL, PRED_COL, check_predictions, predictions_anndata
from ccfm.eval.report import MISSING, MethodSummary, markdown_table, summary_table

GENES = [f"G{i:02d}" for i in range(30)]
N_CTRL, N_PERT = 80, 40


# --- a tiny synthetic perturbation data set with planted effects ------------------------------------------


def planted_deltas() -> dict[str, np.ndarray]:
    """log-scale effects of the singles on the 30 genes; doubles add their singles (a purely additive world)."""
    g = len(GENES)
    d1, d2, d3, d4 = (np.zeros(g) for _ in range(4))
    d1[:6], d2[6:12], d3[12:18], d4[18:24] = 1.2, -1.5, 1.0, 0.9
    d1[1] += 2.0  # the target gene itself goes up (CRISPRa)
    d2[2] += 2.0
    return {"G01": d1, "G02": d2, "G03": d3, "G04": d4}


def sample_cells(label: str, n: int, rng: np.random.Generator) -> np.ndarray:
    """(n, G) log1p Poisson counts around a K562-like baseline shifted by the planted effects of `label`."""
    base = np.exp(np.linspace(np.log(0.5), np.log(20.0), len(GENES)))  # (G,)
    deltas = planted_deltas()
    shift = sum((deltas[t] for t in label.split("+") if t in deltas), np.zeros(len(GENES)))
    return np.log1p(rng.poisson(base * np.exp(shift), size=(n, len(GENES)))).astype(np.float32)


CONDITIONS = {"ctrl": N_CTRL, "G01": N_PERT, "G02": N_PERT, "G03": N_PERT, "G04": N_PERT}
CONDITIONS |= {"G01+G02": N_PERT, "G02+G03": N_PERT, "G03+G04": N_PERT}
TRAIN, TEST = ("G01", "G02", "G03", "G03+G04"), ("G01+G02", "G02+G03", "G04")


def gears_adata(seed: int = 0) -> ad.AnnData:
    """GEARS layout: obs 'condition' with 'ctrl', 'A+ctrl', 'A+B'; Ensembl var index + gene_name; log1p X."""
    rng = np.random.default_rng(seed)
    blocks, labels = [], []
    for label, n in CONDITIONS.items():
        blocks.append(sample_cells(label, n, rng))
        gears = label if label == "ctrl" or "+" in label else f"{label}+ctrl"
        labels += [gears] * n
    obs = pd.DataFrame({"condition": pd.Categorical(labels)}, index=[f"cell{i}" for i in range(len(labels))])
    var = pd.DataFrame({"gene_name": GENES}, index=[f"ENSG{i:011d}" for i in range(len(GENES))])
    adata = ad.AnnData(X=sp.csr_matrix(np.vstack(blocks)), obs=obs, var=var)
    adata.uns["stand_in"] = True
    return adata


def truth_predictions(perts: list[str], seed: int, control_names: list[str], control: np.ndarray) -> ad.AnnData:
    """A 'good model': fresh cells from the true distribution of each perturbation."""
    rng = np.random.default_rng(seed)
    cells = np.vstack([sample_cells(p, N_PERT, rng) for p in perts])
    labels = [p for p in perts for _ in range(N_PERT)]
    provenance = {"method": "ccfm", "checkpoint": None, "steps": 20, "stand_in": {"data": True, "scgpt": True}}
    return predictions_anndata(cells, labels, control, GENES, provenance, control_names=control_names)


@pytest.fixture(scope="module")
def real_and_pred() -> tuple[ad.AnnData, ad.AnnData, ad.AnnData]:
    """Real held-out cells, a truth-like prediction and the control baseline, all on the same controls."""
    rng = np.random.default_rng(1)
    control = sample_cells("ctrl", N_CTRL, rng)
    perts = ["G01", "G02", "G01+G02", "G03"]
    real_cells = np.vstack([sample_cells(p, N_PERT, rng) for p in perts])
    labels = [p for p in perts for _ in range(N_PERT)]
    real = predictions_anndata(real_cells, labels, control, GENES, {"method": "real"})
    good = truth_predictions(perts, seed=2, control_names=[f"control-{i}" for i in range(N_CTRL)], control=control)
    effects = TrainingEffects.from_cells({}, control)
    base = baseline_predictions("control", effects, control, dict.fromkeys(perts, N_PERT), np.random.default_rng(0))
    order = sorted(base.cells)
    ctrl_pred = predictions_anndata(
        np.vstack([base.cells[p] for p in order]), [p for p in order for _ in range(N_PERT)], control, GENES, {}
    )
    return real, good, ctrl_pred


# --- prediction format --------------------------------------------------------------------------------------


def test_predictions_format_round_trips_through_h5ad(tmp_path: Path) -> None:
    control = np.full((3, 4), 0.5, dtype=np.float32)
    pred = predictions_anndata(
        np.ones((2, 4)), ["A+ctrl", "B+A"], control, list("wxyz"), {"checkpoint": None, "path": Path("/r"), "n": (1, 2)}
    )
    assert pred.shape == (5, 4) and pred.X.dtype == np.float32
    assert pred.obs[PRED_COL].tolist() == ["A", "A+B", CONTROL_LABEL, CONTROL_LABEL, CONTROL_LABEL]
    assert list(pred.var_names) == list("wxyz")
    pred.write_h5ad(tmp_path / "p.h5ad")
    back = ad.read_h5ad(tmp_path / "p.h5ad")
    assert back.uns["ccfm"]["checkpoint"] == "none" and back.uns["ccfm"]["path"] == "/r"
    check_predictions(back, list("wxyz"))


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (lambda a: a[:, [1, 0, 2, 3]].copy(), "position 0: 'x' where the panel has 'w'"),
        (lambda a: a[:, :3].copy(), "3 genes instead of the panel's 4"),
        (lambda a: ad.AnnData(a.X, obs=pd.DataFrame(index=a.obs_names), var=a.var), "no 'target_gene' column"),
        (lambda a: a[a.obs[PRED_COL] != CONTROL_LABEL].copy(), "no control cells"),
        (lambda a: ad.AnnData(np.where(a.X > 0.7, np.nan, a.X), obs=a.obs, var=a.var), "NaN"),
        (lambda a: ad.AnnData(a.X - 1.0, obs=a.obs, var=a.var), "negative"),
        (lambda a: ad.AnnData(a.X * 100, obs=a.obs, var=a.var), "not raw counts"),
    ],
)
def test_check_predictions_refuses(edit, match: str) -> None:  # noqa: ANN001
    pred = predictions_anndata(np.ones((2, 4)), ["A", "B"], np.full((3, 4), 0.5), list("wxyz"), {})
    with pytest.raises(CCFMError, match=match):
        check_predictions(edit(pred), list("wxyz"))


# --- baselines -----------------------------------------------------------------------------------------------


def test_additive_baseline_pseudobulk_is_control_plus_both_deltas() -> None:
    control = np.array([[1.0, 2.0, 3.0], [3.0, 2.0, 1.0]])  # mean (2, 2, 2)
    train = {"a": np.array([[3.0, 2.0, 2.0], [3.0, 2.0, 2.0]]), "b": np.array([[2.0, 1.0, 2.0], [2.0, 2.0, 2.0]])}
    effects = TrainingEffects.from_cells(train, control)  # Δa = (1, 0, 0), Δb = (0, -0.5, 0)
    np.testing.assert_allclose(effects.deltas["b"], [0.0, -0.5, 0.0])
    out = baseline_predictions("additive", effects, control, {"a+b": 2}, np.random.default_rng(0))
    np.testing.assert_allclose(out.cells["a+b"].mean(axis=0), [3.0, 1.5, 2.0])  # (2,2,2) + Δa + Δb
    assert sorted(out.control_rows["a+b"].tolist()) == [0, 1]  # every control cell once


def test_additive_baseline_clamps_at_zero() -> None:
    control = np.array([[0.2, 1.0], [0.4, 1.0]])
    effects = TrainingEffects.from_means({"a": np.array([0.0, 1.0]), "b": np.array([0.3, 1.0])}, control.mean(0))
    out = baseline_predictions("additive", effects, control, {"a+b": 2}, np.random.default_rng(0))
    # column 0: control mean 0.3, Δa = −0.3, Δb = 0 → cells 0.2 − 0.3 = −0.1 (clamped to 0) and 0.4 − 0.3 = 0.1
    np.testing.assert_allclose(out.cells["a+b"][:, 0], [0.0, 0.1], atol=1e-6)


def test_baselines_skip_what_they_cannot_predict() -> None:
    control = np.random.default_rng(0).uniform(0, 2, size=(10, 5))
    effects = TrainingEffects.from_means({"a": np.ones(5), "b": np.full(5, 2.0)}, control.mean(0))
    requests = {"a": 4, "a+b": 4, "a+c": 4, "c": 4}
    pm = baseline_predictions("perturbation_mean", effects, control, requests, np.random.default_rng(0))
    assert set(pm.cells) == {"a"} and set(pm.missing) == {"a+b", "a+c", "c"}
    add = baseline_predictions("additive", effects, control, requests, np.random.default_rng(0))
    assert set(add.cells) == {"a+b"}
    assert "nothing to add" in add.missing["a"] and "c not seen" in add.missing["a+c"]
    for kind in ("control", "train_mean"):
        full = baseline_predictions(kind, effects, control, requests, np.random.default_rng(0))
        assert set(full.cells) == set(requests) and not full.missing
    ctrl = baseline_predictions("control", effects, control, requests, np.random.default_rng(0))
    np.testing.assert_allclose(ctrl.cells["c"], control[ctrl.control_rows["c"]], rtol=1e-6)


def test_baseline_draws_are_seeded() -> None:
    control = np.random.default_rng(0).uniform(0, 2, size=(10, 5))
    effects = TrainingEffects.from_means({"a": np.ones(5)}, control.mean(0))
    first = baseline_predictions("train_mean", effects, control, {"a": 30, "x": 3}, np.random.default_rng(7))
    again = baseline_predictions("train_mean", effects, control, {"x": 3, "a": 30}, np.random.default_rng(7))
    np.testing.assert_array_equal(first.cells["a"], again.cells["a"])  # order of requests does not matter
    assert len(first.cells["a"]) == 30  # more cells than controls: drawn with replacement


# --- cell-eval wrapper ---------------------------------------------------------------------------------------


def test_truth_like_prediction_beats_control_baseline(real_and_pred, tmp_path: Path) -> None:  # noqa: ANN001
    real, good, ctrl_pred = real_and_pred
    good_scores = evaluate_method(good, real, tmp_path / "good", profile="minimal", method="good")
    ctrl_scores = evaluate_method(ctrl_pred, real, tmp_path / "control", profile="minimal", method="control")
    g, c = good_scores.per_perturbation, ctrl_scores.per_perturbation
    assert g["perturbation"].to_list() == c["perturbation"].to_list() == ["G01", "G01+G02", "G02", "G03"]
    assert (g["pearson_delta"] > 0.9).all() and (g["pearson_delta"] > c["pearson_delta"]).all()
    assert (g["mse"] < c["mse"]).all()
    assert (tmp_path / "good" / "results.csv").is_file() and (tmp_path / "good" / "agg_results.csv").is_file()


def test_evaluate_method_never_mutates_its_inputs(real_and_pred, tmp_path: Path) -> None:  # noqa: ANN001
    real, good, _ = real_and_pred
    counts_like = good.copy()
    counts_like.X = np.round(counts_like.X * 3)  # whole numbers: cell-eval would normalize these in place
    before_pred, before_real = counts_like.copy(), real.copy()
    evaluate_method(counts_like, real, tmp_path, profile="vcc")
    np.testing.assert_array_equal(counts_like.X, before_pred.X)
    np.testing.assert_array_equal(real.X, before_real.X)
    assert counts_like.obs.equals(before_pred.obs) and real.obs.equals(before_real.obs)
    assert dict(counts_like.uns) == dict(before_pred.uns)


def test_evaluate_method_scores_only_shared_perturbations(real_and_pred, tmp_path: Path) -> None:  # noqa: ANN001
    real, good, _ = real_and_pred
    fewer = good[good.obs[PRED_COL].astype(str) != "G03"].copy()
    extra = predictions_anndata(np.ones((3, len(GENES))) * 0.5, ["ZZZ"] * 3, np.zeros((1, len(GENES))), GENES, {})
    pred = ad.concat([extra[:3], fewer], index_unique="-")
    scores = evaluate_method(pred, real, tmp_path, profile="vcc")
    assert scores.perturbations == ("G01", "G01+G02", "G02")
    assert scores.dropped_pred_only == ("ZZZ",) and scores.dropped_real_only == ("G03",)


def test_evaluate_method_refuses_other_genes(real_and_pred, tmp_path: Path) -> None:  # noqa: ANN001
    real, good, _ = real_and_pred
    with pytest.raises(CCFMError, match="different genes"):
        evaluate_method(good[:, ::-1].copy(), real, tmp_path)


def test_cell_eval_cli_accepts_the_prediction_format(real_and_pred, tmp_path: Path) -> None:  # noqa: ANN001
    real, good, _ = real_and_pred
    good.write_h5ad(tmp_path / "pred.h5ad")
    real.write_h5ad(tmp_path / "real.h5ad")
    files = ["-ap", str(tmp_path / "pred.h5ad"), "-ar", str(tmp_path / "real.h5ad"), "-o", str(tmp_path / "out")]
    cmd = [sys.executable, "-m", "cell_eval", "run", *files, "--profile", "minimal", "--num-threads", "1"]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    scores = pd.read_csv(tmp_path / "out" / "results.csv")
    assert sorted(scores["perturbation"]) == ["G01", "G01+G02", "G02", "G03"]
    assert (tmp_path / "out" / "agg_results.csv").is_file()


# --- report --------------------------------------------------------------------------------------------------


def test_report_table_marks_missing_methods(real_and_pred, tmp_path: Path) -> None:  # noqa: ANN001
    real, good, _ = real_and_pred
    scores = evaluate_method(good, real, tmp_path, profile="vcc", method="ccfm")
    perts = scores.perturbations
    summaries = [
        MethodSummary("ccfm", {}, perts, scores),
        MethodSummary("perturbation_mean", {}, perts, None, dict.fromkeys(perts, "not seen in training")),
    ]
    table = summary_table(summaries)
    assert list(table.columns) == ["mae", "discrimination_score_l1", "overlap_at_N", "perturbations"]  # vcc
    assert table.loc["perturbation_mean", "perturbations"] == "0/4"
    text = markdown_table(table)
    assert f"| perturbation_mean | {MISSING} | {MISSING} | {MISSING} | 0/4 |" in text
    assert "mae ↓" in text and "overlap_at_N ↑" in text


# --- `ccfm evaluate` on a hand-made run folder ---------------------------------------------------------------


def write_run(folder: Path, data: Path, latent: str, predictions: ad.AnnData | None) -> Path:
    folder.mkdir(parents=True)
    schema = {"pert_col": None, "control": None, "gene_col": None, "counts_layer": None}
    train_config = {"data": str(data), "schema": schema, "latent": latent}
    info = {"train_config": train_config, "panel": GENES, "stand_in": {"data": True, "scgpt": True}}
    (folder / "run.json").write_text(json.dumps(info))
    split = Split(kind="file", seed=0, fold=0, test_fraction=0.3, train=TRAIN, test=TEST)
    (folder / "split.json").write_text(split.to_json())
    if predictions is not None:
        predictions.write_h5ad(folder / "predictions.h5ad")
    return folder


@pytest.fixture(scope="module")
def run_folders(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A run with truth-like predictions (+ one in-training perturbation) and a noisier no-latent run."""
    root = tmp_path_factory.mktemp("eval_run")
    adata = gears_adata()
    adata.write_h5ad(root / "data.h5ad")
    ctrl_names = adata.obs_names[adata.obs["condition"] == "ctrl"][:50].tolist()
    control = adata[ctrl_names].X.toarray()
    pred = truth_predictions([*TEST, "G01"], seed=5, control_names=ctrl_names, control=control)
    noisy = truth_predictions(list(TEST), seed=6, control_names=ctrl_names, control=control)
    noisy.X = np.clip(noisy.X + np.random.default_rng(0).normal(0, 0.8, noisy.shape), 0, None).astype(np.float32)
    main = write_run(root / "run", root / "data.h5ad", "scgpt", pred)
    ablation = write_run(root / "run_none", root / "data.h5ad", "none", noisy)
    return main, ablation


def test_evaluate_writes_report_csvs_and_plots(run_folders: tuple[Path, Path]) -> None:
    from matplotlib.image import imread

    from pipeline.evaluate import run

    main, ablation = run_folders
    out = run(EvaluateConfig(run=main, baseline_runs=(ablation,), profile="minimal"))
    assert out == main / "eval" and not list(main.glob(".eval.tmp-*"))
    report = (out / "report.md").read_text()
    methods = ["ccfm", "ccfm-none", "control", "perturbation_mean", "additive", "train_mean"]
    for method in methods:
        assert f"| {method} |" in report
    for metric in ("pearson_delta", "mse", "mae", "discrimination_score_l1", "overlap_at_N"):
        assert metric in report
    assert "STAND-IN" in report and "G01" in report  # stand-ins flagged; the in-training G01 noted as not scored
    summary = pd.read_csv(out / "summary.csv", index_col="method")
    assert summary.loc["ccfm", "pearson_delta"] > summary.loc["control", "pearson_delta"]
    assert summary.loc["ccfm", "mse"] < summary.loc["ccfm-none", "mse"]
    assert np.isnan(summary.loc["perturbation_mean", "pearson_delta"])  # every evaluated perturbation is unseen
    assert summary.loc["additive", "perturbations"] == "2/3"  # the doubles; G04 is an unseen single
    for method in ("ccfm", "ccfm-none", "control", "additive", "train_mean"):
        assert (out / method / "results.csv").is_file() and (out / method / "agg_results.csv").is_file()
    long = pd.read_csv(out / "metrics.csv")
    assert set(long["method"]) == set(methods) - {"perturbation_mean"}
    for png in ("metrics.png", "pca.png"):
        assert (out / png).stat().st_size > 10_000
        assert imread(out / png)[..., :3].std() > 0.05  # not a blank canvas


def test_evaluate_refusals(run_folders: tuple[Path, Path], tmp_path: Path) -> None:
    from pipeline.evaluate import run

    main, _ = run_folders
    with pytest.raises(CCFMError, match="run.json is missing"):
        run(EvaluateConfig(run=tmp_path))
    with pytest.raises(CCFMError, match=r"run `ccfm generate .*` first"):
        run(EvaluateConfig(run=main, predictions=tmp_path / "none.h5ad", out=tmp_path / "e"))
    other_panel = ad.read_h5ad(main / "predictions.h5ad")[:, ::-1].copy()
    other_panel.write_h5ad(tmp_path / "other.h5ad")
    with pytest.raises(CCFMError, match="another panel"):
        run(EvaluateConfig(run=main, predictions=tmp_path / "other.h5ad", out=tmp_path / "e"))
    (tmp_path / "exists").mkdir()
    (tmp_path / "exists" / "notes.txt").write_text("mine")
    with pytest.raises(CCFMError, match="already exists; pass --overwrite"):
        run(EvaluateConfig(run=main, out=tmp_path / "exists"))
    with pytest.raises(CCFMError, match="not a report folder"):
        run(EvaluateConfig(run=main, out=tmp_path / "exists", overwrite=True))
    assert (tmp_path / "exists" / "notes.txt").read_text() == "mine"
    with pytest.raises(CCFMError, match="--profile must be one of full, minimal, vcc"):
        EvaluateConfig(run=main, profile="everything")


def test_evaluate_falls_back_to_the_files_control_values(run_folders: tuple[Path, Path], tmp_path: Path) -> None:
    from pipeline.evaluate import run

    main, _ = run_folders
    pred = ad.read_h5ad(main / "predictions.h5ad")
    is_ctrl = (pred.obs[PRED_COL] == CONTROL_LABEL).to_numpy()
    unnamed = predictions_anndata(pred.X[~is_ctrl], pred.obs[PRED_COL][~is_ctrl].tolist(), pred.X[is_ctrl], GENES, {})
    unnamed.write_h5ad(tmp_path / "unnamed.h5ad")
    predictions, out = tmp_path / "unnamed.h5ad", tmp_path / "e"
    out = run(EvaluateConfig(run=main, predictions=predictions, out=out, baselines=("control",), profile="vcc"))
    assert "not named as in the data; their values in the file were used" in (out / "report.md").read_text()
    summary = pd.read_csv(out / "summary.csv", index_col="method")
    assert list(summary.index) == ["ccfm", "control"] and summary.loc["ccfm", "mae"] < summary.loc["control", "mae"]
