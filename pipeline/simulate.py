"""`ccfm simulate`: write a labelled, SIMULATED stand-in (Norman- or ComboSciPlex-shaped) as .h5ad."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path

import anndata as ad

from ccfm.atomic import write_h5ad_atomic
from ccfm.config import SimulateConfig, to_json_dict
from ccfm.data.simulate_combosciplex import simulate_combosciplex
from ccfm.data.simulate_norman import simulate_norman
from ccfm.errors import CCFMError
from pipeline.outputs import SIMULATION, plan_output

log = logging.getLogger(__name__)

SIMULATORS: dict[str, Callable[[float, int, int], ad.AnnData]] = {
    "norman": simulate_norman,
    "combosciplex": simulate_combosciplex,
}


def _check_output(cfg: SimulateConfig) -> Path:
    out = Path(cfg.out)
    if cfg.kind not in SIMULATORS:
        raise CCFMError(f"unknown data set {cfg.kind!r}; choose one of: {', '.join(SIMULATORS)}")
    plan_output(out, SIMULATION, overwrite=cfg.overwrite)
    return out


def run(cfg: SimulateConfig) -> Path:
    """Simulate the data set `cfg.kind` and write it to `cfg.out`; returns the written path."""
    out = _check_output(cfg)
    out.parent.mkdir(parents=True, exist_ok=True)
    log.info(
        "simulating a %s-shaped stand-in (scale %g, seed %d, at least %d cells per condition)",
        cfg.kind,
        cfg.scale,
        cfg.seed,
        cfg.min_cells,
    )
    adata = SIMULATORS[cfg.kind](cfg.scale, cfg.seed, cfg.min_cells)
    adata.uns["simulation"]["config"] = json.dumps(to_json_dict(cfg))  # the artifact describes itself
    write_h5ad_atomic(adata, out)
    log.info("wrote %s", out)
    return out
