"""Where a training step's time goes, and how close it runs to the machine's matmul rate.

Builds the tiny (or base) model on a synthetic batch of the study's shape (B cells × G genes, a few perturbations),
counts the FLOPs of one forward + backward with torch's FlopCounterMode, times steps, lists the most expensive
operators (torch.profiler), and times a plain (n × n) @ (n × n) matmul of about the same FLOPs on the same
threads: achieved FLOP/s as a share of the matmul rate.

    python -m bench.train_step [--preset tiny] [--batch 48] [--genes 256] [--threads 1]
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import torch
from torch.profiler import ProfilerActivity, profile
from torch.utils.flop_counter import FlopCounterMode

from ccfm.config import MODEL_PRESETS, CascadeTimeConfig, ModelConfig, ObjectiveConfig
from ccfm.flow.objective import StepInputs, cascade_objective
from ccfm.model import build_model


def _batch(b: int, g: int, groups: int, latent_dim: int | None) -> StepInputs:
    gen = torch.Generator().manual_seed(0)
    pert = torch.randint(0, g, (groups, 2), generator=gen).repeat_interleave(b // groups, dim=0)  # (B, P)
    latent = None if latent_dim is None else torch.randn(b, g, latent_dim, generator=gen)
    return StepInputs(
        target=torch.rand(b, g, generator=gen) * 3,
        control=torch.rand(b, g, generator=gen) * 3,
        genes=torch.arange(g),
        pert=pert,
        latent=latent,
        groups=torch.arange(groups).repeat_interleave(b // groups),
    )


def _step(model: torch.nn.Module, batch: StepInputs, objective: ObjectiveConfig, optimizer: torch.optim.Optimizer):
    terms = cascade_objective(model, batch, objective, torch.Generator().manual_seed(1))
    optimizer.zero_grad(set_to_none=True)
    terms.total.backward()
    optimizer.step()


def _seconds(fn, repeats: int) -> float:
    fn()  # warm-up
    started = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - started) / repeats


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="tiny", choices=tuple(MODEL_PRESETS))
    p.add_argument("--batch", type=int, default=48)
    p.add_argument("--genes", type=int, default=256)
    p.add_argument("--groups", type=int, default=8, help="perturbations per batch")
    p.add_argument("--latent-dim", type=int, default=0, help="0: the no-latent model")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    latent = args.latent_dim or None
    cfg = ModelConfig(
        n_genes=args.genes, latent_dim=args.latent_dim or 512, latent="scgpt" if latent else "none",
        source="control", shift_tokens=False, **dataclasses.asdict(MODEL_PRESETS[args.preset]),
    )  # fmt: skip
    model = build_model(cfg)
    model.set_gene_graph((torch.rand(args.genes, args.genes) < 0.1) | torch.eye(args.genes, dtype=torch.bool))
    batch = _batch(args.batch, args.genes, args.groups, latent)
    objective = ObjectiveConfig(times=CascadeTimeConfig(0.4 if latent else 0.0))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    with FlopCounterMode(display=False) as counter:
        _step(model, batch, objective, optimizer)
    flops = counter.get_total_flops()
    step_s = _seconds(lambda: _step(model, batch, objective, optimizer), args.repeats)
    n = max(64, round((flops / 2) ** (1 / 3)))  # an n×n @ n×n matmul of about the step's FLOPs
    a, b = torch.randn(n, n), torch.randn(n, n)
    matmul_s = _seconds(lambda: a @ b, max(3, args.repeats))
    achieved, peak = flops / step_s, 2 * n**3 / matmul_s
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        _step(model, batch, objective, optimizer)
    print(f"{args.preset} preset, B={args.batch}, G={args.genes}, {args.threads} thread(s), latent {latent or 'none'}")
    print(f"step: {step_s * 1e3:.0f} ms, {flops / 1e9:.2f} GFLOP (forward + backward) -> {achieved / 1e9:.1f} GFLOP/s")
    print(f"plain {n}x{n} matmul: {peak / 1e9:.1f} GFLOP/s; the step runs at {100 * achieved / peak:.0f}% of it")
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12))


if __name__ == "__main__":
    main()
