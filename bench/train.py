"""Training-step benchmark, side by side in one run on the same cells, model and batches.

A training step fed from the latent cache vs the same step with on-the-fly extraction (a frozen
scGPT computing the target cells' features inside the step, as the seed plan did), once with a tiny
and once with a full-size-architecture random scGPT (d 512, 12 layers, 8 heads); the share of step
time spent waiting for data with 2 loader workers; peak memory. The flow model is the `tiny` preset
on a G-gene panel (the `base` preset is GPU work). Data: a SIMULATED Norman stand-in.
Run: .venv/bin/python -m bench.train [--genes 1000] [--batch-size 16]
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import anndata as ad
import numpy as np
import torch

from bench.common import report, simulated_norman
from ccfm.config import ExtractConfig, ModelKnobs, TrainConfig
from ccfm.data.batches import BatchStream
from ccfm.scgpt.checkpoint import load_scgpt
from ccfm.scgpt.toy import build_toy_checkpoint
from pipeline import extract
from pipeline.runtime import DistContext, share_cpu_cores
from pipeline.train import Trainer
from pipeline.train_setup import SourceSpec, prepare

SIZES = {"tiny": (64, 2, 4), "full": (512, 12, 8)}


@dataclass(frozen=True)
class OnTheFlySpec(SourceSpec):
    """Opens a source that computes every cell with the frozen scGPT on `device` instead of reading the store."""

    device: str = "cpu"

    def open(self):  # noqa: ANN201 - returns an object with LatentSource.get's contract
        from ccfm.latent.source import LatentBatch, LatentSource

        source = LatentSource.open(self.cache, load_scgpt(self.scgpt, self.device), self.batch_size)

        def computed(names, expression):  # noqa: ANN001, ANN202
            out = source.compute(list(names), expression)
            return LatentBatch(out.features.astype(np.float32), out.covered, 0)

        source.get = computed
        return source


def _subset(data_path: Path, work: Path) -> Path:
    """One double, its two singles and 256 control cells: enough for additive-split batches."""
    full = ad.read_h5ad(data_path)
    labels = full.obs["condition"].astype(str)
    counts = labels.value_counts()
    double = next(
        lab
        for lab in counts.index
        if "+" in lab and "ctrl" not in lab and all(f"{g}+ctrl" in counts.index for g in lab.split("+"))
    )
    keep = labels.isin([double, *(f"{g}+ctrl" for g in double.split("+"))]).to_numpy()
    keep |= (labels == "ctrl").to_numpy() & (np.cumsum(labels == "ctrl") <= 256)
    path = work / "subset.h5ad"
    full[keep].copy().write_h5ad(path)
    return path


def _wait_share(trainer: Trainer, steps: int) -> float:
    """Share of step time spent waiting for the loader (2 workers), after a warm-up batch."""
    waited = busy = 0.0
    batches = iter(trainer.loader(0))
    next(batches)
    for _ in range(steps):
        start = time.perf_counter()
        batch = next(batches)
        got = time.perf_counter()
        trainer.train_step(batch)
        waited, busy = waited + got - start, busy + time.perf_counter() - got
    return waited / (waited + busy)


def bench_size(name: str, data: Path, work: Path, genes: int, batch: int, steps: int) -> dict:
    d, layers, heads = SIZES[name]
    ckpt = build_toy_checkpoint(work / f"scgpt_{name}", d_model=d, layers=layers, heads=heads, genes=None, seed=0)
    store = extract.run(
        ExtractConfig(
            data=data, scgpt=ckpt, out=work / f"store_{name}.zarr", n_genes=genes, norm_cells=256, device="cpu"
        )
    )
    cfg = TrainConfig(
        data=data,
        cache=store,
        out=work / f"run_{name}",
        model=ModelKnobs(preset="tiny"),
        steps=steps + 1,
        batch_size=batch,
        workers=2,
        device="cpu",
        scgpt=ckpt,
    )
    trainer = Trainer(cfg, prepare(cfg), DistContext(0, 1, 0), torch.device("cpu"))
    cached = BatchStream(trainer.setup.cells, SourceSpec(store, None), batch, None, cfg.seed, steps=steps + 1)
    fly = BatchStream(trainer.setup.cells, OnTheFlySpec(store, ckpt), batch, None, cfg.seed, steps=steps + 1)

    def with_data(stream: BatchStream) -> float:
        stream[0]
        start = time.perf_counter()
        for step in range(1, steps + 1):
            trainer.train_step(stream[step])
        return (time.perf_counter() - start) / steps

    cached_s, fly_s = with_data(cached), with_data(fly)
    threads = torch.get_num_threads()
    share_cpu_cores(torch.device("cpu"), busy_helpers=cfg.workers)  # what `ccfm train` does next to its loaders
    wait_share = _wait_share(trainer, steps)
    torch.set_num_threads(threads)
    return {
        "scgpt": f"d{d} L{layers} h{heads}",
        "cached_s_per_step": cached_s,
        "on_the_fly_s_per_step": fly_s,
        "speedup": fly_s / cached_s,
        "data_wait_share_2_workers": wait_share,
        "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--genes", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--steps", type=int, default=4)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        data = _subset(simulated_norman(work, scale=0.05), work)
        results = {name: bench_size(name, data, work, args.genes, args.batch_size, args.steps) for name in SIZES}
    rows = []
    for name, r in results.items():
        rows += [
            (f"[{name} scGPT {r['scgpt']}] step from cache, s", f"{r['cached_s_per_step']:.3f}", ""),
            (f"[{name}] step with on-the-fly extraction, s", f"{r['on_the_fly_s_per_step']:.3f}", ""),
            (f"[{name}] on-the-fly / cache", f"{r['speedup']:.1f}x", ">= 10x at full size" if name == "full" else ""),
            (f"[{name}] share of step time waiting for data", f"{100 * r['data_wait_share_2_workers']:.1f}%", "<= 20%"),
        ]
    rows.append(("peak RSS of the benchmark process, GB", f"{max(r['peak_rss_gb'] for r in results.values()):.2f}", ""))
    report(
        "train",
        rows,
        {
            "results": results,
            "genes": args.genes,
            "batch_size": args.batch_size,
            "flow_model": "tiny preset",
            "stand_in": "simulated Norman data, random-weight scGPT",
        },
    )


if __name__ == "__main__":
    main()
