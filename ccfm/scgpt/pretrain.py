"""scGPT's masked-expression objective, to give the toy stand-in knowledge of gene–gene context.

The released scGPT learned its features by predicting masked expression values from the other genes of the
cell (its "GEP" objective): each cell's expressed genes are binned (ccfm.scgpt.binning), a share of them
(mask ratio drawn from the release's args.json, 0.25 / 0.5 / 0.75) get the value `mask_value` (−1), and the
expression decoder's output at those positions is scored by MSE against their true bins. A model that only
knows each gene's typical bin reaches the per-gene-mean reference; only co-expression context goes below it.

Shapes: B cells, L tokens (`<cls>` + expressed genes, padded), G genes.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from ccfm.scgpt.binning import bin_values

MASK_VALUE = -1.0  # the release's mask_value: the input value of a masked gene
MASK_RATIOS = (0.25, 0.5, 0.75)  # the release's mask_ratio choices, one drawn per batch
MAX_TOKENS = 256  # expressed genes per cell at most (the release: 1,200), a seeded sample beyond this
WARMUP_STEPS = 50


@dataclass(frozen=True)
class MaskedBatch:
    src: Tensor  # (B, L) long vocab ids, `<cls>` first
    values: Tensor  # (B, L) float inputs: bins, MASK_VALUE where masked, pad_value at `<cls>` and pads
    target: Tensor  # (B, L) float true bins
    masked: Tensor  # (B, L) bool, the positions scored
    padding: Tensor  # (B, L) bool, True at pads
    genes: Tensor  # (B, L) long column of each token in the cells' matrix (−1 at `<cls>` and pads)


@dataclass(frozen=True)
class TokenSpec:
    """What the model's input layout needs: vocab ids of the genes and the special tokens and values."""

    vocab_ids: np.ndarray  # (G,) vocab id of each column (all in the vocab)
    cls_id: int
    pad_id: int
    pad_value: float
    n_bins: int


def masked_batch(
    expression: np.ndarray, spec: TokenSpec, rng: np.random.Generator, ratio: float | None = None
) -> MaskedBatch:
    """Tokens of B cells (expression (B, G), any monotone scale) with a share `ratio` of each cell's genes masked
    (None: drawn from MASK_RATIOS). At least one gene per cell with any expressed gene is masked."""
    ratio = float(rng.choice(MASK_RATIOS)) if ratio is None else ratio
    rows = []
    for cell in expression:
        cols = np.flatnonzero(cell > 0)
        if cols.size > MAX_TOKENS:
            cols = np.sort(rng.choice(cols, size=MAX_TOKENS, replace=False))
        rows.append((cols, bin_values(cell[cols], spec.n_bins, rng).astype(np.float32)))
    length = 1 + max((cols.size for cols, _ in rows), default=0)
    b = len(rows)
    src = np.full((b, length), spec.pad_id, dtype=np.int64)  # (B, L)
    target = np.full((b, length), spec.pad_value, dtype=np.float32)  # (B, L)
    genes = np.full((b, length), -1, dtype=np.int64)  # (B, L)
    masked = np.zeros((b, length), dtype=bool)  # (B, L)
    src[:, 0] = spec.cls_id
    for i, (cols, bins) in enumerate(rows):
        n = cols.size
        src[i, 1 : 1 + n] = spec.vocab_ids[cols]
        target[i, 1 : 1 + n] = bins
        genes[i, 1 : 1 + n] = cols
        if n:
            chosen = rng.random(n) < ratio
            chosen[rng.integers(n)] = True
            masked[i, 1 : 1 + n] = chosen
    values = np.where(masked, MASK_VALUE, target)
    return MaskedBatch(
        src=torch.from_numpy(src),
        values=torch.from_numpy(values.astype(np.float32)),
        target=torch.from_numpy(target),
        masked=torch.from_numpy(masked),
        padding=torch.from_numpy(src == spec.pad_id),
        genes=torch.from_numpy(genes),
    )


def predicted_bins(model: torch.nn.Module, batch: MaskedBatch) -> Tensor:
    """The expression decoder's output (B, L)."""
    with warnings.catch_warnings():  # torch's fast path packs padded batches as (prototype) nested tensors
        warnings.filterwarnings("ignore", message=".*nested tensors is in prototype.*")
        return model(batch.src, batch.values, batch.padding)["mlm_output"]  # (B, L)


def masked_mse(model: torch.nn.Module, batch: MaskedBatch) -> Tensor:
    """Mean squared error of the expression decoder at the masked positions (scalar)."""
    out = predicted_bins(model, batch)  # (B, L)
    return (out[batch.masked] - batch.target[batch.masked]).pow(2).mean()


@dataclass(frozen=True)
class HeldOutLoss:
    """Masked-expression MSE on held-out cells (fixed masks), with the references a model must beat."""

    model: float  # the model's MSE
    constant: float  # predicting every masked bin by the mean masked bin of the training cells
    gene_mean: float  # predicting each masked gene's bin by its mean bin over the training cells (no context)


def gene_mean_bins(expression: np.ndarray, spec: TokenSpec, seed: int) -> np.ndarray:
    """(G,) each gene's mean bin over the cells where it is expressed (the no-context reference's prediction)."""
    total, count = np.zeros(expression.shape[1]), np.zeros(expression.shape[1])
    rng = np.random.default_rng(seed)
    for start in range(0, expression.shape[0], 256):
        batch = masked_batch(expression[start : start + 256], spec, rng, ratio=0.0)
        cols, bins = batch.genes.numpy(), batch.target.numpy()
        keep = cols >= 0
        np.add.at(total, cols[keep], bins[keep])
        np.add.at(count, cols[keep], 1)
    overall = total.sum() / max(count.sum(), 1)
    return np.where(count > 0, total / np.maximum(count, 1), overall)


@torch.no_grad()
def held_out_loss(model: torch.nn.Module, batches: list[MaskedBatch], gene_mean: np.ndarray) -> HeldOutLoss:
    """The model (in eval mode) and the two references on the same masked positions."""
    was_training = model.training
    model.eval()
    sq_model = sq_const = sq_gene = n = 0.0
    overall = float(gene_mean.mean())
    for batch in batches:
        out = predicted_bins(model, batch)  # (B, L)
        truth = batch.target[batch.masked].double()
        sq_model += float((out[batch.masked].double() - truth).pow(2).sum())
        sq_gene += float((torch.from_numpy(gene_mean)[batch.genes[batch.masked]] - truth).pow(2).sum())
        sq_const += float((truth - overall).pow(2).sum())
        n += truth.numel()
    model.train(was_training)
    return HeldOutLoss(model=sq_model / n, constant=sq_const / n, gene_mean=sq_gene / n)


@dataclass(frozen=True)
class PretrainResult:
    steps: int  # optimizer steps taken
    seconds: float  # wall time spent training
    before: HeldOutLoss  # held-out masked MSE of the random initialization
    after: HeldOutLoss  # ... after pretraining


def pretrain(
    model: torch.nn.Module,
    train: np.ndarray,
    held_out: np.ndarray,
    spec: TokenSpec,
    seconds: float,
    seed: int,
    batch_size: int = 32,
    lr: float = 1e-3,
    max_steps: int | None = None,
    progress: Callable[[float], None] | None = None,
) -> PretrainResult:
    """Adam on the masked-expression MSE over `train` cells (N, G) for `seconds` of wall time (or `max_steps`),
    scored before and after on `held_out` cells with fixed masks. `progress(elapsed_seconds)` after each step."""
    rng = np.random.default_rng(seed)
    fixed = np.random.default_rng(seed + 1)
    held = [masked_batch(held_out[i : i + 64], spec, fixed) for i in range(0, held_out.shape[0], 64)]
    gene_mean = gene_mean_bins(train, spec, seed)
    before = held_out_loss(model, held, gene_mean)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    started, steps = time.perf_counter(), 0
    while (elapsed := time.perf_counter() - started) < seconds and (max_steps is None or steps < max_steps):
        done = max(elapsed / seconds, steps / max_steps if max_steps else 0.0)  # share of the budget spent
        for group in optimizer.param_groups:  # cosine decay over the budget, after a short linear warm-up
            group["lr"] = lr * min(1.0, (steps + 1) / WARMUP_STEPS) * 0.5 * (1 + math.cos(math.pi * done))
        rows = rng.choice(train.shape[0], size=min(batch_size, train.shape[0]), replace=False)
        loss = masked_mse(model, masked_batch(train[rows], spec, rng))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        steps += 1
        if progress is not None:
            progress(time.perf_counter() - started)
    spent = time.perf_counter() - started
    model.eval()
    return PretrainResult(steps, spent, before, held_out_loss(model, held, gene_mean))
