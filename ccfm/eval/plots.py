"""Evaluation figures: headline metrics per method, and a PCA of predicted vs real cells per perturbation."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp
from matplotlib import colormaps
from matplotlib.figure import Figure  # a bare Figure renders with Agg: no pyplot, no global backend switch

from ccfm.eval.predictions import CONTROL_LABEL, PRED_COL
from ccfm.eval.report import LOWER_IS_BETTER

PCA_PANELS = 4  # perturbations shown in pca.png (those with the most real cells)
PCA_MAX_POINTS = 300  # cells drawn per group and panel (seeded subsample), to keep the scatter legible
REAL_COLORS = {"control (real)": "#b0b0b0", "real": "#000000"}


def _title(text: str, stand_in_note: str) -> str:
    return f"{text}\n{stand_in_note}" if stand_in_note else text


def plot_metrics(table: pd.DataFrame, out: Path, stand_in_note: str = "") -> Path:
    """Bar chart per headline metric, one bar per method; "—" where a method has no value."""
    metrics = [c for c in table.columns if c != "perturbations"]
    n_cols = min(4, max(1, len(metrics)))
    n_rows = max(1, math.ceil(len(metrics) / n_cols))
    fig = Figure(figsize=(3.6 * n_cols, 3.2 * n_rows + 0.6))
    axes = fig.subplots(n_rows, n_cols, squeeze=False)
    colors = colormaps["tab10"](np.arange(len(table)) % 10)
    x = np.arange(len(table))
    for ax, metric in zip(axes.ravel(), metrics, strict=False):
        values = table[metric].to_numpy(dtype=float)
        ax.bar(x, np.nan_to_num(values), color=colors)
        for xi, v in zip(x, values, strict=True):
            ax.annotate(
                "—" if np.isnan(v) else f"{v:.3g}",
                (xi, 0 if np.isnan(v) else v),
                ha="center",
                va="bottom",
                fontsize=7,
                xytext=(0, 2),
                textcoords="offset points",
            )
        ax.set_title(f"{metric} ({'lower' if metric in LOWER_IS_BETTER else 'higher'} is better)", fontsize=9)
        ax.set_xticks(x, table.index.tolist(), rotation=30, ha="right", fontsize=8)
        ax.axhline(0, color="black", linewidth=0.5)
    for ax in axes.ravel()[len(metrics) :]:
        ax.set_visible(False)
    fig.suptitle(_title("cell-eval headline metrics (mean over perturbations)", stand_in_note), fontsize=10)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    return out


def _dense(x: np.ndarray | sp.spmatrix) -> np.ndarray:
    return np.asarray(x.toarray() if sp.issparse(x) else x, dtype=np.float64)


def _cells(adata: ad.AnnData, label: str) -> np.ndarray:
    return _dense(adata.X[(adata.obs[PRED_COL].astype(str) == label).to_numpy()])  # (n, G)


def _subsample(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return x if len(x) <= PCA_MAX_POINTS else x[np.sort(rng.choice(len(x), PCA_MAX_POINTS, replace=False))]


def pca_perturbations(real: ad.AnnData, n: int = PCA_PANELS) -> list[str]:
    """The `n` perturbations with the most real cells (ties by label)."""
    counts = real.obs[PRED_COL].astype(str).value_counts()
    counts = counts[counts.index != CONTROL_LABEL]
    return sorted(counts.index, key=lambda lab: (-counts[lab], lab))[:n]


def _pca_basis(real: ad.AnnData, shown: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Mean (G,) and top-2 axes (G, 2) of the real cells of `shown` plus the real controls."""
    fit = np.vstack([_cells(real, lab) for lab in [*shown, CONTROL_LABEL]])  # (n, G)
    mean = fit.mean(axis=0)
    _, _, vt = np.linalg.svd(fit - mean, full_matrices=False)
    return mean, vt[:2].T


def plot_pca(
    real: ad.AnnData,
    methods: Mapping[str, ad.AnnData],
    out: Path,
    rng: np.random.Generator,
    stand_in_note: str = "",
) -> Path:
    """One panel per perturbation: PCA (fit on real cells) of real controls, real cells and each method.

    Points are cells (a seeded subsample); each group's centroid is drawn as a large X.
    """
    shown = pca_perturbations(real)
    mean, axes2 = _pca_basis(real, shown)
    colors = dict(zip(methods, colormaps["tab10"](np.arange(len(methods)) % 10), strict=True))
    fig = Figure(figsize=(4.2 * max(1, len(shown)), 4.4))
    axes = fig.subplots(1, max(1, len(shown)), squeeze=False)
    control = _subsample(_cells(real, CONTROL_LABEL), rng)
    for ax, label in zip(axes.ravel(), shown, strict=False):
        groups = {"control (real)": control}
        for name, adata in methods.items():
            if label in set(adata.obs[PRED_COL].astype(str)):
                groups[name] = _subsample(_cells(adata, label), rng)
        groups["real"] = _subsample(_cells(real, label), rng)  # drawn last: on top
        for z, (name, x) in enumerate(groups.items()):
            xy = (x - mean) @ axes2  # (n, 2)
            color = REAL_COLORS.get(name, colors.get(name))
            ax.scatter(xy[:, 0], xy[:, 1], s=6, alpha=0.5, color=color, label=name, linewidths=0, zorder=z)
            centroid = xy.mean(axis=0)  # the pseudobulk, which most cell-eval metrics compare
            ax.scatter(*centroid, s=90, marker="X", color=color, edgecolors="black", linewidths=0.8, zorder=100 + z)
        ax.set_title(label, fontsize=10)
        ax.set_xlabel("PC1 (real cells)")
        ax.set_ylabel("PC2")
    axes.ravel()[0].legend(fontsize=7, markerscale=2, loc="best")
    fig.suptitle(_title("predicted vs real cells, PCA fit on real cells + controls", stand_in_note), fontsize=10)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    return out


def plot_screen(
    table: pd.DataFrame,
    top: Sequence[str],
    predicted: np.ndarray,
    additive: np.ndarray,
    out: Path,
    stand_in_note: str = "",
) -> Path:
    """Left: the interaction map, each screened pair's non-additivity between its two components (blank where a
    pair was measured or not screened). Right: the top pairs' predicted shift against their additive shift, one
    point per gene (predicted, additive: (k, G) changes against the control mean)."""
    components = sorted(set(table["a"]) | set(table["b"]))
    index = {c: i for i, c in enumerate(components)}
    grid = np.full((len(components), len(components)), np.nan)
    for a, b, v in zip(table["a"], table["b"], table["non_additivity"], strict=True):
        grid[index[a], index[b]] = grid[index[b], index[a]] = v
    n_top = len(top)
    fig = Figure(figsize=(13, 6.2))
    spec = fig.add_gridspec(2, 4, width_ratios=[2.2, 1, 1, 1])
    ax = fig.add_subplot(spec[:, 0])
    image = ax.imshow(grid, cmap="magma", interpolation="nearest")
    fig.colorbar(image, ax=ax, shrink=0.8, label="non-additivity ‖δab − (δa + δb)‖ / ‖δa + δb‖")
    ticks = np.arange(len(components)) if len(components) <= 40 else np.arange(0, len(components), 10)
    ax.set_xticks(ticks, [components[i] for i in ticks], rotation=90, fontsize=6)
    ax.set_yticks(ticks, [components[i] for i in ticks], fontsize=6)
    ax.set_title(f"predicted interaction of {len(table)} unmeasured pairs", fontsize=10)
    for i in range(min(n_top, 6)):
        sub = fig.add_subplot(spec[i // 3, 1 + i % 3])
        sub.scatter(additive[i], predicted[i], s=5, color="#3b6fb6")
        lo = float(min(additive[i].min(), predicted[i].min()))
        hi = float(max(additive[i].max(), predicted[i].max()))
        sub.plot([lo, hi], [lo, hi], color="black", linewidth=0.6)
        sub.set_title(f"#{i + 1} {top[i]}", fontsize=8)
        sub.tick_params(labelsize=6)
        if i % 3 == 0:
            sub.set_ylabel("predicted shift", fontsize=7)
        if i // 3 == 1 or n_top <= 3:
            sub.set_xlabel("additive shift δa + δb", fontsize=7)
    fig.suptitle(_title("in-silico screen: which unmeasured pairs depart from additivity", stand_in_note), fontsize=10)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    return out
