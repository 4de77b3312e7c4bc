"""`ccfm toy-scgpt`: write a toy scGPT checkpoint in the released whole-human layout.

The released weights cannot be downloaded here; this stand-in exercises the real loader with real symbols. With
`--pretrain DATA.h5ad` it is first trained for `--minutes` with scGPT's masked-expression objective on DATA's
control cells (ccfm.scgpt.pretrain), so that its per-gene features encode co-expression context as the real
model's do; args.json records on what, for how long, and the held-out loss against its references.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict
from pathlib import Path
from typing import Any

import anndata as ad
import numpy as np
import torch

from ccfm.config import ToyScgptConfig
from ccfm.data.loading import load_dataset
from ccfm.data.panel import choose_panel, panel_columns
from ccfm.errors import CCFMError
from ccfm.scgpt.checkpoint import map_panel_to_vocab
from ccfm.scgpt.pretrain import TokenSpec, pretrain
from ccfm.scgpt.toy import SPECIAL_TOKENS, Pretrainer, build_toy_checkpoint, released_args
from pipeline.outputs import CHECKPOINT, plan_output
from pipeline.progress import progress

log = logging.getLogger(__name__)

GENE_SYMBOL_COLUMN = "gene_name"  # GEARS keeps Ensembl ids in var_names and symbols here
PRETRAIN_GENES = 1000  # the control cells' most variable genes it learns the context of (extract's default panel)
HELD_OUT_SHARE = 0.1  # control cells kept out of pretraining to score it
MIN_CONTROL_CELLS = 20


def gene_symbols_of(path: Path) -> list[str]:
    """Gene symbols of an h5ad: var['gene_name'] when present, else var_names."""
    path = Path(path)
    if not path.is_file():
        raise CCFMError(f"--genes-from {path} does not exist; pass an .h5ad file")
    try:
        adata = ad.read_h5ad(path, backed="r")  # only var is needed; X stays on disk
    except (OSError, KeyError, ValueError) as exc:
        raise CCFMError(f"{path} is not a readable .h5ad file ({exc}); pass an AnnData .h5ad") from exc
    try:
        if GENE_SYMBOL_COLUMN in adata.var.columns:
            return adata.var[GENE_SYMBOL_COLUMN].astype(str).tolist()
        return adata.var_names.astype(str).tolist()
    finally:
        adata.file.close()


def masked_expression_pretrainer(cfg: ToyScgptConfig) -> Pretrainer:
    """Trains a freshly built toy on the control cells of `cfg.pretrain` for `cfg.minutes` (see the module doc)."""
    data = load_dataset(Path(cfg.pretrain))
    controls = data.control_indices()
    if controls.size < MIN_CONTROL_CELLS:
        raise CCFMError(
            f"--pretrain {cfg.pretrain} has {controls.size} control cells; pretraining needs at least "
            f"{MIN_CONTROL_CELLS} (pass a data set with its control cells)"
        )
    panel = choose_panel(data, min(PRETRAIN_GENES, data.n_genes), cells="controls")

    released = released_args()  # the toy keeps the release's input layout (pad value, bins)

    def train(model: torch.nn.Module, token2idx: dict[str, int]) -> dict[str, Any]:
        symbols = [g for g in panel.symbols if g in token2idx]
        expression = data.expression[controls][:, panel_columns(data, symbols)].toarray()  # (Nc, G)
        order = np.random.default_rng(cfg.seed).permutation(controls.size)
        n_held = max(1, int(HELD_OUT_SHARE * controls.size))
        spec = TokenSpec(
            vocab_ids=np.array([token2idx[g] for g in symbols]),
            cls_id=token2idx["<cls>"],
            pad_id=token2idx["<pad>"],
            pad_value=float(released["pad_value"]),
            n_bins=int(released["n_bins"]),
        )
        seconds = 60.0 * cfg.minutes
        with progress(total=round(seconds), desc="pretrain toy scGPT", unit="s") as bar:
            result = pretrain(
                model, expression[order[n_held:]], expression[order[:n_held]], spec, seconds, cfg.seed,
                progress=lambda elapsed: bar.update(min(round(elapsed), bar.total) - bar.n),
            )  # fmt: skip
        log.info(
            "masked-expression MSE on %d held-out control cells: %.1f after %d steps (random weights %.1f; "
            "references: each gene's mean bin %.1f, one mean bin %.1f)",
            n_held, result.after.model, result.steps, result.before.model, result.after.gene_mean,
            result.after.constant,
        )  # fmt: skip
        return {
            "objective": "masked expression (scGPT GEP): MSE of masked bins, mask ratio 0.25 / 0.5 / 0.75",
            "data": str(Path(cfg.pretrain).resolve()),
            "data_stand_in": data.stand_in,
            "cells": int(controls.size - n_held),
            "held_out_cells": n_held,
            "genes": len(symbols),
            "minutes_budget": cfg.minutes,
            "seconds": round(result.seconds, 1),
            "steps": result.steps,
            "held_out_mse_random_weights": asdict(result.before),
            "held_out_mse_pretrained": asdict(result.after),
        }

    return train


def run(cfg: ToyScgptConfig) -> Path:
    """Build the toy checkpoint folder `cfg.out` and log what it holds."""
    out = Path(cfg.out)
    genes_from = cfg.genes_from if cfg.genes_from is not None else cfg.pretrain
    output = plan_output(out, CHECKPOINT, overwrite=cfg.overwrite, inputs=(genes_from, cfg.pretrain), staged=True)
    genes = gene_symbols_of(genes_from) if genes_from is not None else None
    trainer = masked_expression_pretrainer(cfg) if cfg.pretrain is not None else None
    with output.writing() as work:
        build_toy_checkpoint(work, cfg.d_model, cfg.layers, cfg.heads, genes, cfg.seed, trainer)

    token2idx: dict[str, int] = json.loads((out / "vocab.json").read_text())
    n_genes = len(token2idx) - len(SPECIAL_TOKENS)
    size_mb = (out / "best_model.pt").stat().st_size / 1e6
    log.info(
        "toy scGPT STAND-IN (%s, seed %d) written to %s: d_model %d, %d layers, %d heads, "
        "vocab %d genes + %s, best_model.pt %.1f MB",
        "random weights" if cfg.pretrain is None else f"pretrained on {cfg.pretrain}",
        cfg.seed,
        out,
        cfg.d_model,
        cfg.layers,
        cfg.heads,
        n_genes,
        "/".join(SPECIAL_TOKENS),
        size_mb,
    )
    if genes is not None:
        mapping = map_panel_to_vocab(genes, token2idx, min_coverage=0.0)  # only reported here
        log.info(
            "%d of the %d genes of %s are in the vocab (%.1f%%); absent e.g. %s",
            mapping.n_covered,
            len(genes),
            genes_from,
            100 * mapping.coverage,
            list(mapping.absent[:5]),
        )
    return out
