"""What a training run is built from: data, latent store, split, vocabularies, model config, graph.

Everything here is derived deterministically from the TrainConfig, so every rank (and a resumed
run) rebuilds the same setup; the run folder records it for `generate`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ccfm.config import ModelConfig, SchemaOverrides, TrainConfig, to_json_dict
from ccfm.data.batches import TrainingCells
from ccfm.data.loading import PerturbationData, load_dataset
from ccfm.data.panel import panel_columns
from ccfm.data.splits import Split, make_split
from ccfm.data.vocab import PerturbationVocab, build_vocab
from ccfm.errors import CCFMError
from ccfm.eval.baselines import TrainingEffects
from ccfm.latent.record import StoreRecord
from ccfm.latent.source import LatentSource
from ccfm.latent.store import LatentStore
from ccfm.model.cascade import CascadedFlowModel
from ccfm.model.graph import coexpression_graph
from ccfm.model.latent_space import GenePCA
from ccfm.model.source import InteractionFit, fit_interaction
from ccfm.scgpt.checkpoint import load_scgpt

GRAPH_MAX_CELLS = 20_000  # training cells used for the co-expression graph (seeded sample beyond this)
LATENT_FIT_CELLS = 24  # cells per training condition read for the latent PCA and prior (seeded sample) ...
LATENT_FIT_SINGLES = 256  # ... but a single's mean latent is a row of the prior: as many as this (24 cells made the
LATENT_FIT_CONTROLS = 512  # additive latent of a double correlate 0.54 with the measured one, all its cells 0.75)
LATENT_READ_CHUNK = 256


@dataclass(frozen=True)
class SourceSpec:
    """How a worker process opens the latent source (opened lazily, after the fork)."""

    cache: Path
    scgpt: Path | None
    batch_size: int = 32

    def open(self) -> LatentSource:
        scgpt = load_scgpt(self.scgpt) if self.scgpt is not None else None
        return LatentSource.open(self.cache, scgpt, self.batch_size)


@dataclass(frozen=True)
class RunSetup:
    data: PerturbationData
    store: StoreRecord  # what the latent store was built from (fingerprint, stats, stand-in flags)
    source: LatentSource  # the store opened and checked (main process; loader workers open their own)
    genes: list[str]  # (G,) the panel, from the store
    vocab_ids: list[int]  # (G,) scGPT vocab ids of the panel
    columns: np.ndarray  # (G,) panel columns in the data
    split: Split
    vocab: PerturbationVocab
    model: ModelConfig
    cells: TrainingCells


def with_store_inputs(cfg: TrainConfig) -> TrainConfig:
    """The config with the data file and schema the store records filled in where `cfg` leaves them out, and every
    path absolute, so that `ccfm train STORE --out RUN` needs nothing else and run.json reads from anywhere."""
    record = LatentStore.open(cfg.cache).record
    data = Path(cfg.data) if cfg.data is not None else record.data
    if not data.is_file():
        given = "given with --data" if cfg.data is not None else f"recorded in the latent store {cfg.cache}"
        raise CCFMError(f"the data file {data} {given} does not exist; pass --data DATA.h5ad (the one it came from)")
    mine, stored = dataclasses.asdict(cfg.schema), dataclasses.asdict(record.schema)
    schema = SchemaOverrides(**{k: mine[k] if mine[k] is not None else stored[k] for k in mine})

    def absolute(path: Path | None) -> Path | None:
        return None if path is None else Path(path).resolve()

    return dataclasses.replace(
        cfg, data=data.resolve(), schema=schema, cache=absolute(cfg.cache), out=absolute(cfg.out),
        scgpt=absolute(cfg.scgpt), split_file=absolute(cfg.split_file),
    )  # fmt: skip


def prepare(cfg: TrainConfig) -> RunSetup:
    # Store checks happen here, in the main process: a refusal inside a loader worker would reach the user
    # as a traceback. Opening refuses an incomplete or damaged store and one made with another --scgpt.
    source = SourceSpec(cfg.cache, cfg.scgpt).open()
    store = source.store
    genes = source.genes
    data = load_dataset(cfg.data, cfg.schema)
    columns = panel_columns(data, genes)
    split = make_split(data.perturbations, cfg.split, cfg.split_seed, cfg.fold, cfg.test_fraction, cfg.split_file)
    vocab = build_vocab(genes, data)
    cells = TrainingCells.from_data(data, columns, list(split.train), vocab)
    source.check_cells(cells.obs_names.tolist(), cells.expression)  # refuses a store made from other data
    n_train = cells.controls.size + sum(rows.size for rows in cells.by_condition.values())
    if cfg.batch_size > n_train:
        raise CCFMError(
            f"--batch-size {cfg.batch_size} is larger than the {n_train} training cells of {cfg.data}; "
            f"use at most {n_train} (the default 48 suits most data sets)"
        )
    return RunSetup(
        data=data,
        store=store.record,
        source=source,
        genes=genes,
        vocab_ids=store.array("vocab_ids").tolist(),
        columns=columns,
        split=split,
        vocab=vocab,
        model=cfg.model.build(len(vocab.genes), len(vocab.drugs), store.d_model),
        cells=cells,
    )


def gene_graph(setup: RunSetup, k: int, seed: int) -> torch.Tensor:
    """(n_genes, n_genes) bool co-expression graph from training cells; genes outside the panel: self only."""
    rows = np.concatenate([setup.cells.controls, *setup.cells.by_condition.values()])
    if rows.size > GRAPH_MAX_CELLS:
        rows = np.random.default_rng(seed).choice(rows, size=GRAPH_MAX_CELLS, replace=False)
    panel = coexpression_graph(setup.cells.expression[np.sort(rows)].toarray(), k)  # (G, G)
    n = len(setup.vocab.genes)
    full = torch.eye(n, dtype=torch.bool)
    full[: panel.shape[0], : panel.shape[1]] = panel
    return full


def training_pseudobulk(setup: RunSetup) -> TrainingEffects:
    """Pseudobulk deltas of every training condition against the training control cells, on the panel."""
    cells = setup.cells

    def mean(rows: np.ndarray) -> np.ndarray:
        return np.asarray(cells.expression[rows].mean(axis=0), dtype=np.float64).ravel()  # (G,)

    means = {lab: mean(rows) for lab, rows in cells.by_condition.items()}
    return TrainingEffects.from_means(means, mean(cells.controls))


def prior_shifts(setup: RunSetup, effects: TrainingEffects) -> torch.Tensor:
    """(n_genes + n_drugs, n_genes) the prior shift of each perturbation token on each gene of the model's vocabulary:
    the pseudobulk delta of the token's training single against the control cells on the panel (the first G
    ids); a token without a training single gets the mean delta over all training perturbations (train_mean's).
    Genes outside the panel are never expression tokens: their columns stay 0."""
    cells = setup.cells
    n_tokens, n_panel = setup.model.n_genes + setup.model.n_drugs, cells.expression.shape[1]
    table = np.zeros((n_tokens, setup.model.n_genes), dtype=np.float32)  # (T, n_genes)
    table[:, :n_panel] = effects.mean_delta()
    for label, tokens in cells.tokens.items():
        filled = tokens[tokens >= 0]
        if filled.size == 1:
            table[filled[0], :n_panel] = effects.deltas[label]
    return torch.from_numpy(table)


def fit_interaction_head(
    model: CascadedFlowModel, setup: RunSetup, effects: TrainingEffects, seed: int
) -> InteractionFit | None:
    """Fit the prior source's interaction head (source.fit_interaction) on the training doubles' pseudobulk
    deltas (`effects`), after the prior shifts are set, and freeze it; None for a model without one."""
    source = model.source
    if source.interaction is None:
        return None
    cells = setup.cells
    doubles = [lab for lab, tokens in cells.tokens.items() if int((tokens >= 0).sum()) >= 2]
    fit = InteractionFit(0, 0, float("nan"), float("nan"))  # single perturbations only: the head stays 0
    if doubles:
        device = source.shift.device
        genes = torch.arange(cells.expression.shape[1], device=device)  # the panel: the first G ids
        pert = torch.from_numpy(np.stack([cells.tokens[lab] for lab in doubles])).to(device)
        observed = torch.tensor(np.stack([effects.deltas[lab] for lab in doubles]), dtype=torch.float32).to(device)
        with torch.no_grad():
            prior, shared = source.prior_shift(pert, genes), source.shared_shift(pert, genes)
        fit = fit_interaction(source.interaction, prior, shared, observed - prior, genes, seed)
    source.interaction.requires_grad_(False)  # fixed from here: the flow's training never moves it
    return fit


@dataclass(frozen=True)
class LatentFit:
    """What the latent space was fitted on (recorded in the checkpoints)."""

    cells: int  # training cells whose cached latents were read
    pca_components: int  # k (0: no PCA)
    pca_explained: float  # mean over panel genes of the variance share the k components keep (1.0 without PCA)
    prior: bool  # the latent prior source's control code and shift table were set


def fit_latent_space(model: CascadedFlowModel, setup: RunSetup, source: LatentSource, seed: int) -> LatentFit | None:
    """Set the latent space's PCA and prior tables (ccfm/model/latent_space.py) from the cached latents of a seeded
    sample of training cells: LATENT_FIT_SINGLES per training single, LATENT_FIT_CELLS per other training condition
    and LATENT_FIT_CONTROLS controls. None for a model with neither."""
    space = model.latent_space if model.has_latent else None
    if space is None or (not space.has_pca and space.kind == "noise"):
        return None
    cells, rng = setup.cells, np.random.default_rng([seed, 17])
    groups = {"": cells.controls, **cells.by_condition}  # "" = the controls
    n_panel, d = cells.expression.shape[1], space.d
    pca = GenePCA(n_panel, d) if space.has_pca else None
    means, n_read = {}, 0
    for label, rows in groups.items():
        single = label != "" and int((cells.tokens[label] >= 0).sum()) == 1
        size = LATENT_FIT_CONTROLS if label == "" else LATENT_FIT_SINGLES if single else LATENT_FIT_CELLS
        rows = np.sort(rng.choice(rows, size=min(size, rows.size), replace=False))
        total = torch.zeros(n_panel, d, dtype=torch.float64)
        for chunk in np.array_split(rows, max(1, rows.size // LATENT_READ_CHUNK)):
            names = cells.obs_names[chunk].tolist()
            z = torch.from_numpy(source.get(names, cells.expression[chunk].toarray()).features)  # (n, G, D)
            total += z.double().sum(dim=0)
            if pca is not None:
                pca.add(z)
        means[label] = (total / rows.size).float()  # (G, D)
        n_read += rows.size
    device, panel = space.mean.device, torch.arange(n_panel)
    explained = 1.0
    if pca is not None:
        mean, basis, share = pca.fit(space.k)
        space.set_pca(_pad_genes(mean, model.cfg.n_genes).to(device), _pad_genes(basis, model.cfg.n_genes).to(device))
        explained = float(share.mean())
    if space.kind == "prior":
        code = {lab: space.encode(m[None].to(device), panel.to(device))[0].cpu() for lab, m in means.items()}
        control = code.pop("")
        deltas = {lab: c - control for lab, c in code.items()}
        rows = [torch.stack(list(deltas.values())).mean(dim=0)]  # row 0, train_mean's shift: tokens without a single
        token_row = torch.zeros(model.cfg.n_genes + model.cfg.n_drugs, dtype=torch.long)  # (T,)
        for label, tokens in cells.tokens.items():
            filled = tokens[tokens >= 0]
            if filled.size == 1:
                token_row[int(filled[0])] = len(rows)
                rows.append(deltas[label])
        n_genes = model.cfg.n_genes
        table = torch.stack([_pad_genes(r, n_genes) for r in rows])  # (R, n_genes, K)
        space.set_prior(_pad_genes(control, n_genes).to(device), table.to(device), token_row.to(device))
    return LatentFit(n_read, space.k, explained, space.kind == "prior")


def _pad_genes(rows: Tensor, n_genes: int) -> Tensor:
    """(G, ...) panel rows padded with zeros to the model's n_genes (genes outside the panel never carry a latent)."""
    out = rows.new_zeros((n_genes, *rows.shape[1:]))
    out[: rows.shape[0]] = rows
    return out


def describe_run(cfg: TrainConfig, setup: RunSetup) -> dict[str, Any]:
    """The run folder's `run.json`: enough to rebuild model, panel and split without the TrainConfig."""
    return {
        "train_config": to_json_dict(cfg),
        "model_config": dataclasses.asdict(setup.model),
        "panel": setup.genes,
        "vocab_ids": setup.vocab_ids,
        "perturbation_vocab": setup.vocab.to_json(),
        "cache_fingerprint": setup.store.fingerprint.to_json(),
        "stand_in": {"data": setup.data.stand_in, "scgpt": setup.store.stand_in.get("scgpt", False)},
    }


def check_resumable(saved: dict[str, Any], current: dict[str, Any], run: Path) -> None:
    """Refuse to resume a run with another panel, cache, model or split."""
    for key in ("panel", "cache_fingerprint", "model_config", "perturbation_vocab"):
        if saved.get(key) != current.get(key):
            raise CCFMError(
                f"cannot resume {run}: its {key.replace('_', ' ')} differs from this run's (another cache, panel "
                "or preset?); use the original settings or start a new run folder"
            )
