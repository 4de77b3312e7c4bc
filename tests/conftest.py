"""Shared fixtures. Each block is self-contained; add new fixtures as new blocks."""

from __future__ import annotations

import csv
from importlib import resources
from pathlib import Path

import pytest

# --- toy scGPT checkpoint (ccfm.latent.toy_checkpoint) ---------------------------------------------------

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
    from ccfm.latent.toy_checkpoint import build_toy_checkpoint

    out = tmp_path_factory.mktemp("toy_scgpt") / "whole_human_toy"
    return build_toy_checkpoint(out, d_model=32, layers=2, heads=4, genes=toy_scgpt_panel, seed=0)
