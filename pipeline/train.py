"""`ccfm train`: the cascaded flow model from expression and cached latents.

Batches are a pure function of (seed, step, rank) and each step reseeds dropout and noise, so a
run resumed from a checkpoint continues exactly as the uninterrupted run would have. Under
torchrun the model is wrapped in DistributedDataParallel; rank 0 writes the run folder.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import math
import signal
import time
from pathlib import Path
from typing import Any

import torch
from torch.nn.parallel import DistributedDataParallel

from ccfm.atomic import write_bytes_atomic, write_json_atomic
from ccfm.config import TrainConfig
from ccfm.data.batches import BatchFailure, BatchStream
from ccfm.errors import CCFMError
from ccfm.flow.objective import StepInputs, cascade_objective
from ccfm.model.cascade import build_model
from ccfm.model.ema import EMA
from pipeline.checkpoints import last_checkpoint, load_checkpoint, save_checkpoint
from pipeline.loss_log import LossLog
from pipeline.outputs import RUN, plan_output
from pipeline.progress import progress
from pipeline.runtime import (
    DistContext,
    close_distributed,
    init_distributed,
    provenance,
    resolve_device,
    share_cpu_cores,
)
from pipeline.train_setup import (
    RunSetup,
    SourceSpec,
    check_resumable,
    describe_run,
    fit_interaction_head,
    fit_latent_space,
    gene_graph,
    prepare,
    prior_shifts,
    training_pseudobulk,
    with_store_inputs,
)

log = logging.getLogger(__name__)


def step_seed(seed: int, step: int, rank: int, stream: str) -> int:
    digest = hashlib.blake2b(f"{seed}:{step}:{rank}:{stream}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & (2**63 - 1)


def lr_lambda(cfg: TrainConfig) -> Any:
    warmup = min(cfg.warmup_steps, max(1, cfg.steps // 10))
    floor = cfg.lr_min / cfg.lr

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, cfg.steps - warmup))
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))

    return factor


def _prepare_run_folder(cfg: TrainConfig, run_info: dict[str, Any], split_json: str, device: torch.device) -> None:
    """Rank 0: check a resumed run is this run, then write run.json and split.json into `cfg.out`."""
    if cfg.resume and (cfg.out / "run.json").is_file():
        check_resumable(json.loads((cfg.out / "run.json").read_text()), run_info, cfg.out)
        saved_split = cfg.out / "split.json"
        if saved_split.is_file() and saved_split.read_text() != split_json:
            raise CCFMError(f"cannot resume {cfg.out}: the split differs from the saved split.json")
    cfg.out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(cfg.out / "run.json", {**run_info, "provenance": provenance(device, cfg.seed)})
    write_bytes_atomic(cfg.out / "split.json", split_json.encode())


@dataclasses.dataclass
class Trainer:
    cfg: TrainConfig
    setup: RunSetup
    ctx: DistContext
    device: torch.device

    def __post_init__(self) -> None:
        torch.manual_seed(self.cfg.seed)  # identical initial weights on every rank
        self.model = build_model(self.setup.model).to(self.device)
        self.model.set_gene_graph(gene_graph(self.setup, self.setup.model.graph_k, self.cfg.seed).to(self.device))
        self.interaction = None
        if self.model.has_prior_shifts:
            effects = training_pseudobulk(self.setup)
            self.model.set_prior_shifts(prior_shifts(self.setup, effects).to(self.device))
            self.interaction = fit_interaction_head(self.model, self.setup, effects, self.cfg.seed)
        if self.interaction is not None and self.ctx.is_main:
            log.info("interaction head: %s", self.interaction)
        self.latent_fit = None
        if self.setup.model.latent == "scgpt":
            self.latent_fit = fit_latent_space(self.model, self.setup, self.setup.source, self.cfg.seed)
        if self.latent_fit is not None and self.ctx.is_main:
            log.info("latent space: %s", self.latent_fit)
        self.ema = EMA(self.model, self.cfg.ema_decay)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=self.cfg.lr)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lr_lambda(self.cfg))
        self.net = DistributedDataParallel(self.model) if self.ctx.world > 1 else self.model
        self.objective = self.cfg.objective

    def state(self, step: int, run_info: dict[str, Any]) -> dict[str, Any]:
        return {
            **run_info,
            "model": self.model.state_dict(),
            "ema": self.ema.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "rng": {"torch": torch.get_rng_state()},
            "provenance": provenance(self.device, self.cfg.seed),
            "completed_steps": step,
            "interaction_fit": None if self.interaction is None else dataclasses.asdict(self.interaction),
            "latent_fit": None if self.latent_fit is None else dataclasses.asdict(self.latent_fit),
        }

    def restore(self, payload: dict[str, Any]) -> int:
        self.model.load_state_dict(payload["model"])
        self.ema.load_state_dict(payload["ema"])
        self.optimizer.load_state_dict(payload["optimizer"])
        self.scheduler.load_state_dict(payload["scheduler"])
        torch.set_rng_state(payload["rng"]["torch"])
        return int(payload["completed_steps"])

    def loader(self, start: int) -> torch.utils.data.DataLoader:
        use_latent = self.setup.model.latent == "scgpt"
        spec = SourceSpec(self.cfg.cache, self.cfg.scgpt) if use_latent else None
        stream = BatchStream(
            self.setup.cells,
            spec,
            self.cfg.batch_size,
            self.cfg.gene_subset,
            self.cfg.seed,
            self.ctx.rank,
            self.cfg.steps,
            self.cfg.pert_cells,
        )
        return torch.utils.data.DataLoader(
            stream,
            batch_size=None,
            sampler=range(start, self.cfg.steps),
            num_workers=self.cfg.workers,
            generator=torch.Generator().manual_seed(self.cfg.seed),  # keeps the global RNG untouched
            prefetch_factor=4 if self.cfg.workers else None,
            pin_memory=self.device.type == "cuda",
            worker_init_fn=_ignore_ctrl_c,
        )

    def train_step(self, batch: Any) -> dict[str, float]:
        self.net.train()
        torch.manual_seed(step_seed(self.cfg.seed, batch.step, self.ctx.rank, "dropout"))
        generator = torch.Generator().manual_seed(step_seed(self.cfg.seed, batch.step, self.ctx.rank, "noise"))
        batch = batch.to(self.device)
        inputs = StepInputs(batch.target, batch.control, batch.genes, batch.pert, batch.latent, batch.groups)
        autocast = (
            torch.autocast("cuda", dtype=torch.bfloat16) if self.device.type == "cuda" else contextlib.nullcontext()
        )
        with autocast:
            terms = cascade_objective(self.net, inputs, self.objective, generator)
        self.optimizer.zero_grad(set_to_none=True)
        terms.total.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        self.ema.update(self.model, batch.step)
        return {
            "loss": terms.total.item(),
            "expr_mse": terms.expr_mse.item(),
            "latent_mse": terms.latent_mse.item(),
            "mmd": terms.mmd.item(),
            "residual": terms.residual.item(),
            "grad_norm": float(grad_norm),
            "lr": self.scheduler.get_last_lr()[0],
        }


def _ignore_ctrl_c(_worker: int) -> None:
    """Loader processes leave Ctrl-C to the main process, which stops them: a worker killed by the terminal's
    SIGINT first would surface as a broken pipe instead of the resume message."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _loop(trainer: Trainer, start: int, run_info: dict[str, Any], losses: LossLog | None) -> None:
    cfg, ctx = trainer.cfg, trainer.ctx
    with progress(total=cfg.steps, initial=start, desc="train", unit="step", disable=not ctx.is_main) as bar:
        waited = time.perf_counter()
        for batch in trainer.loader(start):
            if isinstance(batch, BatchFailure):
                raise CCFMError(batch.message)
            wait = time.perf_counter() - waited
            row = trainer.train_step(batch)
            done = batch.step + 1
            if losses is not None:
                losses.append(done, {**row, "data_wait_s": wait})
                streams = (
                    ("expr_mse", "mmd") if trainer.setup.model.latent == "none" else ("expr_mse", "latent_mse", "mmd")
                )
                bar.set_postfix({k.removesuffix("_mse"): f"{row[k]:.3f}" for k in streams})
            bar.update(1)
            if done % cfg.checkpoint_every == 0 or done == cfg.steps:
                if ctx.is_main:
                    losses.flush()  # first: a resume drops rows past its checkpoint, never lacks any before it
                    save_checkpoint(cfg.out, done, trainer.state(done, run_info))
                ctx.barrier()
            waited = time.perf_counter()


def run(cfg: TrainConfig) -> Path:
    ctx = init_distributed(cfg.device)
    try:
        cfg = with_store_inputs(cfg)
        plan = plan_output(
            cfg.out,
            RUN,
            overwrite=cfg.overwrite,
            inputs=(cfg.data, cfg.cache, cfg.scgpt, cfg.split_file),
            resume=cfg.resume,
            hint="--resume to continue it",
        )
        ctx.barrier()  # every rank has looked at OUT before rank 0 writes there
        with plan.writing("continue from the last checkpoint with the same command plus --resume", ctx) as folder:
            device = resolve_device(cfg.device, ctx.local_rank)
            share_cpu_cores(device, busy_helpers=cfg.workers)
            setup = prepare(cfg)
            run_info = describe_run(cfg, setup)
            work = dataclasses.replace(cfg, out=folder)
            ctx.main_first(lambda: _prepare_run_folder(work, run_info, setup.split.to_json(), device))
            _train(work, setup, run_info, ctx, device)
    finally:
        close_distributed(ctx)
    return cfg.out


def _train(cfg: TrainConfig, setup: RunSetup, run_info: dict[str, Any], ctx: DistContext, device: torch.device) -> None:
    trainer = Trainer(cfg, setup, ctx, device)
    checkpoint = last_checkpoint(cfg.out) if cfg.resume else None
    start = trainer.restore(load_checkpoint(checkpoint)) if checkpoint is not None else 0
    log.info(
        "training %s model (%s preset, %d parameters) on %d conditions for steps %d..%d on %s",
        setup.model.latent,
        cfg.model.preset,
        sum(p.numel() for p in trainer.model.parameters()),
        len(setup.split.train),
        start,
        cfg.steps,
        device,
    )
    losses = LossLog(cfg.out / "loss.csv", keep_until=start) if ctx.is_main else None
    if start < cfg.steps:
        _loop(trainer, start, run_info, losses)
    if losses is not None:
        losses.flush()
        losses.plot(cfg.out / "loss.png", stand_in=any(run_info["stand_in"].values()))
