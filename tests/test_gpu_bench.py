"""The GPU benchmark's rehearsal: `bench/gpu.sh --rehearse` end to end on this CPU, in an interpreter that finds
only what the GPU machine has plus the GPU kit (bench/gpu_kit.py), so the script is known to work there."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
MACHINE_SITE = REPO / "tests" / "gpu_machine"  # its sitecustomize.py blocks what the GPU machine lacks


def _as_on_the_gpu_machine(**extra: str) -> dict[str, str]:
    return {**os.environ, "PYTHON": sys.executable, "PYTHONPATH": f"{MACHINE_SITE}{os.pathsep}{REPO}",
            "OMP_NUM_THREADS": "1", **extra}  # fmt: skip


def test_the_interpreter_of_the_rehearsal_lacks_what_the_gpu_machine_lacks() -> None:
    code = (
        "import importlib.util as u, sys;"
        "assert u.find_spec('scanpy') is None and u.find_spec('cell_eval') is None and u.find_spec('datasets') is None;"
        "import anndata, zarr, numcodecs, torch, typer;"
        "from ccfm.scgpt.upstream import scgpt_classes; scgpt_classes();"
        "import importlib.metadata as md; md.version('zarr')"
    )
    result = subprocess.run([sys.executable, "-c", code], env=_as_on_the_gpu_machine(), capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    blocked = subprocess.run([sys.executable, "-c", "import scanpy"], env=_as_on_the_gpu_machine(), capture_output=True)
    assert blocked.returncode != 0


def test_gpu_bench_rehearsal_runs_extract_train_generate_and_reports_every_figure(tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = subprocess.run(
        ["bash", str(REPO / "bench" / "gpu.sh"), "--rehearse", "--device", "cpu"],
        env=_as_on_the_gpu_machine(OUT=str(out)), capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert sorted(f.name for f in out.iterdir()) == ["gpu.json", "gpu.log", "gpu.md"]  # a device run returns few
    report = json.loads((out / "gpu.json").read_text())
    assert report["sizes_name"] == "rehearsal" and "SIMULATED" in report["stand_in"]
    e, t, g, h = report["extraction"], report["training"], report["generation"], report["helpers"]
    assert not report["failed"]
    assert e["cells"] > 0 and e["gflop_per_cell"] > 0
    assert h["processes"] >= 1  # the helper processes ran here too
    for value in (e["end_to_end_cells_per_s"], e["batched_over_naive"], e["physical_limit_cells_per_s"],
                  h["helpers_over_none"], h["constant_model_cells_per_s"],
                  t["cached_s_per_step"], t["on_the_fly_s_per_step"], t["achieved_tflops"],
                  g["cascaded_cells_per_s"], g["no_latent_cells_per_s"]):  # fmt: skip
        assert math.isfinite(value) and value > 0
    assert 0 <= t["data_wait_share"] <= 1
    table = (out / "gpu.md").read_text()
    assert "on-the-fly / cache" in table and "batched vs naive" in table and "tokenizing processes" in table
    assert "replaced by a constant" in table


def test_a_failing_stage_is_reported_and_the_others_still_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """On a lent GPU there is one short run: training failing must not lose extraction's or the helpers' figures
    (generation, which needs the trained model, is skipped), and the exit status must say it failed."""
    from bench import gpu

    extraction = {"end_to_end_cells_per_s": 1.0, "batched_over_naive": 2.0, "batched_cells_per_s": 3.0,
                  "gflop_per_cell": 0.1, "peak_tflops_assumed": 1.0, "physical_limit_cells_per_s": 4.0,
                  "batched_tflops": 0.5, "matmul_tflops_measured": 0.6}  # fmt: skip
    helpers = {"cells": 10, "cores": 2, "processes": 1, "threads": 1, "helpers_cells_per_s": 5.0,
               "none_cells_per_s": 6.0, "helpers_over_none": 0.8, "constant_model_cells_per_s": 7.0}  # fmt: skip

    def no_training(*args: object) -> None:
        raise RuntimeError("CUDA error: out of memory")

    monkeypatch.setattr(gpu, "bench_extraction", lambda s, work, device: (extraction, work / "d", work / "c"))
    monkeypatch.setattr(gpu, "bench_training", no_training)
    monkeypatch.setattr(gpu, "bench_helpers", lambda *args: helpers)
    monkeypatch.setattr(gpu, "resolve_device", lambda *args: gpu.torch.device("cpu"))
    with pytest.raises(SystemExit, match="training failed"):
        gpu.main(["--out", str(tmp_path), "--rehearse"])
    report = json.loads((tmp_path / "gpu.json").read_text())
    assert report["extraction"] == extraction and report["helpers"] == helpers
    assert "generation" not in report and "training" not in report
    assert report["failed"]["training"].startswith("RuntimeError: CUDA error: out of memory")
    table = (tmp_path / "gpu.md").read_text()
    assert "training: FAILED" in table and "batched vs naive" in table and "replaced by a constant" in table
