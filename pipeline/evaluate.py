"""`ccfm evaluate`: cell-eval scores of a run's predictions against the held-out cells, beside baselines.

Methods: the run's predictions ("ccfm", or "ccfm-<latent>"), other runs' predictions (e.g. the
no-latent ablation) and built-in baselines computed from the run's training cells only, all on the
same real control cells the predictions file holds and with as many cells per perturbation. The real
side is the held-out cells of the predicted perturbations plus those control cells. The report folder
is written under a temporary name and renamed at the end, so it is complete or absent.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anndata as ad
import numpy as np

from ccfm.config import EvaluateConfig, to_json_dict
from ccfm.data.conditions import CONTROL
from ccfm.data.loading import PerturbationData
from ccfm.data.panel import panel_columns
from ccfm.data.splits import Split
from ccfm.errors import CCFMError
from ccfm.eval.baselines import BASELINE_DESCRIPTIONS, BASELINE_KINDS, TrainingEffects, baseline_predictions
from ccfm.eval.celleval import cell_eval_version, evaluate_method
from ccfm.eval.plots import plot_metrics, plot_pca
from ccfm.eval.predictions import (
    CONTROL_LABEL,
    PRED_COL,
    PROVENANCE_KEY,
    check_predictions,
    h5ad_safe,
    predictions_anndata,
    real_anndata,
)
from ccfm.eval.report import MethodSummary, ReportHeader, markdown_table, write_report
from pipeline.outputs import REPORT, OutputPlan, plan_output
from pipeline.run_folder import RunInfo, load_real_data, read_run

log = logging.getLogger(__name__)


def read_predictions(path: Path, run: RunInfo) -> ad.AnnData:
    if not Path(path).is_file():
        raise CCFMError(f"predictions file {path} does not exist; run `ccfm generate {run.folder}` first")
    try:
        pred = ad.read_h5ad(path)
    except Exception as err:  # h5py/anndata raise many types for a bad file
        raise CCFMError(f"cannot read predictions {path} ({type(err).__name__}: {err}); rerun `ccfm generate`") from err
    check_predictions(pred, run.panel, where=str(path))
    return pred


def _labels(adata: ad.AnnData) -> np.ndarray:
    return adata.obs[PRED_COL].astype(str).to_numpy()


def evaluated_perturbations(pred: ad.AnnData, split: Split, notes: list[str]) -> list[str]:
    """Predicted perturbations that are held out (training ones would be scored in-sample)."""
    predicted = set(_labels(pred)) - {CONTROL_LABEL}
    held_out = sorted(predicted & set(split.test))
    in_training = sorted(predicted - set(split.test))
    if in_training:
        notes.append(
            f"{len(in_training)} predicted perturbations are not held out and were not scored "
            f"({', '.join(in_training[:5])})"
        )
    unpredicted = sorted(set(split.test) - predicted)
    if unpredicted:
        notes.append(f"{len(unpredicted)} held-out perturbations have no predictions ({', '.join(unpredicted[:5])})")
    if not held_out:
        raise CCFMError(
            f"none of the {len(predicted)} predicted perturbations is held out in this run's split "
            f"(held out e.g. {', '.join(split.test[:3])}); generate predictions for the test perturbations"
        )
    return held_out


def real_side(data: PerturbationData, run: RunInfo, perts: list[str], pred: ad.AnnData, notes: list[str]) -> ad.AnnData:
    """Held-out real cells of `perts` + the control cells the predictions file holds."""
    is_ctrl = _labels(pred) == CONTROL_LABEL
    where = {name: i for i, name in enumerate(data.obs_names.tolist())}
    names = pred.obs_names[is_ctrl].tolist()
    rows = np.array([where.get(n, -1) for n in names], dtype=np.int64)
    if rows.size and (rows >= 0).all() and (data.cell_labels[rows] == CONTROL.label).all():
        return real_anndata(data, run.panel, perts, rows)
    notes.append("the predictions' control cells are not named as in the data; their values in the file were used")
    real = real_anndata(data, run.panel, perts, np.zeros(0, dtype=np.int64))
    controls = pred[is_ctrl].copy()
    controls.X = np.asarray(controls.X.toarray() if hasattr(controls.X, "toarray") else controls.X, np.float32)
    return ad.concat([real, controls], merge="same", uns_merge="first")


def training_effects(data: PerturbationData, run: RunInfo) -> TrainingEffects:
    """Pseudobulk deltas of the run's training perturbations against all control cells (controls train)."""
    x = data.expression[:, panel_columns(data, run.panel)]  # (N, G) CSR

    def mean(rows: np.ndarray) -> np.ndarray:
        return np.asarray(x[rows].mean(axis=0), dtype=np.float64).ravel()  # (G,)

    means = {lab: mean(data.cell_indices(lab)) for lab in run.split.train if lab in data.perturbations}
    return TrainingEffects.from_means(means, mean(data.control_indices()))


def _method_dir(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.+-]", "_", name)


@contextlib.contextmanager
def _quiet(*loggers: str) -> Iterator[None]:
    """cell-eval logs every metric at INFO; keep our log readable while it runs."""
    saved = {name: logging.getLogger(name).level for name in loggers}
    for name in loggers:
        logging.getLogger(name).setLevel(logging.WARNING)
    try:
        yield
    finally:
        for name, level in saved.items():
            logging.getLogger(name).setLevel(level)


@dataclass(frozen=True)
class Method:
    """One method's predicted cells (prediction format), or why it has none."""

    name: str
    cells: ad.AnnData | None  # None when it predicts none of the evaluated perturbations
    provenance: dict[str, Any]  # shown in the report ("description" first)
    missing: dict[str, str]  # evaluated perturbation -> why this method has no cells for it


def _describe_file(path: Path, provenance: dict[str, Any]) -> str:
    scalars = [f"{k}={v}" for k, v in provenance.items() if isinstance(v, (str, int, float, bool))][:8]
    return f"`{path}`" + (f" ({', '.join(scalars)})" if scalars else "")


def file_method(name: str, pred: ad.AnnData, path: Path, perts: list[str]) -> Method:
    """A predictions file restricted to the evaluated perturbations (+ its control cells)."""
    provenance = h5ad_safe(dict(pred.uns.get(PROVENANCE_KEY, {})))  # numpy scalars from h5ad -> Python
    present = set(_labels(pred))
    missing = {p: "not in its predictions file" for p in perts if p not in present}
    keep = np.isin(_labels(pred), [*perts, CONTROL_LABEL])
    cells = pred[keep].copy() if len(missing) < len(perts) else None
    return Method(name, cells, {**provenance, "description": _describe_file(path, provenance)}, missing)


def run_methods(cfg: EvaluateConfig, run: RunInfo, pred: ad.AnnData, pred_path: Path, perts: list[str]) -> list[Method]:
    """The run's own predictions, then each baseline run's RUN_i/predictions.h5ad."""
    methods = [file_method(run.method, pred, pred_path, perts)]
    for folder in map(Path, cfg.baseline_runs):
        other = read_run(folder)
        if other.panel != run.panel:
            raise CCFMError(
                f"baseline run {folder} uses another gene panel than {run.folder}; compare runs trained "
                "on the same latent store"
            )
        if set(other.split.test) != set(run.split.test):
            raise CCFMError(
                f"baseline run {folder} holds out other perturbations than {run.folder}; its predictions "
                "may include ones it trained on — train it with the same --split, --fold and --split-seed"
            )
        path = folder / "predictions.h5ad"
        name = other.method if other.method not in {m.name for m in methods} else f"{other.method}:{folder.name}"
        methods.append(file_method(name, read_predictions(path, other), path, perts))
    return methods


def builtin_methods(
    cfg: EvaluateConfig, effects: TrainingEffects, pred: ad.AnnData, perts: list[str], panel: list[str]
) -> list[Method]:
    """Built-in baselines on the predictions file's control cells, as many cells per perturbation as it has."""
    labels = _labels(pred)
    is_ctrl = labels == CONTROL_LABEL
    control = pred.X[is_ctrl]
    control = np.asarray(control.toarray() if hasattr(control, "toarray") else control, dtype=np.float64)  # (Nc, G)
    requests = {p: int((labels == p).sum()) for p in perts}
    methods = []
    for i, kind in enumerate(cfg.baselines):
        rng = np.random.default_rng([cfg.seed, i])  # one stream per baseline: adding one leaves the others
        population = baseline_predictions(kind, effects, control, requests, rng)
        provenance = {
            "method": kind,
            "description": BASELINE_DESCRIPTIONS[kind],
            "seed": cfg.seed,
            "training_perturbations": len(effects.deltas),
        }
        cells = None
        if population.cells:
            order = sorted(population.cells)
            cells = predictions_anndata(
                np.vstack([population.cells[p] for p in order]),
                [p for p in order for _ in range(len(population.cells[p]))],
                control,
                panel,
                provenance,
                control_names=pred.obs_names[is_ctrl].tolist(),
            )
        methods.append(Method(kind, cells, provenance, dict(population.missing)))
    return methods


def score_methods(
    methods: list[Method], real: ad.AnnData, out: Path, cfg: EvaluateConfig, perts: list[str]
) -> list[MethodSummary]:
    summaries = []
    with _quiet("cell_eval", "pdex"):
        for m in methods:
            scores = None
            if m.cells is not None:
                scores = evaluate_method(m.cells, real, out / _method_dir(m.name), cfg.profile, cfg.num_threads, m.name)
            summaries.append(MethodSummary(m.name, m.provenance, tuple(perts), scores, m.missing))
    return summaries


def _plan_out(cfg: EvaluateConfig, run: RunInfo, predictions: Path) -> OutputPlan:
    out = Path(cfg.out) if cfg.out is not None else run.folder / "eval"
    inputs = (run.folder, predictions, run.data, *cfg.baseline_runs)
    return plan_output(out, REPORT, overwrite=cfg.overwrite, inputs=inputs, staged=True)


def _check_config(cfg: EvaluateConfig) -> None:
    unknown = [b for b in cfg.baselines if b not in BASELINE_KINDS]
    if unknown:
        raise CCFMError(f"unknown baseline(s) {', '.join(unknown)}; choose from {', '.join(BASELINE_KINDS)}")


def _header(
    run: RunInfo, data: PerturbationData, cfg: EvaluateConfig, perts: list[str], notes: list[str]
) -> ReportHeader:
    split = run.split
    stand_ins = {**run.stand_in, "data": run.stand_in.get("data", False) or data.stand_in}
    return ReportHeader(
        run=str(run.folder),
        data=data.source,
        stand_ins=stand_ins,
        split=f"{split.kind} (seed {split.seed}, fold {split.fold})",
        n_test=len(split.test),
        n_evaluated=len(perts),
        profile=cfg.profile,
        cell_eval_version=cell_eval_version(),
        seed=cfg.seed,
        notes=tuple(notes),
    )


def run(cfg: EvaluateConfig) -> Path:
    """Score the run's predictions, other runs and built-in baselines; write the report folder; return it."""
    _check_config(cfg)
    run_info = read_run(cfg.run)
    pred_path = Path(cfg.predictions) if cfg.predictions is not None else run_info.folder / "predictions.h5ad"
    output = _plan_out(cfg, run_info, pred_path)
    pred = read_predictions(pred_path, run_info)
    notes: list[str] = []
    perts = evaluated_perturbations(pred, run_info.split, notes)
    methods = run_methods(cfg, run_info, pred, pred_path, perts)
    data = load_real_data(run_info)
    real = real_side(data, run_info, perts, pred, notes)
    methods += builtin_methods(cfg, training_effects(data, run_info), pred, perts, run_info.panel)
    header = _header(run_info, data, cfg, perts, notes)
    log.info(
        "evaluating %d held-out perturbations with cell-eval %s (%s profile): %s",
        len(perts),
        header.cell_eval_version,
        cfg.profile,
        ", ".join(m.name for m in methods),
    )
    with output.writing() as tmp:
        summaries = score_methods(methods, real, tmp, cfg, perts)
        table = write_report(tmp, header, summaries)
        plot_metrics(table, tmp / "metrics.png", header.stand_in_note)
        shown = {m.name: m.cells for m in methods if m.cells is not None}
        plot_pca(real, shown, tmp / "pca.png", np.random.default_rng(cfg.seed), header.stand_in_note)
        (tmp / "evaluate_config.json").write_text(json.dumps(to_json_dict(cfg), indent=2))
    log.info("evaluation of %s\n%s", run_info.folder, markdown_table(table))
    return output.out
