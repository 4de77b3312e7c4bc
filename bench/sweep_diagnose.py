"""Named variants of the quality study's sweep on its validation draw, each scored and diagnosed stage by stage.

    python -m bench.sweep_diagnose prior-pca32-ptok prior-pca32-lres10 --work bench/results/quality_random_pretrained \\
        --pretrain-minutes 3

Uses `bench.quality`'s settings, data, store and validation draw (split seed 1), and its finished runs under
--work (a variant already trained there is not trained again); with `--seed N` (N > 0) the runs are trained with
that seed under --work/sweep_seedN, on the same data and store. Each variant is trained and generated as the
sweep does, scored by cell-eval on its own, and run through `bench.diagnose` against the validation draw's
no-latent run. Prints one row per variant: cell-eval pearson_delta / mse, stage 1's generated latent shift
beside the additive and training-mean latents, stage 2 from the generated latent and with none.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import torch

from bench import quality
from bench.diagnose import diagnose
from bench.quality_jobs import in_parallel, job_threads
from bench.quality_scores import fold_means, per_perturbation


def _diagnose_variant(s: quality.Settings, store: Path, run: Path, none: Path) -> Path:
    out = run.parent / f"diag_{run.name}.json"
    if not out.exists():
        cells = int(s.cells) if s.cells.isdigit() else 32
        out.write_text(json.dumps(diagnose(run, none, store, cells, s.sampler_steps, s.seed), indent=2))
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("variants", nargs="+", help="names from bench.quality.SWEEP")
    args, rest = p.parse_known_args(argv)
    s = quality.parse([*rest, "--no-diagnose"])
    unknown = [v for v in args.variants if v not in {x.name for x in quality.SWEEP}]
    if unknown:
        sys.exit(f"not sweep variants: {', '.join(unknown)} (bench/quality.py SWEEP)")
    torch.set_num_threads(job_threads(s))
    data, store = quality.prepare_inputs(s)
    types = quality.double_types(data)
    runs = s.work / ("sweep" if s.seed == 0 else f"sweep_seed{s.seed}")  # --seed N: a second training seed
    jobs = [
        dataclasses.replace(j, folder=runs / j.variant.name)
        for j in quality.sweep_jobs(s)
        if j.variant.name in args.variants
    ]
    none = quality.Job(s.work / "sweep" / "no_latent", "none", quality.SWEEP[0], quality.SWEEP_SPLIT_SEED, 0)
    in_parallel(s, quality._train_job, [(data, store, j) for j in [*jobs, none]])
    reports = in_parallel(s, quality._score_job, [(j.folder, (), ()) for j in jobs])
    diagnosed = in_parallel(s, _diagnose_variant, [(store, j.folder, none.folder) for j in jobs])
    stage1, stage2 = "stage 1: generated / additive / training-mean", "stage 2: generated / none"
    print(f"| variant | pearson_delta / mse | {stage1} | {stage2} |")
    print("|---|---|---|---|")
    for job, report, path in zip(jobs, reports, diagnosed, strict=True):
        means = fold_means(per_perturbation(report, types), [])
        cell = means[(means["subset"] == "all") & (means["method"] != "control")].set_index("metric")["value"]
        d = json.loads(path.read_text())["mean"]
        latent = " / ".join(
            f"{d[f'latent {k}: pearson']:.3f}" for k in ("generated", "additive latent", "training-mean latent")
        )
        print(
            f"| {job.variant.name} | {cell['pearson_delta']:.3f} / {cell['mse']:.4f} | {latent} | "
            f"{d['ccfm: pearson_delta']:.3f} / {d['no-latent: pearson_delta']:.3f} |"
        )


if __name__ == "__main__":
    main()
