"""The quality study's scores: cell-eval's per-perturbation metrics, typed by double, averaged per fold, then
mean ± sd over folds; the markdown tables and plots of the report."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anndata as ad
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from ccfm.eval.report import LOWER_IS_BETTER  # noqa: E402

METRICS = ("pearson_delta", "mse", "mse_delta", "discrimination_score_l1", "overlap_at_N", "de_direction_match")


def double_types(data: Path) -> dict[str, str]:
    """Simulated data: each double's planted interaction ('additive' or a non-additive kind); real data: {}."""
    uns = ad.read_h5ad(data, backed="r").uns
    sim = uns.get("simulation", {})
    return {str(k): str(v) for k, v in dict(sim.get("interactions", {})).items()}


def per_perturbation(eval_dir: Path, types: dict[str, str], **tags: Any) -> pd.DataFrame:
    """The long per-perturbation scores of one report, tagged (fold, variant, …) and typed."""
    long = pd.read_csv(eval_dir / "metrics.csv")
    long = long[long["metric"].isin(METRICS)].copy()
    kind = long["perturbation"].map(types).fillna("unknown")
    long["double_type"] = kind.where(kind.isin(["additive", "unknown"]), "non-additive")
    long["value"] = pd.to_numeric(long["value"], errors="coerce")
    return long.assign(**tags)


def fold_means(long: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """Mean over perturbations for each (by..., method, metric), for all doubles and per double type."""
    groups = [*by, "method", "metric"]
    overall = long.groupby(groups, as_index=False)["value"].mean().assign(subset="all")
    typed = long[long["double_type"] != "unknown"]
    split = typed.groupby([*groups, "double_type"], as_index=False)["value"].mean()
    split = split.rename(columns={"double_type": "subset"})
    return pd.concat([overall, split], ignore_index=True)


def across_folds(means: pd.DataFrame) -> pd.DataFrame:
    """mean ± sd over folds: rows (subset, method), columns metric → 'mean ± sd'."""
    stats = means.groupby(["subset", "method", "metric"])["value"].agg(["mean", "std", "count"]).reset_index()
    stats["text"] = [
        f"{m:.3f} ± {sd:.3f}" if np.isfinite(sd) else f"{m:.3f}"
        for m, sd in zip(stats["mean"], stats["std"].fillna(np.nan), strict=True)
    ]
    return stats


def arrow(metric: str) -> str:
    return "↓" if metric in LOWER_IS_BETTER else "↑"


def markdown(stats: pd.DataFrame, subset: str, order: list[str]) -> str:
    rows = stats[stats["subset"] == subset]
    metrics = [m for m in METRICS if m in set(rows["metric"])]
    lines = ["| method | " + " | ".join(f"{m} {arrow(m)}" for m in metrics) + " |", "|---" * (len(metrics) + 1) + "|"]
    for method in [m for m in order if m in set(rows["method"])]:
        cells = [rows[(rows["method"] == method) & (rows["metric"] == m)]["text"] for m in metrics]
        lines.append(f"| {method} | " + " | ".join(c.iloc[0] if len(c) else "—" for c in cells) + " |")
    return "\n".join(lines)


def plot_folds(stats: pd.DataFrame, order: list[str], out: Path, note: str) -> None:
    """One panel per metric: mean ± sd over folds per method, bars grouped by double type."""
    metrics = [m for m in METRICS if m in set(stats["metric"])]
    subsets = [x for x in ("all", "additive", "non-additive") if x in set(stats["subset"])]
    fig, axes = plt.subplots(1, len(metrics), figsize=(3.2 * len(metrics), 3.6), squeeze=False)
    width = 0.8 / len(subsets)
    for ax, metric in zip(axes[0], metrics, strict=True):
        for j, subset in enumerate(subsets):
            rows = stats[(stats["metric"] == metric) & (stats["subset"] == subset)].set_index("method")
            methods = [m for m in order if m in rows.index]
            x = np.arange(len(methods)) + j * width
            ax.bar(x, rows.loc[methods, "mean"], width, yerr=rows.loc[methods, "std"].fillna(0), label=subset)
            ax.set_xticks(np.arange(len(methods)) + width * (len(subsets) - 1) / 2, methods, rotation=60, ha="right")
        ax.set_title(f"{metric} {arrow(metric)}", fontsize=9)
        ax.tick_params(labelsize=7)
    axes[0][0].legend(fontsize=7)
    fig.suptitle(f"mean ± sd over folds — {note}", fontsize=9)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)


def plot_sweep(sweep: pd.DataFrame, order: list[str], out: Path, note: str) -> None:
    """One panel per metric: each sweep variant's mean over the validation draw, variants in `order`."""
    metrics = [m for m in METRICS if m in set(sweep["metric"])]
    fig, axes = plt.subplots(1, len(metrics), figsize=(3.0 * len(metrics), 3.4), squeeze=False)
    for ax, metric in zip(axes[0], metrics, strict=True):
        rows = sweep[(sweep["metric"] == metric) & (sweep["subset"] == "all")].set_index("variant")
        names = [v for v in order if v in rows.index]
        ax.bar(names, rows.loc[names, "value"], color="tab:blue")
        ax.set_title(f"{metric} {arrow(metric)}", fontsize=9)
        ax.tick_params(axis="x", labelrotation=60, labelsize=7)
    fig.suptitle(f"cascade knobs on the validation draw — {note}", fontsize=9)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)
