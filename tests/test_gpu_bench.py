"""The GPU benchmark's rehearsal: `bench/gpu.sh --rehearse` end to end on this CPU, in an interpreter that finds
only what the GPU machine has plus the GPU kit (bench/gpu_kit.py), so the script is known to work there."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

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
    report = json.loads((out / "gpu.json").read_text())
    assert report["sizes_name"] == "rehearsal" and "SIMULATED" in report["stand_in"]
    e, t, g = report["extraction"], report["training"], report["generation"]
    assert e["cells"] > 0 and e["gflop_per_cell"] > 0
    assert e["helpers"]["processes"] >= 1  # the helper processes ran here too
    for value in (e["end_to_end_cells_per_s"], e["batched_over_naive"], e["physical_limit_cells_per_s"],
                  e["helpers"]["helpers_over_none"], e["helpers"]["constant_model_cells_per_s"],
                  t["cached_s_per_step"], t["on_the_fly_s_per_step"], t["achieved_tflops"],
                  g["cascaded_cells_per_s"], g["no_latent_cells_per_s"]):  # fmt: skip
        assert math.isfinite(value) and value > 0
    assert 0 <= t["data_wait_share"] <= 1
    table = (out / "gpu.md").read_text()
    assert "on-the-fly / cache" in table and "batched vs naive" in table and "tokenizing processes" in table
    assert "replaced by a constant" in table
