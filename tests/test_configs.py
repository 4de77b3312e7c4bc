"""The configs are the contract: nested, self-checking, one default per knob, readable in older runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ccfm.config import (
    MODEL_PRESETS,
    CascadeTimeConfig,
    ModelKnobs,
    ObjectiveConfig,
    SamplerConfig,
    TrainConfig,
    to_json_dict,
)
from ccfm.data.splits import Split
from ccfm.errors import CCFMError
from pipeline.run_folder import read_run


def test_replace_routes_each_setting_to_the_config_that_owns_it() -> None:
    cfg = TrainConfig(cache=Path("s.zarr"), out=Path("r")).replace(
        preset="tiny", latent_pca=8, latent_first_prob=0.2, cfg_dropout=0.1, steps=7
    )
    assert cfg.model == ModelKnobs(preset="tiny", latent_pca=8)
    assert cfg.objective == ObjectiveConfig(times=CascadeTimeConfig(latent_first_prob=0.2), cfg_dropout=0.1)
    assert cfg.steps == 7
    with pytest.raises(CCFMError, match="no setting 'latent_pcaa'"):
        cfg.replace(latent_pcaa=8)


def test_each_config_checks_its_own_values_with_the_option_name() -> None:
    for build, match in (
        (lambda: ModelKnobs(preset="huge"), "--preset must be one of tiny, base"),
        (lambda: ModelKnobs(latent_target="residual", latent_source="noise"), "needs --latent-source prior"),
        (lambda: ObjectiveConfig(cfg_dropout=1.0), r"--cfg-dropout must be a number in \[0, 0.99\]"),
        (lambda: CascadeTimeConfig(t_latent_for_expr="early"), "--t-latent-for-expr must be one of clean, late"),
        (lambda: SamplerConfig(method="dopri5"), "--method must be one of euler, rk4"),
        (lambda: ObjectiveConfig(latent_residual_weight=1.0, latent_loss="clean"), "with --latent-loss velocity"),
        (lambda: TrainConfig(cache=Path("s.zarr"), out=Path("r")).replace(latent_residual_weight=1.0,
                                                                          latent_source="noise"),
         "--latent-residual-weight keeps the latent near its prior: it needs --latent-source prior"),
    ):  # fmt: skip
        with pytest.raises(CCFMError, match=match):
            build()


def test_knobs_build_the_model_config_of_a_preset_and_keep_all_of_d_when_pca_is_not_smaller() -> None:
    model = ModelKnobs(preset="tiny", latent_pca=32).build(n_genes=10, n_drugs=2, latent_dim=64)
    assert (model.d_model, model.layers, model.latent_pca, model.n_drugs) == (
        MODEL_PRESETS["tiny"].d_model,
        MODEL_PRESETS["tiny"].layers,
        32,
        2,
    )
    assert ModelKnobs(latent_pca=64).build(10, 0, latent_dim=64).latent_pca == 0  # ≥ D: the full features
    assert ModelKnobs(latent="none").build(10, 0, latent_dim=64).latent_pca == 0


@pytest.mark.parametrize("layout", ["nested", "flat (runs before the nested configs)"])
def test_a_run_folder_reads_its_settings_in_either_layout(tmp_path: Path, layout: str) -> None:
    nested = to_json_dict(TrainConfig(cache=Path("s.zarr"), out=tmp_path, data=Path("/d.h5ad")).replace(
        latent="none", cfg_dropout=0.1
    ))  # fmt: skip
    flat = {"data": "/d.h5ad", "latent": "none", "cfg_dropout": 0.1, "schema": {}}
    train_config = nested if layout == "nested" else flat
    (tmp_path / "run.json").write_text(json.dumps({"train_config": train_config, "panel": ["A"]}))
    (tmp_path / "split.json").write_text(Split("additive", 0, 0, 0.3, ("A+ctrl",), ("A+B",)).to_json())
    info = read_run(tmp_path)
    assert (info.method, info.cfg_dropout, info.data) == ("ccfm-none", 0.1, Path("/d.h5ad"))
