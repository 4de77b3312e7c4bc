"""Extraction benchmark, side by side in one run on the same cells and checkpoint.

1. batched + length-sorted extraction vs a naive one-cell-at-a-time `_encode` loop (cells/s, ratio; goal ≥ 5×);
2. store bytes per cell vs raw fp16 G×D×2 on simulated Norman cells (goal ≤ 0.4×);
3. read throughput of one perturbation's batch of 48 cells;
4. seconds per cell with a full-size random checkpoint (d 512, 12 layers, 8 heads) on a few dozen cells;
5. over a few shards, where the time goes (tokens, the model, gather + normalization + fp16 + moments, shard
   write + checksums + fsync) with every step in one thread so that the times add up; the same with the writer
   thread `ccfm extract` uses on a CPU; the model's achieved FLOP/s against a plain matmul of the same shapes;
   and the ceiling of everything outside the model (the model replaced by a constant, with the writer thread),
   for the toy and the full-size checkpoint. (The tokenizing helper processes `ccfm extract` adds on a GPU are
   compared in bench/gpu.py: on these 2 cores they only compete with the model.)

Data are a SIMULATED Norman stand-in and the checkpoints are random toys in the released layout.
Run: .venv/bin/python -m bench.extract [--cells 512] [--full-cells 24]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anndata as ad
import numpy as np
import torch

from bench.common import report, simulated_norman, timed
from ccfm.config import ExtractConfig
from ccfm.data.loading import load_dataset
from ccfm.data.panel import choose_panel
from ccfm.latent.source import stored_shard
from ccfm.latent.statistics import FrozenStats
from ccfm.latent.store import LatentStore, ShardWriter, StoreLayout
from ccfm.scgpt.checkpoint import load_scgpt, map_panel_to_vocab
from ccfm.scgpt.extractor import FeatureExtractor
from ccfm.scgpt.tokens import coverage
from ccfm.scgpt.toy import build_toy_checkpoint
from pipeline import extract
from pipeline.extract import GroupTokens

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
            extractor.extract_covered(expression[i : i + 1], names[i : i + 1], batch_size=1)

    t_naive, _ = timed(naive)
    t_batched, _ = timed(lambda: extractor.extract_covered(expression, names, batch_size=32))
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


def encoder_flops(args: dict, lengths: list[int], padded: int) -> tuple[float, float]:
    """(FLOPs as run on a batch padded to `padded` tokens, FLOPs of its real tokens only) of scGPT's encoder:
    per layer and token 2·(4·D² + 2·D·F) for the Q/K/V/out projections and the feed-forward, plus 4·L·D for
    the attention scores and their weighted sum (multiply-adds counted as 2)."""
    d, f, layers = args["embsize"], args.get("d_hid", args["embsize"]), args["nlayers"]

    def cost(tokens: int, length: int) -> float:
        return layers * tokens * (2 * (4 * d * d + 2 * d * f) + 4 * length * d)

    return cost(len(lengths) * padded, padded), sum(cost(n, n) for n in lengths)


def matmul_rate(tokens: int, d: int, repeat: int = 20) -> float:
    """FLOP/s of a plain (tokens × D) · (D × D) matmul on this machine, at the current torch thread count."""
    x, w = torch.randn(tokens, d), torch.randn(d, d)
    seconds, _ = timed(lambda: [torch.mm(x, w) for _ in range(repeat)], repeat=3)
    return 2 * tokens * d * d * repeat / seconds


def bench_breakdown(
    extractor: FeatureExtractor, expression: np.ndarray, names: list, work: Path, shard_cells: int
) -> dict:
    """A few shards' worth of cells through every step `ccfm extract` takes, each timed: every step in this thread
    (the times add up to the total; the write is also the wait for it), then with the writer thread `ccfm extract`
    uses on a CPU, then with the model replaced by a constant (the ceiling of everything else)."""
    d = extractor.d_model
    stats = FrozenStats(mean=np.zeros(d), std=np.ones(d), target_std=1.0, n_positions=1)
    layout = StoreLayout(
        obs_names=np.array(names, dtype=object), cell_labels=np.array(["ctrl"] * len(names), dtype=object),
        cell_hashes=np.zeros(len(names), dtype=np.uint64), genes=np.array([f"g{i}" for i in range(extractor.n_genes)],
        dtype=object), vocab_ids=extractor.vocab_ids, covered_counts=coverage(expression, extractor.vocab_ids).sum(1),
        d_model=extractor.d_model, shard_cells=shard_cells,
    )  # fmt: skip
    model = extractor.scgpt.model
    encode = model._encode

    def shards(constant: bool, threads: int) -> dict[str, float]:
        """Tokens from `GroupTokens`, `encode_cells` + `stored_shard` + `ShardWriter`, as `ccfm extract` runs them,
        with timers around the tokens and the model (wrapped in place, so the measured path is the real one)."""
        times = {"tokenize": 0.0, "model": 0.0, "waiting for the writer": 0.0}
        counts = {"flops": 0.0, "useful_flops": 0.0}

        def timed_encode(src, values, padding):  # noqa: ANN001, ANN202
            f_all, f_real = encoder_flops(extractor.scgpt.args, (~padding).sum(dim=1).tolist(), src.shape[1])
            counts["flops"] += f_all
            counts["useful_flops"] += f_real
            t0 = time.perf_counter()
            out = torch.zeros(*src.shape, extractor.d_model) if constant else encode(src, values, padding)
            times["model"] += time.perf_counter() - t0
            return out

        def clock(key: str, call: Callable[[], Any]) -> Any:
            t0 = time.perf_counter()
            out = call()
            times[key] += time.perf_counter() - t0
            return out

        model._encode = timed_encode
        try:
            store = LatentStore.create(work / f"breakdown_{time.perf_counter_ns()}.zarr", layout,
                                       {"fingerprint": {}, "frozen_stats": stats.to_json()})  # fmt: skip
            groups = [np.arange(*store.shard_range(shard)) for shard in range(store.n_shards)]
            start = time.perf_counter()
            tokens = iter(torch.utils.data.DataLoader(GroupTokens(extractor.tokenize, expression, np.array(names),
                                                                  groups), batch_size=None))  # fmt: skip
            with ShardWriter(store, threads) as writer:
                for shard in range(store.n_shards):
                    batch = clock("tokenize", lambda: next(tokens))
                    stored = stored_shard(stats, extractor.encode_cells(batch, batch_size=32), batch.covered)
                    clock("waiting for the writer", lambda: writer.submit(shard, stored))  # noqa: B023
                clock("waiting for the writer", writer.wait)
            total = time.perf_counter() - start
        finally:
            model._encode = encode
        rest = total - sum(times.values())
        return {**times, "gather + normalize + fp16 + moments": rest, "write + fsync (in the writer)": writer.seconds,
                "total": total, **counts}  # fmt: skip

    shards(constant=True, threads=0)  # warm-up: the first store written in a process pays zarr's start-up
    inline = shards(constant=False, threads=0)  # every step in this thread: the times add up to the total
    background = shards(constant=False, threads=1)  # as `ccfm extract` on a CPU: one writer thread
    constant = shards(constant=True, threads=1)
    mean_tokens = int(coverage(expression, extractor.vocab_ids).sum(axis=1).mean()) + 1
    mm = matmul_rate(32 * mean_tokens, extractor.d_model)
    return {
        "cells": len(names),
        "threads": torch.get_num_threads(),
        "mean_tokens_per_cell": mean_tokens,
        "seconds": inline,
        "end_to_end_cells_per_s": len(names) / inline["total"],
        "model_only_cells_per_s": len(names) / inline["model"],
        "outside_share": 1 - inline["model"] / inline["total"],
        "background_cells_per_s": len(names) / background["total"],
        "background_outside_share": 1 - background["model"] / background["total"],
        "constant_model_cells_per_s": len(names) / constant["total"],
        "achieved_gflops": inline["flops"] / inline["model"] / 1e9,
        "useful_gflops": inline["useful_flops"] / inline["model"] / 1e9,
        "matmul_gflops": mm / 1e9,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, default=512, help="cells for the batching comparison")
    parser.add_argument("--store-cells", type=int, default=2048, help="cells written to the measured store")
    parser.add_argument("--full-cells", type=int, default=24, help="cells for the full-size checkpoint")
    parser.add_argument("--shards", type=int, default=4, help="timed shards per checkpoint")
    parser.add_argument("--shard-cells", type=int, default=256, help="cells in each of the toy's timed shards")
    parser.add_argument("--full-shard-cells", type=int, default=64, help="cells in each full-size timed shard")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        data_path = simulated_norman(work, scale=0.05)
        toy = build_toy_checkpoint(work / "toy", d_model=64, layers=2, heads=4, genes=None, seed=0)
        batching = bench_batching(*_panel_expression(data_path, toy, args.cells))
        store = bench_store(data_path, toy, work, args.store_cells)
        full = bench_full_size(data_path, work, args.full_cells)
        breakdown = {
            "toy d64 L2": bench_breakdown(
                *_panel_expression(data_path, toy, args.shards * args.shard_cells), work, args.shard_cells
            ),
            "full-size d512 L12": bench_breakdown(
                *_panel_expression(data_path, work / "full_size", args.shards * args.full_shard_cells),
                work,
                args.full_shard_cells,
            ),
        }
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
    for name, b in breakdown.items():
        rows += [
            (f"{name}: end-to-end cells/s ({b['cells']} cells, {b['threads']} threads, shards written inline)",
             f"{b['end_to_end_cells_per_s']:.1f}", ""),
            (f"{name}: model-only cells/s", f"{b['model_only_cells_per_s']:.1f}", ""),
            (f"{name}: outside the model, share of end-to-end", f"{b['outside_share']:.2f}", "<= 0.20"),
            (f"{name}: with a writer thread (ccfm extract on a CPU), cells/s (outside share)",
             f"{b['background_cells_per_s']:.1f} ({b['background_outside_share']:.2f})", ""),
            (f"{name}: writer thread / inline, end to end",
             f"{b['background_cells_per_s'] / b['end_to_end_cells_per_s']:.2f}x", ""),
            (f"{name}: model replaced by a constant (writer thread), cells/s",
             f"{b['constant_model_cells_per_s']:.0f}", ""),
            (f"{name}: model GFLOP/s as run (useful)", f"{b['achieved_gflops']:.1f} ({b['useful_gflops']:.1f})", ""),
            (f"{name}: plain matmul GFLOP/s, same shapes", f"{b['matmul_gflops']:.1f}", ""),
            (f"{name}: achieved / matmul", f"{b['achieved_gflops'] / b['matmul_gflops']:.2f}", ">= 0.30 (full size)"),
        ]  # fmt: skip
        rows += [(f"{name}: seconds in {k}", f"{v:.3f}", "") for k, v in b["seconds"].items() if "flops" not in k]
    report(
        "extract",
        rows,
        {
            "batching": batching,
            "store": store,
            "full_size": full,
            "breakdown": breakdown,
            "stand_in": "simulated Norman data, random-weight scGPT checkpoints",
        },
    )


if __name__ == "__main__":
    main()
