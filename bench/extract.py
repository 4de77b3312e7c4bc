"""Extraction benchmark, side by side in one run on the same cells and checkpoint.

1. batched + length-sorted extraction vs a naive one-cell-at-a-time `_encode` loop (cells/s, ratio; goal ≥ 5×);
2. store bytes per cell vs raw fp16 G×D×2 on simulated Norman cells (goal ≤ 0.4×);
3. read throughput of one perturbation's batch of 48 cells;
4. seconds per cell with a full-size random checkpoint (d 512, 12 layers, 8 heads) on a few dozen cells.

Data are a SIMULATED Norman stand-in and the checkpoints are random toys in the released layout.
Run: .venv/bin/python -m bench.extract [--cells 512] [--full-cells 24]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import anndata as ad
import numpy as np

from bench.common import report, simulated_norman, timed
from ccfm.config import ExtractConfig
from ccfm.data.loading import load_dataset
from ccfm.data.panel import choose_panel
from ccfm.latent.store import LatentStore
from ccfm.scgpt.checkpoint import load_scgpt, map_panel_to_vocab
from ccfm.scgpt.extractor import FeatureExtractor
from ccfm.scgpt.toy import build_toy_checkpoint
from pipeline import extract

GENES = 1000
READ_BATCH = 48


def _panel_expression(data_path: Path, scgpt_dir: Path, n_cells: int) -> tuple[FeatureExtractor, np.ndarray, list]:
    data = load_dataset(data_path)
    panel = choose_panel(data, GENES)
    scgpt = load_scgpt(scgpt_dir)
    vocab = map_panel_to_vocab(list(panel.symbols), scgpt.vocab)
    rows = np.sort(np.random.default_rng(0).choice(data.n_cells, size=min(n_cells, data.n_cells), replace=False))
    expression = data.expression[rows][:, list(panel.columns)].toarray()  # (N, G)
    return FeatureExtractor(scgpt, vocab.vocab_ids), expression, data.obs_names[rows].tolist()


def bench_batching(extractor: FeatureExtractor, expression: np.ndarray, names: list) -> dict:
    def naive() -> None:
        for i in range(len(names)):
            extractor.extract(expression[i : i + 1], names[i : i + 1])

    t_naive, _ = timed(naive)
    t_batched, _ = timed(lambda: extractor.extract_sorted(expression, names, batch_size=32))
    return {
        "cells": len(names),
        "naive_cells_per_s": len(names) / t_naive,
        "batched_cells_per_s": len(names) / t_batched,
        "speedup": t_naive / t_batched,
    }


def bench_store(data_path: Path, scgpt_dir: Path, work: Path, n_cells: int) -> dict:
    full = ad.read_h5ad(data_path)
    keep = np.sort(np.random.default_rng(1).choice(full.n_obs, size=min(n_cells, full.n_obs), replace=False))
    subset = work / "subset.h5ad"
    full[keep].copy().write_h5ad(subset)
    out = extract.run(
        ExtractConfig(
            data=subset, scgpt=scgpt_dir, out=work / "store.zarr", n_genes=GENES, device="cpu", norm_cells=1024
        )
    )
    store = LatentStore.open(out)
    stored = sum(f.stat().st_size for f in (out / "features").rglob("*") if f.is_file())
    raw = store.n_cells * store.n_genes * store.d_model * 2
    groups = {k: v for k, v in store.attrs["groups"].items() if v[1] - v[0] >= READ_BATCH}
    label, (start, stop) = max(groups.items(), key=lambda kv: kv[1][1] - kv[1][0])
    rng = np.random.default_rng(2)
    batches = [rng.choice(np.arange(start, stop), size=READ_BATCH, replace=False) for _ in range(10)]
    t_read, _ = timed(lambda: [store.read(b) for b in batches])
    return {
        "cells": store.n_cells,
        "D": store.d_model,
        "covered_fraction": float(store.covered[:].mean()),
        "bytes_per_cell": stored / store.n_cells,
        "raw_fp16_bytes_per_cell": raw / store.n_cells,
        "ratio": stored / raw,
        "read_batches_per_s": len(batches) / t_read,
        "read_cells_per_s": len(batches) * READ_BATCH / t_read,
        "read_perturbation": label,
    }


def bench_full_size(data_path: Path, work: Path, n_cells: int) -> dict:
    folder = build_toy_checkpoint(work / "full_size", d_model=512, layers=12, heads=8, genes=None, seed=0)
    full = bench_batching(*_panel_expression(data_path, folder, n_cells))
    return {**full, "seconds_per_cell": 1 / full["batched_cells_per_s"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, default=512, help="cells for the batching comparison")
    parser.add_argument("--store-cells", type=int, default=2048, help="cells written to the measured store")
    parser.add_argument("--full-cells", type=int, default=24, help="cells for the full-size checkpoint")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        data_path = simulated_norman(work, scale=0.05)
        toy = build_toy_checkpoint(work / "toy", d_model=64, layers=2, heads=4, genes=None, seed=0)
        batching = bench_batching(*_panel_expression(data_path, toy, args.cells))
        store = bench_store(data_path, toy, work, args.store_cells)
        full = bench_full_size(data_path, work, args.full_cells)
    rows = [
        ("naive one-cell loop, cells/s (toy d64 L2)", f"{batching['naive_cells_per_s']:.1f}", ""),
        ("batched + length-sorted, cells/s", f"{batching['batched_cells_per_s']:.1f}", ""),
        ("batched / naive", f"{batching['speedup']:.2f}x", ">= 5x"),
        (f"store bytes per cell (G={GENES}, D={store['D']})", f"{store['bytes_per_cell']:.0f}", ""),
        ("raw fp16 G x D x 2 bytes per cell", f"{store['raw_fp16_bytes_per_cell']:.0f}", ""),
        ("store / raw", f"{store['ratio']:.3f}x", "<= 0.4x"),
        ("covered fraction of (cell, gene)", f"{store['covered_fraction']:.3f}", ""),
        (f"read one perturbation's {READ_BATCH} cells, batches/s", f"{store['read_batches_per_s']:.1f}", ""),
        ("full-size random scGPT (d512 L12), batched s/cell", f"{full['seconds_per_cell']:.3f}", ""),
        ("full-size: batched / naive", f"{full['speedup']:.2f}x", ""),
    ]
    report(
        "extract",
        rows,
        {
            "batching": batching,
            "store": store,
            "full_size": full,
            "stand_in": "simulated Norman data, random-weight scGPT checkpoints",
        },
    )


if __name__ == "__main__":
    main()
