"""Devices, torch.distributed and versions: resolved once at a stage's entry point."""

from __future__ import annotations

import os
import platform
import socket
import sys
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from typing import TypeVar

import torch
import torch.distributed as dist

from ccfm.errors import CCFMError

T = TypeVar("T")


def resolve_device(requested: str, local_rank: int = 0) -> torch.device:
    """`auto` picks this rank's GPU when there is one; `cuda` without a GPU is refused."""
    if requested == "auto":
        return torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    if requested.startswith("cuda"):
        if not torch.cuda.is_available():
            raise CCFMError(f"--device {requested} was asked for but no CUDA GPU is visible; use --device cpu or auto")
        return torch.device(requested if ":" in requested else f"cuda:{local_rank}")
    if requested == "cpu":
        return torch.device("cpu")
    raise CCFMError(f"unknown --device {requested!r}; use auto, cpu, cuda or cuda:N")


def rank_cores() -> int:
    """This process's share of the cores it may run on: all of them, split between the torchrun ranks on this
    node."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, cores // max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1"))))


def share_cpu_cores(device: torch.device, busy_helpers: int = 0) -> int:
    """On CPU, give this process's torch threads only its share of the cores; returns the thread count.

    The share is cores / (torchrun ranks on this node) minus one core per busy helper process (data
    loaders). OpenMP threads wait for every peer at each operation, so a thread whose core is taken by
    another process stalls them all: on 2 cores a training step ran 13× slower next to one busy process
    with 2 threads than with 1. Never raises the count someone set lower.
    """
    if device.type != "cpu":
        return torch.get_num_threads()
    torch.set_num_threads(min(torch.get_num_threads(), max(1, rank_cores() - busy_helpers)))
    return torch.get_num_threads()


@dataclass(frozen=True)
class DistContext:
    """This process's place in a torchrun job (rank 0 of 1 when run plainly)."""

    rank: int
    world: int
    local_rank: int

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()

    def main_first(self, work: Callable[[], T]) -> T | None:
        """Run `work` on rank 0 while the other ranks wait; a CCFMError there is raised on every rank, so a
        user's mistake stops the whole job at once instead of leaving the other ranks in a barrier."""
        result, error = None, None
        if self.is_main:
            try:
                result = work()
            except CCFMError as err:
                error = str(err)
        if self.world > 1:
            box = [error]
            dist.broadcast_object_list(box, src=0)
            error = box[0]
        if error is not None:
            raise CCFMError(error)
        return result


def init_distributed(device_hint: str) -> DistContext:
    """Join the torchrun group when launched by torchrun (gloo on CPU, nccl on GPU)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return DistContext(0, 1, 0)
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        use_nccl = torch.cuda.is_available() and device_hint != "cpu"
        dist.init_process_group(backend="nccl" if use_nccl else "gloo")
    return DistContext(rank, world, local_rank)


def close_distributed(ctx: DistContext) -> None:
    if ctx.world > 1 and dist.is_initialized():
        dist.destroy_process_group()


def versions() -> dict[str, str]:
    """Versions of what shapes the numbers, recorded in every artifact."""
    out = {"python": sys.version.split()[0], "platform": platform.platform(), "host": socket.gethostname()}
    for pkg in ("ccfm", "torch", "scgpt", "zarr", "numpy", "anndata", "scanpy", "cell-eval"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = "absent"
    return out


def provenance(device: torch.device | str, seed: int) -> dict[str, object]:
    """How an artifact was made: the command line, device, seed and versions (recorded in every artifact)."""
    return {"command": " ".join(sys.argv), "device": str(device), "seed": seed, "versions": versions()}
