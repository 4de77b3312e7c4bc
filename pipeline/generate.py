"""`ccfm generate`: predicted cells for the requested perturbations, in a cell-eval-ready h5ad."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ccfm.atomic import write_h5ad_atomic
from ccfm.config import GenerateConfig, SamplerConfig
from ccfm.data.conditions import parse_condition
from ccfm.data.loading import PerturbationData
from ccfm.data.panel import panel_columns
from ccfm.errors import CCFMError
from ccfm.eval.predictions import predictions_anndata
from ccfm.flow.generation import generate_cells
from pipeline.outputs import PREDICTIONS, plan_output
from pipeline.progress import progress
from pipeline.run_folder import RunInfo, TrainedRun, load_real_data, load_run, read_run
from pipeline.runtime import provenance, resolve_device

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Request:
    label: str  # canonical perturbation label
    n_cells: int


def _requested_labels(cfg: GenerateConfig, run: TrainedRun, data: PerturbationData) -> list[str]:
    if cfg.perturbations == "test":
        return list(run.info.split.test)
    if cfg.perturbations == "all":
        return list(run.info.split.train) + list(run.info.split.test)
    path = Path(cfg.perturbations)
    if not path.is_file():
        raise CCFMError(f"--perturbations must be test, all or a file of conditions; {path} does not exist")
    labels = [parse_condition(line.strip()).label for line in path.read_text().splitlines() if line.strip()]
    unknown = [lab for lab in labels if lab not in data.perturbations]
    if unknown:
        raise CCFMError(
            f"{len(unknown)} requested perturbations are not in {data.source} (e.g. {unknown[0]}); "
            "list conditions with `ccfm inspect`"
        )
    return labels


def plan_requests(cfg: GenerateConfig, run: TrainedRun, data: PerturbationData) -> list[Request]:
    labels = _requested_labels(cfg, run, data)
    if cfg.cells == "matched":
        return [Request(lab, int(data.cell_indices(lab).size)) for lab in labels]
    return [Request(lab, int(cfg.cells)) for lab in labels]


def sample_cells(
    run: TrainedRun,
    labels: list[str],
    control: np.ndarray,
    sampler: SamplerConfig,
    batch_size: int,
    seed: int,
    device: torch.device,
    show_progress: bool = True,
    starts: np.ndarray | None = None,
) -> np.ndarray:
    """Predicted expression (N, G), one cell per label, each from a row of `control` (Nc, G) — `starts` (N,), or
    a random one —, integrating `batch_size` cells at a time; the same seed gives the same cells."""
    rng = np.random.default_rng(seed)
    tokens = np.stack([run.vocab.ids(parse_condition(lab)) for lab in labels])  # (N, P)
    if starts is None:  # a random real control cell for each prediction
        starts = rng.integers(control.shape[0], size=len(labels))
    generator = torch.Generator().manual_seed(seed)
    out = np.zeros((len(labels), control.shape[1]), dtype=np.float32)  # (N, G)
    batches = range(0, len(labels), batch_size)
    for start in progress(batches, desc="generate", unit="batch", disable=not show_progress):
        rows = slice(start, start + batch_size)
        sample = generate_cells(
            run.model,
            torch.from_numpy(control[starts[rows]]).to(device),
            torch.from_numpy(tokens[rows]).to(device),
            generator,
            sampler,
        )
        out[rows] = sample.expression.float().cpu().numpy()
    return out


def run(cfg: GenerateConfig) -> Path:
    out = Path(cfg.out or cfg.run / "predictions.h5ad")
    info = read_run(cfg.run)
    given = [cfg.run, info.data]
    output = plan_output(out, PREDICTIONS, overwrite=cfg.overwrite, inputs=given)  # before minutes of sampling
    _check_guidance(cfg, info)
    device = resolve_device(cfg.device)
    run = load_run(cfg.run, cfg.checkpoint, device)
    data = load_real_data(run.info)
    requests = plan_requests(cfg, run, data)
    columns = panel_columns(data, run.info.panel)
    control_rows = data.control_indices()
    control = data.expression[control_rows][:, columns].toarray().astype(np.float32)  # (Nc, G)
    log.info(
        "sampling %d cells for %d perturbations (%s, %d steps per stage) from %s step %d on %s",
        sum(r.n_cells for r in requests),
        len(requests),
        cfg.sampler.method,
        cfg.sampler.steps,
        run.checkpoint.name,
        run.step,
        device,
    )
    labels = [r.label for r in requests for _ in range(r.n_cells)]
    expression = sample_cells(run, labels, control, cfg.sampler, cfg.batch_size, cfg.seed, device)
    record = {
        "method": run.info.method,
        "run": str(run.info.folder),
        "checkpoint": str(run.checkpoint),
        "step": run.step,
        "steps": cfg.sampler.steps,
        "solver": cfg.sampler.method,
        "perturbations": cfg.perturbations,
        "guidance": [cfg.sampler.guidance_latent, cfg.sampler.guidance_expr],
        "stand_in": run.info.stand_in,
        "data": str(run.info.data),
        **provenance(device, cfg.seed),
    }
    adata = predictions_anndata(
        expression, labels, control, run.info.panel, record, control_names=data.obs_names[control_rows].tolist()
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    with output.writing() as path:
        write_h5ad_atomic(adata, path)
    return out


def _check_guidance(cfg: GenerateConfig, info: RunInfo) -> None:
    """Guidance mixes the conditional velocity with the unconditional one, which only a run trained with
    perturbation-label dropout has learned."""
    guided = cfg.sampler.guided
    if guided and not info.cfg_dropout > 0:
        raise CCFMError(
            f"{' and '.join(guided)} need a run trained with perturbation-label dropout (cfg_dropout > 0), and "
            f"{info.folder} was trained without it; leave the guidance scales at 1, or retrain with "
            "`ccfm train ... --cfg-dropout 0.1`"
        )
