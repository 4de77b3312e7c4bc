"""The evaluation report: a table of headline cell-eval metrics per method, and the CSVs behind it."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import polars as pl

from ccfm.eval.celleval import MethodScores

#: cell-eval metric names shown in the report, in order; a metric no method has (e.g. mse_delta under the
#: `minimal` profile) is left out of the table.
HEADLINE_METRICS: tuple[str, ...] = (
    "pearson_delta",
    "mse",
    "mae",
    "mse_delta",
    "discrimination_score_l1",
    "overlap_at_N",
    "overlap_at_100",
    "de_direction_match",
)
#: Metrics where lower is better (cell-eval's MetricBestValue.ZERO); the others are best at 1.
LOWER_IS_BETTER: frozenset[str] = frozenset({"mse", "mae", "mse_delta", "mae_delta"})
MISSING = "—"


@dataclass(frozen=True)
class MethodSummary:
    """One method in the report: its scores, or why it has none for some perturbations."""

    method: str  # name shown in the report (e.g. ccfm, ccfm-none, control, additive)
    provenance: dict[str, Any]  # the predictions' uns["ccfm"] (or how a baseline was built)
    requested: tuple[str, ...]  # perturbations the report asked this method for
    scores: MethodScores | None  # None when the method predicts none of them
    missing: dict[str, str] = field(default_factory=dict)  # perturbation -> why it was not predicted


@dataclass(frozen=True)
class ReportHeader:
    """What the report is about: shown above the table."""

    run: str  # run folder
    data: str  # data file the real cells came from
    stand_ins: dict[str, bool]  # e.g. {"data": True, "scgpt": True}
    split: str  # e.g. "additive (seed 0, fold 0)"
    n_test: int  # held-out perturbations in the split
    n_evaluated: int  # perturbations with predictions and held-out real cells
    profile: str  # cell-eval profile
    cell_eval_version: str
    seed: int  # seeds the baselines' control-cell draws
    notes: tuple[str, ...] = ()  # anything else the reader must know (dropped perturbations, fallbacks)

    @property
    def stand_in_note(self) -> str:
        used = [name for name, flag in self.stand_ins.items() if flag]
        return f"STAND-IN {' + '.join(used)} (simulated / toy), not real results" if used else ""


def headline_metrics(summaries: Sequence[MethodSummary]) -> list[str]:
    present = {c for s in summaries if s.scores is not None for c in s.scores.per_perturbation.columns}
    return [m for m in HEADLINE_METRICS if m in present]


def _mean(column: pl.Series) -> float:
    """Mean over perturbations with a value (cell-eval leaves null/NaN where a metric is undefined)."""
    values = column.cast(pl.Float64).drop_nulls().drop_nans()
    return float(values.mean()) if values.len() else math.nan


def summary_table(summaries: Sequence[MethodSummary]) -> pd.DataFrame:
    """Rows = methods, columns = headline metrics (mean over the method's scored perturbations) + coverage."""
    metrics = headline_metrics(summaries)
    rows = []
    for s in summaries:
        row: dict[str, Any] = {"method": s.method}
        frame = s.scores.per_perturbation if s.scores is not None else None
        for m in metrics:
            row[m] = _mean(frame[m]) if frame is not None and m in frame.columns else math.nan
        n_scored = len(s.scores.perturbations) if s.scores is not None else 0
        row["perturbations"] = f"{n_scored}/{len(s.requested)}"
        rows.append(row)
    return pd.DataFrame(rows).set_index("method")


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return MISSING if math.isnan(value) else f"{value:.4f}"
    return str(value)


def markdown_table(table: pd.DataFrame) -> str:
    """`table` as a markdown table, arrows saying which direction is better, "—" for missing."""
    heads = [f"{c} {'↓' if c in LOWER_IS_BETTER else '↑'}" if c != "perturbations" else "scored" for c in table]
    lines = ["| method | " + " | ".join(heads) + " |", "|---" * (len(heads) + 1) + "|"]
    for method, row in table.iterrows():
        lines.append(f"| {method} | " + " | ".join(_cell(v) for v in row.tolist()) + " |")
    return "\n".join(lines)


def long_scores(summaries: Sequence[MethodSummary]) -> pd.DataFrame:
    """Every per-perturbation score of every method: columns method, perturbation, metric, value."""
    frames = []
    for s in summaries:
        if s.scores is None:
            continue
        wide = s.scores.per_perturbation.to_pandas()
        long = wide.melt(id_vars="perturbation", var_name="metric", value_name="value")
        frames.append(long.assign(method=s.method)[["method", "perturbation", "metric", "value"]])
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["method", "perturbation"])


def _header_lines(header: ReportHeader) -> list[str]:
    stand_in = header.stand_in_note
    lines = ["# CCFM evaluation", ""]
    if stand_in:
        lines += [f"> **{stand_in}.** These numbers test the pipeline, not the method.", ""]
    lines += [
        f"- run: `{header.run}`",
        f"- data: `{header.data}` (stand-ins: "
        + (", ".join(f"{k}={'yes' if v else 'no'}" for k, v in header.stand_ins.items()) or "none")
        + ")",
        f"- split: {header.split}; {header.n_test} held-out perturbations, {header.n_evaluated} evaluated",
        f"- cell-eval {header.cell_eval_version}, profile `{header.profile}`; baselines seeded with {header.seed}",
    ]
    lines += [f"- {note}" for note in header.notes]
    return lines


def _method_lines(summaries: Sequence[MethodSummary]) -> list[str]:
    lines = ["## Methods", ""]
    for s in summaries:
        what = s.provenance.get("description") or s.provenance.get("method", s.method)
        lines.append(f"- **{s.method}**: {what}")
        if s.missing:
            reasons: dict[str, list[str]] = {}
            for label, why in sorted(s.missing.items()):
                reasons.setdefault(why, []).append(label)
            for why, labels in reasons.items():
                shown = ", ".join(labels[:6]) + (f", … ({len(labels)} in all)" if len(labels) > 6 else "")
                lines.append(f"  - missing for {shown}: {why}")
        if s.scores is not None and s.scores.dropped_pred_only:
            lines.append(f"  - predicted but not held out (not scored): {', '.join(s.scores.dropped_pred_only[:6])}")
    return lines


def report_markdown(header: ReportHeader, summaries: Sequence[MethodSummary], table: pd.DataFrame) -> str:
    lines = _header_lines(header) + ["", "## Headline metrics (mean over scored perturbations)", ""]
    lines += [markdown_table(table), ""]
    lines += [
        "↑ higher is better, ↓ lower is better; — = not available. `scored` counts the perturbations a method "
        "predicts; means over different sets are not strictly comparable, and discrimination_score ranks each "
        "perturbation among the ones that method was scored on.",
        "",
    ]
    lines += _method_lines(summaries)
    lines += [
        "",
        "## Files",
        "",
        "- `summary.csv`: the table above; `metrics.csv`: every metric of every perturbation and method (long)",
        "- `<method>/results.csv`, `<method>/agg_results.csv`: cell-eval's own per-perturbation and aggregate "
        "tables; `<method>/real_de.csv`, `<method>/pred_de.csv`: its differential expression",
        "- `metrics.png`: headline metrics per method; `pca.png`: predicted vs real cells for a few perturbations",
        "",
    ]
    return "\n".join(lines)


def write_report(out: Path, header: ReportHeader, summaries: Sequence[MethodSummary]) -> pd.DataFrame:
    """report.md, summary.csv and metrics.csv in `out`; returns the summary table."""
    table = summary_table(summaries)
    table.to_csv(out / "summary.csv")
    long_scores(summaries).to_csv(out / "metrics.csv", index=False)
    (out / "report.md").write_text(report_markdown(header, summaries, table))
    return table
