"""The whole pipeline through the real CLI on a small simulated Norman-shaped data set."""

from __future__ import annotations

from pathlib import Path

import anndata as ad
import matplotlib.image as mpimg
import pytest
from typer.testing import CliRunner

from cli import app

runner = CliRunner()


def _ok(*args: str) -> str:
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result.output


@pytest.mark.slow
def test_simulate_extract_train_generate_evaluate(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Paths typed relative to the folder the commands run in; generate and evaluate then run from another."""
    (tmp_path / "work").mkdir()
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "work")
    data, scgpt, store = Path("norman.h5ad"), Path("scgpt"), Path("store.zarr")
    out = _ok("simulate", "norman", "--out", data, "--scale", "0.004", "--min-cells", "4")
    assert "gears_norman" in out and "SIMULATED" in out
    _ok("toy-scgpt", "--out", scgpt, "--d-model", "16", "--layers", "1", "--heads", "2", "--genes-from", data)
    _ok("extract", data, "--scgpt", scgpt, "--out", store, "--genes", "128", "--device", "cpu", "--norm-cells", "256")
    runs = {}
    for latent in ("scgpt", "none"):
        runs[latent] = Path(f"run_{latent}")
        _ok(
            "train",
            store,  # the data file and schema come from the store
            "--out",
            runs[latent],
            "--preset",
            "tiny",
            "--steps",
            "6",
            "--batch-size",
            "8",
            "--checkpoint-every",
            "3",
            "--workers",
            "0",
            "--device",
            "cpu",
            "--latent",
            latent,
        )
    monkeypatch.chdir(tmp_path / "elsewhere")  # the run folders record absolute paths: they work from anywhere
    runs = {latent: tmp_path / "work" / run for latent, run in runs.items()}
    for run in runs.values():
        _ok("generate", run, "--cells", "3", "--steps", "2", "--device", "cpu")
    pred = ad.read_h5ad(runs["scgpt"] / "predictions.h5ad")
    assert pred.uns["ccfm"]["stand_in"]["data"] and "non-targeting" in set(pred.obs["target_gene"])
    out = _ok("evaluate", runs["scgpt"], "--baseline-run", runs["none"], "--profile", "minimal")
    report = (runs["scgpt"] / "eval" / "report.md").read_text()
    for method in ("| ccfm |", "| ccfm-none |", "| control |", "| additive |", "| train_mean |"):
        assert method in report
    assert "pearson_delta" in report and "stand-ins: data=yes" in report
    for plot in ("metrics.png", "pca.png"):
        image = mpimg.imread(runs["scgpt"] / "eval" / plot)
        assert image.shape[0] > 200 and image.std() > 0.05, f"{plot} looks blank"


def test_a_user_mistake_is_one_line_and_exit_1(tmp_path: Path) -> None:
    result = runner.invoke(app, ["inspect", str(tmp_path / "absent.h5ad")])
    assert result.exit_code == 1
    assert result.output.strip().count("\n") == 0 and result.output.startswith("error: data file")
    result = runner.invoke(app, ["generate", str(tmp_path)])
    assert result.exit_code == 1 and "is not a run folder" in result.output and "Traceback" not in result.output
