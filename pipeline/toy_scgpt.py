"""`ccfm toy-scgpt`: write a randomly initialized scGPT checkpoint in the released whole-human layout.

The released weights cannot be downloaded here; this stand-in exercises the real loader with real symbols.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import anndata as ad

from ccfm.config import ToyScgptConfig
from ccfm.errors import CCFMError
from ccfm.latent.scgpt_checkpoint import map_panel_to_vocab
from ccfm.latent.toy_checkpoint import SPECIAL_TOKENS, build_toy_checkpoint
from pipeline.outputs import CHECKPOINT, plan_output

log = logging.getLogger(__name__)

GENE_SYMBOL_COLUMN = "gene_name"  # GEARS keeps Ensembl ids in var_names and symbols here


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


def run(cfg: ToyScgptConfig) -> Path:
    """Build the toy checkpoint folder `cfg.out` and log what it holds."""
    out = Path(cfg.out)
    output = plan_output(out, CHECKPOINT, overwrite=cfg.overwrite, inputs=(cfg.genes_from,), staged=True)
    genes = gene_symbols_of(cfg.genes_from) if cfg.genes_from is not None else None
    output.begin()
    try:
        build_toy_checkpoint(output.work, cfg.d_model, cfg.layers, cfg.heads, genes, cfg.seed)
        output.publish()
    finally:
        output.discard()

    token2idx: dict[str, int] = json.loads((out / "vocab.json").read_text())
    n_genes = len(token2idx) - len(SPECIAL_TOKENS)
    size_mb = (out / "best_model.pt").stat().st_size / 1e6
    log.info(
        "toy scGPT STAND-IN (random weights, seed %d) written to %s: d_model %d, %d layers, %d heads, "
        "vocab %d genes + %s, best_model.pt %.1f MB",
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
            cfg.genes_from,
            100 * mapping.coverage,
            list(mapping.absent[:5]),
        )
    return out
