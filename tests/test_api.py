"""CCFM from Python on the tiny stand-ins (no CLI underneath), and the in-silico screen of unmeasured pairs."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import anndata as ad
import matplotlib.image as mpimg
import pandas as pd
import pytest
from clitools import ccfm_command

import ccfm
from ccfm.errors import CCFMError

REPO = Path(__file__).resolve().parents[1]
TRAIN = dict(preset="tiny", steps=4, batch_size=8, lr=1e-3, warmup_steps=1, checkpoint_every=4, workers=0,
             device="cpu", split_seed=1)  # fmt: skip


@pytest.fixture(scope="module")
def api_run(tiny_workspace: Path, tmp_path_factory: pytest.TempPathFactory) -> ccfm.Run:
    """extract → train from Python, with the data as an in-memory AnnData."""
    root = tmp_path_factory.mktemp("api")
    adata = ad.read_h5ad(tiny_workspace / "data.h5ad")
    store = ccfm.extract(adata, scgpt=tiny_workspace / "scgpt", out=root / "store.zarr", n_genes=24, norm_cells=64,
                         device="cpu")  # fmt: skip
    return ccfm.train(store, out=root / "run", **TRAIN)


def test_extract_train_predict_evaluate_from_python(api_run: ccfm.Run) -> None:
    test = list(api_run.trained.info.split.test)
    pred = api_run.predict([*test, "ctrl+" + test[0].split("+")[0]], n_cells=5, steps=2)
    predicted = pred[pred.obs["target_gene"] != "non-targeting"]
    assert predicted.n_obs == 5 * (len(test) + 1) and list(pred.var_names) == api_run.panel
    assert set(predicted.obs["target_gene"]) == {*test, test[0].split("+")[0]}  # `ctrl+A` is stored as `A`
    scores = api_run.evaluate(pred.copy())
    assert set(scores["method"]) == {"ccfm", "additive", "control", "train_mean"}
    assert scores["pearson_delta"].between(-1, 1).all() and (scores["mse"] > 0).all()
    again = ccfm.load_run(api_run.folder).predict([*test, "ctrl+" + test[0].split("+")[0]], n_cells=5, steps=2)
    assert (again.X == pred.X).all()  # the run reloaded, the same seed: the same cells
    with pytest.raises(CCFMError, match="is unknown to this model"):
        api_run.predict(["NOTAGENE+ctrl"])


def _screen_cmd(run: Path, out: Path) -> list[str]:
    return ccfm_command("screen", run, "--out", out, "--cells", "4", "--batch-pairs", "1", "--device", "cpu")


def test_screen_scores_every_unmeasured_pair_and_a_killed_screen_resumes(api_run: ccfm.Run, tmp_path: Path) -> None:
    table = api_run.screen(cells=4, batch_pairs=1, out=tmp_path / "whole")
    data = ad.read_h5ad(api_run.trained.info.data)
    measured = set(data.obs["condition"])
    components = sorted({c.split("+")[0] for c in measured if c.endswith("+ctrl")})
    expected = {f"{a}+{b}" for i, a in enumerate(components) for b in components[i + 1 :]}
    expected -= {c for c in measured if "ctrl" not in c} | {"+".join(reversed(c.split("+"))) for c in measured}
    assert set(table["pair"]) == expected and len(table) == len(expected) > 1
    assert table["non_additivity"].is_monotonic_decreasing and list(table["rank"]) == list(range(1, len(table) + 1))
    image = mpimg.imread(tmp_path / "whole" / "screen.png")
    assert image.shape[0] > 200 and image.std() > 0.05

    killed = tmp_path / "killed"
    with open(tmp_path / "screen.log", "w") as log:
        proc = subprocess.Popen(_screen_cmd(api_run.folder, killed), cwd=REPO, stdout=subprocess.DEVNULL, stderr=log)
    deadline = time.monotonic() + 120
    while not (killed / "chunks" / "chunk-00000.npz").exists():
        assert proc.poll() is None, (tmp_path / "screen.log").read_text()[-2000:]
        assert time.monotonic() < deadline, "the screen wrote no chunk within 120 s"
        time.sleep(0.002)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (killed / "pairs.csv").exists()  # killed mid-screen
    kept = {p.name: p.stat().st_mtime_ns for p in (killed / "chunks").glob("*.npz")}
    result = subprocess.run(_screen_cmd(api_run.folder, killed), cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    assert {p: (killed / "chunks" / p).stat().st_mtime_ns for p in kept} == kept  # finished chunks kept, not redone
    pd.testing.assert_frame_equal(pd.read_csv(killed / "pairs.csv"), pd.read_csv(tmp_path / "whole" / "pairs.csv"))
    refused = subprocess.run(_screen_cmd(api_run.folder, killed), cwd=REPO, capture_output=True, text=True)
    assert refused.returncode == 1 and "already exists" in refused.stderr + refused.stdout


@pytest.mark.slow
def test_the_readme_python_example_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from cli import app

    readme = (REPO / "README.md").read_text()
    section = readme[readme.index("## From Python") :]
    start = section.index("```python\n") + len("```python\n")
    block = section[start : section.index("```\n", start)]
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    for args in (
        ["simulate", "norman", "--out", "norman.h5ad", "--scale", "0.004", "--min-cells", "4"],
        ["toy-scgpt", "--out", "scgpt", "--genes-from", "norman.h5ad"],
    ):
        result = runner.invoke(app, args)
        assert result.exit_code == 0, result.output
    namespace: dict = {}
    exec(compile(block, "README.md", "exec"), namespace)  # noqa: S102  # the documented example, as written
    scores = namespace["scores"]
    assert set(scores["method"]) == {"ccfm", "additive", "control", "train_mean"}
    assert namespace["pred"].obs["target_gene"].nunique() == 6  # 5 perturbations + the control cells
