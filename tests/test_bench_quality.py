"""The quality study's bookkeeping: per-perturbation scores → per-fold means → mean ± sd over folds, by double type."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bench.quality_scores import across_folds, fold_means, per_perturbation


def _metrics_csv(folder: Path, rows: list[tuple[str, str, str, float]]) -> Path:
    (folder / "eval").mkdir(parents=True)
    frame = pd.DataFrame(rows, columns=["method", "perturbation", "metric", "value"])
    frame.to_csv(folder / "eval" / "metrics.csv", index=False)
    return folder / "eval"


def test_fold_means_then_mean_and_sd_over_folds_split_by_double_type(tmp_path: Path) -> None:
    types = {"A+B": "additive", "C+D": "synergy"}
    frames = []
    for fold, (add, syn) in enumerate([(0.2, 0.6), (0.4, 1.0)]):
        rows = [
            ("ccfm", "A+B", "pearson_delta", add),
            ("ccfm", "C+D", "pearson_delta", syn),
            ("ccfm", "C+D", "not_a_headline_metric", 9.0),
        ]
        frames.append(per_perturbation(_metrics_csv(tmp_path / f"f{fold}", rows), types, fold=fold))
    long = pd.concat(frames, ignore_index=True)
    assert set(long["metric"]) == {"pearson_delta"}
    assert dict(zip(long["perturbation"], long["double_type"], strict=False)) == {
        "A+B": "additive",
        "C+D": "non-additive",
    }

    stats = across_folds(fold_means(long, ["fold"])).set_index("subset")
    # all doubles: fold means 0.4 and 0.7 → 0.55 ± sd(0.4, 0.7)
    assert stats.loc["all", "mean"] == pytest.approx(0.55)
    assert stats.loc["all", "std"] == pytest.approx(np.std([0.4, 0.7], ddof=1))
    assert stats.loc["additive", "mean"] == pytest.approx(0.3)
    assert stats.loc["non-additive", "mean"] == pytest.approx(0.8)
    assert stats.loc["non-additive", "text"] == f"0.800 ± {np.std([0.6, 1.0], ddof=1):.3f}"


def test_real_data_without_planted_types_reports_all_doubles_only(tmp_path: Path) -> None:
    rows = [("ccfm", "A+B", "mse", 0.1), ("ccfm", "C+D", "mse", 0.3)]
    long = per_perturbation(_metrics_csv(tmp_path, rows), {}, fold=0)
    stats = across_folds(fold_means(long, ["fold"]))
    assert list(stats["subset"]) == ["all"]
    assert stats["mean"].iloc[0] == pytest.approx(0.2)


def test_the_study_reads_its_defaults_from_the_configs_and_every_sweep_variant_is_a_valid_config() -> None:
    from bench.quality import SWEEP, parse
    from ccfm.config import SamplerConfig, TrainConfig

    settings = parse([])
    assert (settings.sampler, settings.sampler_steps) == (SamplerConfig().method, SamplerConfig().steps)
    assert settings.variant in {v.name for v in SWEEP}
    base = TrainConfig(cache=Path("s.zarr"), out=Path("r"))
    for variant in SWEEP:
        base.replace(**variant.settings)  # refuses an unknown or out-of-range setting
