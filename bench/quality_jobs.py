"""Running a study's trainings and scorings side by side: `--jobs` fresh processes, each with its own share of
the CPU threads, or its own GPU when several are visible. `s` is the study's Settings (jobs, device, threads)."""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

_WORKER_DEVICE: str | None = None  # set in each pool process: its own GPU when several are visible


def _init_worker(slots: Any, threads: int) -> None:
    global _WORKER_DEVICE
    _WORKER_DEVICE = slots.get()
    torch.set_num_threads(threads)  # side-by-side jobs must not oversubscribe the cores


def on_worker_device(s: Any) -> Any:
    return s if _WORKER_DEVICE is None else replace(s, device=_WORKER_DEVICE)


def job_devices(s: Any) -> list[str]:
    """One device per side-by-side job: cuda:0..N-1 in turn when several GPUs are visible, else --device."""
    gpus = torch.cuda.device_count()
    if s.device in ("auto", "cuda") and gpus > 1:
        return [f"cuda:{i % gpus}" for i in range(s.jobs)]
    return [s.device] * s.jobs


def job_threads(s: Any) -> int:
    return s.threads or max(1, (os.cpu_count() or 1) // s.jobs)


def in_parallel(s: Any, fn: Callable[..., Path], calls: list[tuple[Any, ...]]) -> list[Path]:
    """fn(s, *args) for every call, `s.jobs` at a time in fresh processes (or in this one for --jobs 1)."""
    if s.jobs == 1 or len(calls) == 1:
        return [fn(s, *args) for args in calls]
    context = multiprocessing.get_context("spawn")
    slots = context.Queue()
    for device in job_devices(s):
        slots.put(device)
    threads = job_threads(s)
    with ProcessPoolExecutor(s.jobs, mp_context=context, initializer=_init_worker, initargs=(slots, threads)) as pool:
        return [f.result() for f in [pool.submit(fn, s, *args) for args in calls]]
