"""`ccfm screen`: an in-silico screen of unmeasured pairs — which pairs of known components interact?

Every pair of components with a training single that the data never measured is predicted (`--cells` cells a
pair, from real control cells), its pseudobulk change scored against its measured singles with the
genetic-interaction measures of Norman et al. 2019 (ccfm/eval/interactions.py), and the pairs ranked by their
departure from additivity. Pairs are predicted in chunks of `--batch-pairs`; each finished chunk is kept in
OUT/chunks/, so a killed screen rerun with the same command continues where it stopped (chunk k draws from
seed + k: the result is the same as an uninterrupted screen).

OUT holds screen.json (the plan: run, checkpoint, settings, the pair list's hash), pairs.csv (one row a pair,
ranked) and screen.png (the interaction map and the top pairs' predicted vs additive shift).
"""

from __future__ import annotations

import dataclasses
import io
import itertools
import json
import logging
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ccfm.atomic import write_bytes_atomic, write_json_atomic
from ccfm.config import ScreenConfig, to_json_dict
from ccfm.data.conditions import parse_condition
from ccfm.data.loading import PerturbationData
from ccfm.data.panel import panel_columns
from ccfm.errors import CCFMError
from ccfm.eval.interactions import interaction_scores
from ccfm.eval.plots import plot_screen
from ccfm.latent.fingerprint import sha256_of
from pipeline.evaluate import training_effects
from pipeline.generate import sample_cells
from pipeline.outputs import SCREEN, plan_output
from pipeline.progress import progress
from pipeline.run_folder import RunInfo, load_real_data, load_run, read_run
from pipeline.runtime import provenance, resolve_device

log = logging.getLogger(__name__)

PLAN, RESULT, PLOT, CHUNKS = "screen.json", "pairs.csv", "screen.png", "chunks"
TOP_SHOWN = 6  # top pairs drawn as predicted vs additive shift


def training_components(info: RunInfo, data: PerturbationData) -> list[str]:
    """Components (genes or drugs) whose single perturbation is among the run's training conditions."""
    singles = (data.perturbations.get(lab) for lab in info.split.train)
    return sorted({p.tokens[0] for p in singles if p is not None and len(p.tokens) == 1})


def candidate_pairs(info: RunInfo, data: PerturbationData, spec: str) -> list[str]:
    """Canonical `A+B` labels to screen: every unmeasured pair of training components, or those in a file."""
    components = training_components(info, data)
    if len(components) < 2:
        raise CCFMError(f"run {info.folder} has {len(components)} component(s) with a training single; need 2")
    if spec == "all":
        pairs = (parse_condition(f"{a}+{b}").label for a, b in itertools.combinations(components, 2))
        return [lab for lab in pairs if lab not in data.perturbations]
    path = Path(spec)
    if not path.is_file():
        raise CCFMError(f"--pairs must be all or a file of pairs (one A+B a line); {path} does not exist")
    known, labels = set(components), []
    for line in filter(None, (raw.strip() for raw in path.read_text().splitlines())):
        pert = parse_condition(line)
        if len(pert.tokens) != 2 or not set(pert.tokens) <= known:
            raise CCFMError(
                f"{path}: {line!r} is not a pair of two components with a training single in run {info.folder} "
                f"(e.g. {', '.join(components[:3])})"
            )
        labels.append(pert.label)
    return list(dict.fromkeys(labels))


def _chunk_path(work: Path, k: int) -> Path:
    return work / CHUNKS / f"chunk-{k:05d}.npz"


def _save_chunk(path: Path, labels: list[str], means: np.ndarray) -> None:
    buffer = io.BytesIO()
    np.savez(buffer, labels=np.asarray(labels), means=means.astype(np.float32))
    write_bytes_atomic(path, buffer.getvalue())


def _load_chunks(work: Path, n_chunks: int) -> tuple[list[str], np.ndarray]:
    labels, means = [], []
    for k in range(n_chunks):
        with np.load(_chunk_path(work, k)) as chunk:
            labels += [str(lab) for lab in chunk["labels"]]
            means.append(chunk["means"])
    return labels, np.concatenate(means)


def score_pairs(
    labels: list[str], means: np.ndarray, singles: dict[str, np.ndarray], control_mean: np.ndarray
) -> pd.DataFrame:
    """One row per pair (ranked by non-additivity, highest first) from its predicted pseudobulk (N, G)."""
    rows = []
    for label, mean in zip(labels, means, strict=True):
        a, b = parse_condition(label).tokens
        delta = mean.astype(np.float64) - control_mean
        scores = interaction_scores(singles[a], singles[b], delta)
        additive = singles[a] + singles[b]
        norms = {"predicted_shift": float(np.linalg.norm(delta)), "additive_shift": float(np.linalg.norm(additive))}
        rows.append({"pair": label, "a": a, "b": b, **scores.to_row(), **norms})
    table = pd.DataFrame(rows).sort_values("non_additivity", ascending=False, kind="mergesort")
    table.insert(0, "rank", np.arange(1, len(table) + 1))
    return table.reset_index(drop=True)


def _plan(cfg: ScreenConfig, run_checkpoint: Path, step: int, pairs: list[str], info: RunInfo) -> dict[str, Any]:
    settings = to_json_dict(dataclasses.replace(cfg, out=None, overwrite=False, device="auto"))
    return {
        "screen": {"run": str(Path(cfg.run).resolve()), "checkpoint": str(run_checkpoint), "step": step},
        "settings": settings,
        "pairs": {"count": len(pairs), "sha256": sha256_of(pairs)},
        "stand_in": info.stand_in,
    }


def run(cfg: ScreenConfig) -> Path:
    info = read_run(cfg.run)
    out = Path(cfg.out or info.folder / "screen").resolve()
    unfinished = (out / PLAN).is_file() and not (out / RESULT).is_file()
    # An unfinished screen is continued by the same command; a finished one is replaced only with --overwrite.
    output = plan_output(
        out, SCREEN, overwrite=cfg.overwrite, inputs=(info.data,), resume=unfinished and not cfg.overwrite
    )
    device = resolve_device(cfg.device)
    trained = load_run(cfg.run, cfg.checkpoint, device)
    data = load_real_data(trained.info)
    pairs = candidate_pairs(trained.info, data, cfg.pairs)
    if not pairs:
        raise CCFMError(f"no pair to screen: every pair of run {info.folder}'s components was measured")
    plan = _plan(cfg, trained.checkpoint, trained.step, pairs, trained.info)
    columns = panel_columns(data, trained.info.panel)
    control = data.expression[data.control_indices()][:, columns].toarray().astype(np.float32)  # (Nc, G)
    effects = training_effects(data, trained.info)
    singles = {p.tokens[0]: effects.deltas[lab] for lab, p in data.perturbations.items()
               if len(p.tokens) == 1 and lab in effects.deltas}  # fmt: skip
    n_chunks = math.ceil(len(pairs) / cfg.batch_pairs)
    # Every pair starts from the same control cells, and its change is taken against their mean: the control
    # draw is common to all pairs instead of adding its own noise to each pair's score.
    starts = np.random.default_rng(cfg.seed).choice(control.shape[0], cfg.cells, replace=cfg.cells > control.shape[0])
    baseline = control[starts].mean(axis=0).astype(np.float64)  # (G,)
    with output.writing(resume="rerun the same command: the finished chunks are kept") as work:
        _start_or_continue(work, plan)
        todo = [k for k in range(n_chunks) if not _chunk_path(work, k).is_file()]
        log.info(
            "screening %d pairs (%d cells each, %s %d steps per stage) from %s step %d on %s: %d of %d chunks to do",
            len(pairs), cfg.cells, cfg.sampler.method, cfg.sampler.steps, trained.checkpoint.name, trained.step,
            device, len(todo), n_chunks,
        )  # fmt: skip
        started, predicted = time.perf_counter(), 0
        for k in progress(todo, desc="screen", unit="chunk"):
            chunk = pairs[k * cfg.batch_pairs : (k + 1) * cfg.batch_pairs]
            labels = [lab for lab in chunk for _ in range(cfg.cells)]
            cells = sample_cells(trained, labels, control, cfg.sampler, len(labels), cfg.seed + k, device,
                                 show_progress=False, starts=np.tile(starts, len(chunk)))  # fmt: skip
            _save_chunk(_chunk_path(work, k), chunk, cells.reshape(len(chunk), cfg.cells, -1).mean(axis=1))
            predicted += len(chunk)
        minutes = (time.perf_counter() - started) / 60
        labels, means = _load_chunks(work, n_chunks)
        table = score_pairs(labels, means, singles, baseline)
        write_bytes_atomic(work / RESULT, table.to_csv(index=False, float_format="%.6g").encode())
        flags = [k for k, v in trained.info.stand_in.items() if v]
        stand_in = f"STAND-IN ({', '.join(flags)}): not a biological result" if flags else ""
        row = {lab: i for i, lab in enumerate(labels)}
        top = table.head(TOP_SHOWN)
        predicted_shift = means[[row[p] for p in top["pair"]]] - baseline  # (k, G)
        additive_shift = np.stack([singles[a] + singles[b] for a, b in zip(top["a"], top["b"], strict=True)])
        plot_screen(table, top["pair"].tolist(), predicted_shift, additive_shift, work / PLOT, stand_in)
        rate = round(predicted / minutes, 1) if predicted else None  # None: every chunk was already there
        finished = {"pairs_predicted_this_run": predicted, "pairs_per_minute": rate, **provenance(device, cfg.seed)}
        write_json_atomic(work / PLAN, {**plan, "finished": finished})
    log.info("screen of %d pairs written to %s (top: %s)", len(table), out, ", ".join(table["pair"][:5]))
    return out


def _start_or_continue(work: Path, plan: dict[str, Any]) -> None:
    """Write the plan of a new screen, or check that an unfinished one is this same screen."""
    path = work / PLAN
    if path.is_file():
        saved = json.loads(path.read_text())
        mine = {k: plan[k] for k in ("screen", "settings", "pairs")}
        if {k: saved.get(k) for k in mine} != mine:
            raise CCFMError(
                f"{work} holds an unfinished screen with other settings, pairs or checkpoint; rerun it with the "
                "same settings to finish it, or pass --overwrite to start over"
            )
        return
    (work / CHUNKS).mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, plan)
