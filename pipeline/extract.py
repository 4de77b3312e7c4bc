"""`ccfm extract`: frozen scGPT over every cell → normalized fp16 features in a sharded zarr store.

Rank 0 chooses the panel, freezes the normalization statistics on a seeded sample and creates the
store (in a temporary folder renamed into place, so a store is either fully laid out or absent).
Every rank then extracts its own shards (shard i goes to rank i mod world); rank 0 merges the
per-shard running moments and marks the store complete.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

from ccfm.config import ExtractConfig, to_json_dict
from ccfm.data.loading import PerturbationData, load_dataset
from ccfm.data.panel import choose_panel
from ccfm.errors import CCFMError
from ccfm.latent.fingerprint import StoreFingerprint, cell_hashes, data_hash, panel_hash, sha256_of
from ccfm.latent.record import StoreRecord
from ccfm.latent.source import stored_shard
from ccfm.latent.statistics import FrozenStats, RunningMoments, frozen_stats_from
from ccfm.latent.store import LatentStore, ShardRows, ShardWriter, StoreLayout
from ccfm.scgpt.checkpoint import ScgptModel, load_scgpt, map_panel_to_vocab
from ccfm.scgpt.extractor import FeatureExtractor
from ccfm.scgpt.tokens import TokenBatch, Tokenizer, coverage, packed_index
from pipeline.lock import WriterLock
from pipeline.outputs import STORE, plan_output
from pipeline.progress import progress
from pipeline.runtime import (
    DistContext,
    close_distributed,
    init_distributed,
    provenance,
    rank_cores,
    resolve_device,
    share_cpu_cores,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ExtractionPlan:
    """Store layout and the panel expression in store order."""

    layout: StoreLayout
    expression: sp.csr_matrix  # (N, G) panel expression, rows in store order
    fingerprint: StoreFingerprint
    coverage: float  # fraction of panel genes in the scGPT vocabulary


def plan_extraction(data: PerturbationData, scgpt: ScgptModel, cfg: ExtractConfig) -> ExtractionPlan:
    panel = choose_panel(data, cfg.n_genes, cfg.panel_cells)
    vocab = map_panel_to_vocab(list(panel.symbols), scgpt.vocab)
    codes, _ = pd.factorize(data.cell_labels, sort=True)
    order = np.lexsort((np.arange(data.n_cells), codes))  # grouped by perturbation, file order inside
    expression = data.expression[order][:, list(panel.columns)].tocsr()  # (N, G)
    hashes = cell_hashes(expression.toarray())
    counts = np.asarray((expression[:, vocab.vocab_ids >= 0] > 0).sum(axis=1)).ravel()  # covered genes per cell
    layout = StoreLayout(
        obs_names=data.obs_names[order],
        cell_labels=data.cell_labels[order],
        cell_hashes=hashes,
        genes=np.array(panel.symbols, dtype=object),
        vocab_ids=vocab.vocab_ids,
        covered_counts=counts,
        d_model=scgpt.d_model,
        shard_cells=cfg.shard_cells,
    )
    fingerprint = StoreFingerprint(
        checkpoint=scgpt.fingerprint,
        panel=panel_hash(list(panel.symbols), vocab.vocab_ids),
        data=data_hash(layout.obs_names.tolist(), hashes),
        extraction=sha256_of(cfg.fingerprint_settings()),
    )
    return ExtractionPlan(layout, expression, fingerprint, vocab.coverage)


#: The normalization sample's features are kept for the shard pass up to this many bytes (float32, covered
#: positions only), so those cells run through the model once; beyond it the rest are computed again.
SAMPLE_CACHE_BYTES = 2 << 30


def _sample_rows(n_cells: int, cfg: ExtractConfig) -> np.ndarray:
    """The seeded normalization sample: sorted store rows."""
    return np.sort(np.random.default_rng(cfg.seed).choice(n_cells, size=min(cfg.norm_cells, n_cells), replace=False))


def _sample_of_shard(sample: np.ndarray, start: int, stop: int) -> np.ndarray:
    return sample[(sample >= start) & (sample < stop)]


def _features_of(
    extractor: FeatureExtractor, plan: ExtractionPlan, rows: np.ndarray, batch_size: int
) -> tuple[np.ndarray, np.ndarray]:
    """((n_covered, D) float32 raw features of `rows`' covered positions, covered (len(rows), G))."""
    names = plan.layout.obs_names[rows].tolist()
    return extractor.extract_covered(plan.expression[rows].toarray(), names, batch_size)


def _freeze_stats(
    plan: ExtractionPlan, extractor: FeatureExtractor, cfg: ExtractConfig
) -> tuple[FrozenStats, dict[int, np.ndarray]]:
    """Mean/std per dimension over covered positions of a seeded sample of cells, and the sample's raw features
    by shard (up to SAMPLE_CACHE_BYTES) for the shard pass. Each shard's sampled cells are batched among
    themselves, exactly as the shard pass batches them when they are not cached (resumes included)."""
    n, shard_cells = plan.expression.shape[0], cfg.shard_cells
    sample = _sample_rows(n, cfg)
    moments, cache, cached_bytes = RunningMoments.empty(extractor.d_model), {}, 0
    shards = sorted({int(r) // shard_cells for r in sample})
    for shard in progress(shards, desc="normalization sample", unit="shard", leave=False):
        rows = _sample_of_shard(sample, shard * shard_cells, (shard + 1) * shard_cells)
        features, _ = _features_of(extractor, plan, rows, cfg.batch_size)
        moments = moments.merge(RunningMoments.of(features))
        if cached_bytes + features.nbytes <= SAMPLE_CACHE_BYTES:
            cache[shard], cached_bytes = features, cached_bytes + features.nbytes
    return frozen_stats_from(moments, cfg.target_std), cache


def _shard_groups(
    start: int, stop: int, sample: np.ndarray, cached: np.ndarray | None
) -> list[tuple[np.ndarray, np.ndarray | None]]:
    """A shard's cells [start, stop) as extraction batches them: its sampled cells (with their raw features from
    the normalization pass when `cached`) apart from its other cells; empty groups left out."""
    sampled = _sample_of_shard(sample, start, stop)
    others = np.setdiff1d(np.arange(start, stop), sampled)
    return [(rows, features) for rows, features in ((sampled, cached), (others, None)) if rows.size]


class GroupTokens(torch.utils.data.Dataset):
    """Item i: the tokens of the i-th group of cells (rows of `expression` (N, G), dense or CSR)."""

    def __init__(self, tokenize: Tokenizer, expression: Any, names: np.ndarray, groups: list[np.ndarray]) -> None:
        self.tokenize, self.expression, self.names, self.groups = tokenize, expression, names, groups

    def __len__(self) -> int:
        return len(self.groups)

    def __getitem__(self, i: int) -> TokenBatch:
        rows = self.groups[i]
        return self.tokenize(self.expression[rows], self.names[rows].tolist())


def _shard_features(
    extractor: FeatureExtractor,
    stats: FrozenStats,
    plan: ExtractionPlan,
    start: int,
    groups: list[tuple[np.ndarray, np.ndarray | None]],
    tokens: Iterator[TokenBatch],
    batch_size: int,
) -> ShardRows:
    """What a shard (cells from `start`) stores: each group through the model once (`tokens` gives the next
    group's tokens) unless its raw features are cached; put in cell order, normalized and rounded to fp16 on the
    extractor's device."""
    n = sum(rows.size for rows, _ in groups)
    covered = np.zeros((n, extractor.n_genes), dtype=bool)
    computed = []
    for rows, cached in groups:
        if cached is None:
            batch = next(tokens)
            features, part = extractor.encode_cells(batch, batch_size), batch.covered
        else:
            features = torch.from_numpy(cached).to(extractor.device)
            part = coverage(plan.expression[rows].toarray(), extractor.vocab_ids)
        covered[rows - start] = part
        computed.append((rows - start, features))
    counts = covered.sum(axis=1)  # (S,)
    starts = np.cumsum(counts) - counts  # each cell's first row in the shard
    out = torch.empty((int(counts.sum()), extractor.d_model), device=extractor.device)
    for cells, features in computed:
        out[torch.from_numpy(packed_index(starts[cells], counts[cells])).to(extractor.device)] = features
    return stored_shard(stats, out, covered)


def _create_store(
    plan: ExtractionPlan,
    extractor: FeatureExtractor,
    scgpt: ScgptModel,
    data: PerturbationData,
    cfg: ExtractConfig,
    target: Path,
) -> tuple[LatentStore, dict[int, np.ndarray]]:
    stats, cache = _freeze_stats(plan, extractor, cfg)
    inputs = {"data": Path(cfg.data).resolve(), "scgpt": Path(cfg.scgpt).resolve()}  # absolute: `ccfm train STORE`
    record = StoreRecord(
        fingerprint=plan.fingerprint,
        frozen_stats=stats.to_json(),
        config=to_json_dict(dataclasses.replace(cfg, **inputs, out=Path(cfg.out).resolve())),
        stand_in={"data": data.stand_in, "scgpt": bool(scgpt.args.get("stand_in", False))},
        provenance=provenance(extractor.device, cfg.seed),
        panel_coverage=plan.coverage,
        **inputs,
    )
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.with_name(target.name + ".creating")
    shutil.rmtree(staging, ignore_errors=True)
    LatentStore.create(staging, plan.layout, record.to_attrs())
    if target.exists():  # an empty folder, or a fresh staging folder holding only its mark (plan_output)
        shutil.rmtree(target)
    staging.rename(target)
    return LatentStore.open(target, mode="r+"), cache


def _open_for_resume(plan: ExtractionPlan, target: Path, repair: bool) -> LatentStore:
    """Open an existing store after checking it is this run's; with `repair`, redo shards changed on disk."""
    store = LatentStore.open(target, mode="r+")
    stored = store.record.fingerprint
    differ = stored.differences(plan.fingerprint)
    if differ:
        raise CCFMError(
            f"cannot resume {target}: its {', '.join(differ)} differ from this run's; resume with the same "
            "data, checkpoint and settings, or pass --overwrite to start over"
        )
    for shard in store.damaged_shards(deep=True) if repair else ():
        log.warning("shard %d of %s changed on disk since it was written; extracting it again", shard, target)
        store.forget_shard(shard)
    return store


def _extract_shards(
    store: LatentStore,
    plan: ExtractionPlan,
    extractor: FeatureExtractor,
    cfg: ExtractConfig,
    ctx: DistContext,
    cache: dict[int, np.ndarray],
) -> None:
    """Write this rank's unfinished shards; `cache`: the normalization sample's raw features by shard."""
    stats = FrozenStats.from_json(store.record.frozen_stats)
    sample = _sample_rows(plan.expression.shape[0], cfg)
    done = store.completed_shards()
    mine = [s for s in range(store.n_shards) if s % ctx.world == ctx.rank and s not in done]
    total = sum(stop - start for start, stop in map(store.shard_range, mine))
    log.info("rank %d: %d shards to extract (%d already complete)", ctx.rank, len(mine), len(done))
    processes, threads = cpu_helpers(extractor.device)
    shards = [(s, _shard_groups(*store.shard_range(s), sample, cache.pop(s, None))) for s in mine]
    groups_to_run = [rows for _, groups in shards for rows, features in groups if features is None]
    loader = torch.utils.data.DataLoader(  # on a GPU, helper processes tokenize ahead of the model
        GroupTokens(extractor.tokenize, plan.expression, plan.layout.obs_names, groups_to_run),
        batch_size=None,
        num_workers=processes,
    )
    tokens = iter(loader)
    with (
        progress(total=int(total), desc="extract", unit="cell", disable=not ctx.is_main) as bar,
        ShardWriter(store, threads) as writer,  # earlier shards are written meanwhile
    ):
        for shard, groups in shards:
            start, _ = store.shard_range(shard)
            stored = _shard_features(extractor, stats, plan, start, groups, tokens, cfg.batch_size)
            bar.update(writer.submit(shard, stored))
        bar.update(writer.wait())


def cpu_helpers(device: torch.device) -> tuple[int, int]:
    """(tokenizing processes, shard-writing threads) for extraction on `device`. On a CPU the model already uses
    every core: tokens are made in this process and one thread writes (as fast as writing inline there,
    bench/extract.py). On a GPU, whose CPU cores are otherwise idle, see `gpu_helpers`."""
    return (0, 1) if device.type == "cpu" else gpu_helpers(rank_cores())


def gpu_helpers(cores: int) -> tuple[int, int]:
    """Of a GPU rank's `cores`, a quarter tokenize (processes) and half write shards (threads), at most 8 each,
    so that neither keeps the GPU waiting."""
    return min(8, cores // 4), max(1, min(8, cores // 2))


def _finalize(store: LatentStore) -> RunningMoments:
    missing = sorted(set(range(store.n_shards)) - store.completed_shards())
    if missing:
        raise CCFMError(f"{len(missing)} shards of {store.path} are still incomplete; rerun with --resume")
    moments = RunningMoments.empty(store.d_model)
    for shard in range(store.n_shards):
        moments = moments.merge(store.shard_moments(shard))
    store.finalize(moments)
    return moments


def _open_or_create(
    plan: ExtractionPlan,
    extractor: FeatureExtractor,
    scgpt: ScgptModel,
    data: PerturbationData,
    cfg: ExtractConfig,
    target: Path,
) -> tuple[LatentStore, dict[int, np.ndarray]]:
    """Rank 0, holding the writer lock: create the store (with the normalization sample's features), or open it
    for resuming (no features kept: a resumed shard computes its sampled cells again, in the same batches)."""
    if cfg.resume and (target / "zarr.json").exists():
        return _open_for_resume(plan, target, repair=True), {}
    return _create_store(plan, extractor, scgpt, data, cfg, target)


def run(cfg: ExtractConfig) -> Path:
    ctx = init_distributed(cfg.device)
    try:
        output = plan_output(
            cfg.out, STORE, overwrite=cfg.overwrite, inputs=(cfg.data, cfg.scgpt), resume=cfg.resume,
            hint="--resume to finish it",
        )  # fmt: skip
        ctx.barrier()  # every rank has looked at OUT before rank 0 writes there
        resume = "finish the store with the same command plus --resume (finished shards are kept)"
        with output.writing(resume, ctx) as work:
            _extract(cfg, work, ctx)
    finally:
        close_distributed(ctx)
    return cfg.out


def _extract(cfg: ExtractConfig, target: Path, ctx: DistContext) -> None:
    device = resolve_device(cfg.device, ctx.local_rank)
    share_cpu_cores(device)
    data = load_dataset(cfg.data, cfg.schema)
    scgpt = load_scgpt(cfg.scgpt, device)
    autocast = torch.bfloat16 if device.type == "cuda" else None
    plan = plan_extraction(data, scgpt, cfg)
    extractor = FeatureExtractor(scgpt, plan.layout.vocab_ids, seed=cfg.seed, autocast=autocast)
    log.info(
        "panel: %d genes, %.1f%% in the scGPT vocabulary; %d cells, device %s",
        len(plan.layout.genes),
        100 * plan.coverage,
        plan.expression.shape[0],
        device,
    )
    with contextlib.ExitStack() as held:  # rank 0 holds the writer lock until the store is complete

        def lock_and_open() -> tuple[LatentStore, dict[int, np.ndarray]]:
            held.enter_context(WriterLock(cfg.out, cfg.break_lock))  # inside main_first: a refusal stops every rank
            return _open_or_create(plan, extractor, scgpt, data, cfg, target)

        opened = ctx.main_first(lock_and_open)
        store, cache = opened if ctx.is_main else (_open_for_resume(plan, target, repair=False), {})
        started = time.perf_counter()
        _extract_shards(store, plan, extractor, cfg, ctx, cache)
        ctx.barrier()
        if ctx.is_main:
            moments = _finalize(store)
            log.info(
                "store complete: %s (%d cells, %.1f s; running std mean %.3f)",
                cfg.out,
                store.n_cells,
                time.perf_counter() - started,
                float(moments.std.mean()),
            )
