"""`ccfm simulate`: write a labelled, SIMULATED stand-in (Norman- or ComboSciPlex-shaped) as .h5ad."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from ccfm.atomic import write_h5ad_atomic
from ccfm.config import SimulateConfig, to_json_dict
from ccfm.simulate.combosciplex import simulate_combosciplex
from ccfm.simulate.norman import simulate_norman
from pipeline.outputs import SIMULATION, plan_output

log = logging.getLogger(__name__)


def run(cfg: SimulateConfig) -> Path:
    """Simulate the data set `cfg.kind` and write it to `cfg.out`; returns the written path."""
    out = Path(cfg.out)
    output = plan_output(out, SIMULATION, overwrite=cfg.overwrite)
    out.parent.mkdir(parents=True, exist_ok=True)
    log.info(
        "simulating a %s-shaped stand-in (scale %g, seed %d, at least %d cells per condition)",
        cfg.kind,
        cfg.scale,
        cfg.seed,
        cfg.min_cells,
    )
    if cfg.kind == "norman":
        adata = simulate_norman(cfg.scale, cfg.seed, cfg.min_cells, cfg.interactions)
    else:
        adata = simulate_combosciplex(cfg.scale, cfg.seed, cfg.min_cells)
    adata.uns["simulation"]["config"] = json.dumps(to_json_dict(cfg))  # the artifact describes itself
    with output.writing() as path:
        write_h5ad_atomic(adata, path)
    log.info("wrote %s", out)
    return out
