"""Shared fixtures. Each block is self-contained; add new fixtures as new blocks."""

from __future__ import annotations

import csv
from importlib import resources
from pathlib import Path

import pytest

# --- toy scGPT checkpoint (ccfm.scgpt.toy) ---------------------------------------------------

TOY_SCGPT_PANEL_SIZE = 300  # real Norman gene symbols: most are in the census vocab, some are not


@pytest.fixture(scope="session")
def toy_scgpt_panel() -> list[str]:
    """The first few hundred real gene symbols of the Norman data set, in data order."""
    text = resources.files("ccfm.resources").joinpath("norman", "var_genes.csv").read_text()
    rows = list(csv.DictReader(text.splitlines()))
    return [row["gene_name"] for row in rows[:TOY_SCGPT_PANEL_SIZE]]


@pytest.fixture(scope="session")
def toy_scgpt_dir(tmp_path_factory: pytest.TempPathFactory, toy_scgpt_panel: list[str]) -> Path:
    """A tiny scGPT checkpoint folder in the released layout (d_model 32, 2 layers, 4 heads). Do not modify:
    copy it (shutil.copytree) before corrupting files."""
    from ccfm.scgpt.toy import build_toy_checkpoint

    out = tmp_path_factory.mktemp("toy_scgpt") / "whole_human_toy"
    return build_toy_checkpoint(out, d_model=32, layers=2, heads=4, genes=toy_scgpt_panel, seed=0)


# --- a tiny pipeline workspace: data with real gene symbols and two toy scGPT checkpoints -----------------


@pytest.fixture(scope="session")
def tiny_workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`data.h5ad` (GEARS layout, 10 conditions × 12 cells, 40 real genes) and two toy checkpoints in the
    released layout that differ only in their seed: `scgpt` and `scgpt_other` (d_model 16, 1 layer)."""
    from factories import REAL_GENES, tiny_gears_adata

    from ccfm.scgpt.toy import build_toy_checkpoint

    root = tmp_path_factory.mktemp("workspace")
    tiny_gears_adata(cells_per_condition=12, genes=REAL_GENES).write_h5ad(root / "data.h5ad")
    for name, seed in (("scgpt", 0), ("scgpt_other", 1)):
        build_toy_checkpoint(root / name, d_model=16, layers=1, heads=2, genes=REAL_GENES, seed=seed)
    return root


# --- stores and runs built through the CLI (the bad-input and overwrite tests) ---------------------------


@pytest.fixture(scope="session")
def cli_env(tiny_workspace: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two stores (24 and 20 genes) and a 2-step run on each, over the tiny workspace. Do not modify: copy."""
    from clitools import ok

    root = tmp_path_factory.mktemp("errors")
    data, scgpt = tiny_workspace / "data.h5ad", tiny_workspace / "scgpt"
    for store, genes in (("store.zarr", "24"), ("store20.zarr", "20")):
        ok(
            "extract",
            data,
            "--scgpt",
            scgpt,
            "--out",
            root / store,
            "--genes",
            genes,
            "--norm-cells",
            "64",
            "--shard-cells",
            "32",
            "--device",
            "cpu",
        )
    for name, store in (("run", "store.zarr"), ("run20", "store20.zarr")):
        ok(
            "train",
            root / store,
            "--out",
            root / name,
            "--preset",
            "tiny",
            "--steps",
            "2",
            "--batch-size",
            "4",
            "--workers",
            "0",
            "--device",
            "cpu",
            "--split-seed",
            "1",
        )
    return {
        "root": root,
        "data": data,
        "scgpt": scgpt,
        "other_scgpt": tiny_workspace / "scgpt_other",
        "store": root / "store.zarr",
        "run": root / "run",
        "run20": root / "run20",
    }
