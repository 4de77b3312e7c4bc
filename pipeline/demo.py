"""`make demo` / `ccfm demo`: the whole pipeline on the embedded default, with stand-ins said as such.

Today: simulate a small Norman-shaped data set, describe it as the data layer loads it back, build
a toy scGPT checkpoint and extract the latent store.
"""

from __future__ import annotations

import logging
from pathlib import Path

import typer

from ccfm.config import ExtractConfig, SchemaOverrides, SimulateConfig, ToyScgptConfig
from ccfm.latent.store import LatentStore
from pipeline import extract, inspect, simulate, toy_scgpt

log = logging.getLogger(__name__)

DEMO_SCALE = 0.05  # ~4,600 cells: every real condition, small enough for 2 CPU cores
DEMO_SEED = 0
DEMO_GENES = 1000  # the seed panel size


def _banner(text: str) -> None:
    typer.echo(f"\n== {text}")


def run(out: Path) -> Path:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    typer.echo("CCFM demo — STAND-INS: the data are SIMULATED (shaped by real Norman 2019 metadata) and the scGPT "
               "checkpoint has RANDOM weights in the released layout. No number below is a biological result.")
    _banner("simulate a Norman-shaped data set")
    data_path = simulate.run(SimulateConfig(kind="norman", out=out / "norman_simulated.h5ad", scale=DEMO_SCALE,
                                            seed=DEMO_SEED, overwrite=True))
    typer.echo(inspect.describe(data_path, SchemaOverrides()))
    _banner("build a toy scGPT checkpoint (random weights)")
    scgpt_dir = toy_scgpt.run(ToyScgptConfig(out=out / "scgpt_toy", genes_from=data_path, seed=DEMO_SEED,
                                             overwrite=True))
    typer.echo(f"{scgpt_dir}")
    _banner("extract the latent store")
    store_path = extract.run(ExtractConfig(data=data_path, scgpt=scgpt_dir, out=out / "latents.zarr",
                                           n_genes=DEMO_GENES, device="auto", overwrite=True, seed=DEMO_SEED))
    store = LatentStore.open(store_path)
    typer.echo(f"{store_path}: {store.n_cells:,} cells × {store.n_genes} genes × {store.d_model} features (fp16), "
               f"{store.attrs['panel_coverage']:.0%} of the panel in the scGPT vocabulary")
    return out
