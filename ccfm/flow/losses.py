"""Training losses: per-stream flow-matching MSE and scDFM's MMD² on one-step estimates.

Shapes: B cells, G genes, D scGPT width. Each stream's MSE is averaged over the samples that train
it (Latent Forcing averages over the whole batch, which silently down-weights both streams), and a
stream with no sample in the batch contributes exactly 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

MMD_SCALES = (0.5, 1.0, 2.0, 4.0)  # bandwidth multipliers s of the median squared target distance
_MIN_BANDWIDTH = 1e-8  # keeps σ² positive when all targets coincide


@dataclass
class LossTerms:
    """One batch's loss and its parts (all scalar tensors but the counts)."""

    total: Tensor  # expr_mse + latent_weight · latent_mse + mmd_weight · mmd + the residual weights · residuals
    expr_mse: Tensor  # expression velocity MSE over expression-training samples
    latent_mse: Tensor  # latent velocity MSE over latent-first samples (covered positions if masked)
    mmd: Tensor  # unbiased MMD² between one-step estimates and the targets, averaged over perturbations
    residual: Tensor  # squared mean predicted expression velocity per perturbation, averaged (0 if unweighted)
    latent_residual: Tensor  # the same of the latent velocity over latent-first samples (0 if unweighted)
    n_expr: int  # samples that trained expression
    n_latent: int  # samples that trained the latent


def _pairwise_sq_dists(a: Tensor, b: Tensor) -> Tensor:
    """Squared Euclidean distances between rows of a (n, G) and b (m, G) → (n, m), clamped at 0."""
    sq = a.pow(2).sum(1)[:, None] + b.pow(2).sum(1)[None, :] - 2 * a @ b.T  # (n, m)
    return sq.clamp_min(0)


def mmd2_unbiased(x: Tensor, y: Tensor, scales: Sequence[float] = MMD_SCALES) -> Tensor:
    """Unbiased MMD² between samples x (n, G) and y (m, G), n, m ≥ 2, with a multi-bandwidth RBF kernel.

    Kernel: k(a, b) = Σ_s exp(−‖a − b‖² / (2 · s · m²_y)), summed (not averaged) over s in `scales`,
    where m²_y is the median of ‖y_i − y_j‖² over pairs i < j of the targets y, detached (so σ² = s·m²_y).
    Estimate: mean_{i≠j} k(x_i, x_j) + mean_{i≠j} k(y_i, y_j) − 2 · mean_{i,j} k(x_i, y_j).
    Being unbiased it can be slightly negative when x and y come from the same distribution.
    """
    n, m = x.shape[0], y.shape[0]
    if n < 2 or m < 2 or x.shape[1:] != y.shape[1:]:
        raise ValueError(f"need x (n≥2, G) and y (m≥2, G), got {tuple(x.shape)} and {tuple(y.shape)}")
    d_xx, d_yy, d_xy = _pairwise_sq_dists(x, x), _pairwise_sq_dists(y, y), _pairwise_sq_dists(x, y)
    upper = torch.triu_indices(m, m, offset=1, device=y.device)
    median = d_yy.detach()[upper[0], upper[1]].median().clamp_min(_MIN_BANDWIDTH)
    k_xx = k_yy = k_xy = 0.0
    for s in scales:
        two_sigma2 = 2 * s * median
        k_xx = k_xx + torch.exp(-d_xx / two_sigma2)  # (n, n)
        k_yy = k_yy + torch.exp(-d_yy / two_sigma2)  # (m, m)
        k_xy = k_xy + torch.exp(-d_xy / two_sigma2)  # (n, m)
    term_xx = (k_xx.sum() - k_xx.diagonal().sum()) / (n * (n - 1))
    term_yy = (k_yy.sum() - k_yy.diagonal().sum()) / (m * (m - 1))
    return term_xx + term_yy - 2 * k_xy.mean()


def _mean_or_zero(squared_errors: Tensor, anchor: Tensor) -> Tensor:
    """Mean of a possibly empty tensor; exactly 0 (still attached to `anchor`'s graph) when empty."""
    if squared_errors.numel() == 0:
        return (anchor * 0.0).sum()  # zero gradients rather than none, so DDP sees every parameter used
    return squared_errors.mean()


def _latent_mse(pred: Tensor, target: Tensor, latent_first: Tensor, mask: Tensor | None) -> Tensor:
    """MSE (B, G, D) over latent-first samples, and over covered positions when `mask` (B, G) is given.

    Without a mask every position counts, uncovered ones included: their target latent is exactly 0
    by construction, so the model learns which genes scGPT saw (expressed, in the vocab) — part of
    what the latent tells the expression stream. With a mask, uncovered positions are left out.
    """
    keep = latent_first[:, None].expand(pred.shape[:2])  # (B, G)
    if mask is not None:
        if mask.shape != pred.shape[:2] or mask.dtype != torch.bool:
            raise ValueError(f"latent_mask must be (B, G) bool, got {mask.dtype} {tuple(mask.shape)}")
        keep = keep & mask
    err = (pred[keep].float() - target[keep].float()).pow(2)  # (N_kept, D)
    return _mean_or_zero(err, pred)


def _per_perturbation(
    v_hat: Tensor, x_t: Tensor, t: Tensor, x1: Tensor, trained_groups: Tensor, groups: Tensor, want_residual: bool
) -> tuple[Tensor, Tensor]:
    """MMD² and squared mean velocity, each averaged over the perturbations (groups) of the batch.

    v_hat, x_t: (B_expr, G) of the expression samples, t: (B_expr,), trained_groups: (B_expr,); x1: (B, G) and
    groups: (B,) over the whole batch (every cell is a target of its perturbation).
    """
    mmds = []
    for group in torch.unique(trained_groups).tolist():
        mine = trained_groups == group  # (B_expr,)
        if int(mine.sum()) >= 2:
            x1_hat = x_t[mine] + (1 - t[mine])[:, None] * v_hat[mine]  # (n, G)
            mmds.append(mmd2_unbiased(x1_hat, x1[groups == group]))
    zero = v_hat.sum() * 0.0
    mmd = torch.stack(mmds).mean() if mmds else zero
    return mmd, group_mean_square(v_hat, trained_groups) if want_residual else zero


def group_mean_square(v: Tensor, groups: Tensor) -> Tensor:
    """Squared mean of the velocities v (n, ...) of each group (n,), over the other axes; averaged over groups
    (exactly 0, still attached to v's graph, when n = 0)."""
    means = [v[groups == g].float().mean(dim=0).pow(2).mean() for g in torch.unique(groups).tolist()]
    return torch.stack(means).mean() if means else v.sum() * 0.0


def groups_or_one(groups: Tensor | None, like: Tensor) -> Tensor:
    """(B,) long group ids: `groups`, or all one group (B = like's length)."""
    return torch.zeros(like.shape[0], dtype=torch.long, device=like.device) if groups is None else groups


def _check_shapes(
    v_expr_pred: Tensor, v_expr_target: Tensor, x_t: Tensor, x1: Tensor, t_expr: Tensor, latent_first: Tensor
) -> None:
    """Shapes of the expression-side inputs: (B, G) tensors, (B,) times and a (B,) bool stream flag."""
    if v_expr_pred.dim() != 2:
        raise ValueError(f"v_expr_pred must be (B, G), got {tuple(v_expr_pred.shape)}")
    want = tuple(v_expr_pred.shape)
    for name, value in (("v_expr_target", v_expr_target), ("x_t", x_t), ("x1", x1)):
        if tuple(value.shape) != want:
            raise ValueError(f"{name} must be {want} like v_expr_pred, got {tuple(value.shape)}")
    if t_expr.shape != v_expr_pred.shape[:1]:
        raise ValueError(f"t_expr must be (B,) = ({v_expr_pred.shape[0]},), got {tuple(t_expr.shape)}")
    if latent_first.shape != t_expr.shape or latent_first.dtype != torch.bool:
        got = f"{latent_first.dtype} {tuple(latent_first.shape)}"
        raise ValueError(f"latent_first must be a (B,) bool tensor, got {got}")


def cascade_loss(
    v_expr_pred: Tensor,
    v_expr_target: Tensor,
    v_latent_pred: Tensor | None,
    v_latent_target: Tensor | None,
    latent_first: Tensor,
    x_t: Tensor,
    t_expr: Tensor,
    x1: Tensor,
    latent_weight: float = 1.0,
    mmd_weight: float = 0.5,
    latent_mask: Tensor | None = None,
    groups: Tensor | None = None,
    residual_weight: float = 0.0,
    latent_residual_weight: float = 0.0,
) -> LossTerms:
    """The cascaded flow-matching loss of one batch.

    v_expr_pred, v_expr_target, x_t, x1: (B, G); t_expr: (B,); latent_first: (B,) bool;
    v_latent_pred, v_latent_target: (B, G, D), or both None for a model without a latent stream (then
    every sample trains expression); latent_mask: (B, G) bool, True where the scGPT latent is covered.
    Expression MSE averages over samples with ~latent_first, latent MSE over latent-first samples.
    groups: (B,) long, which perturbation each cell belongs to (None: all one perturbation). Per perturbation,
    MMD² compares the one-step estimates x̂1 = x_t + (1 − t)·v̂ of its expression samples with its target cells
    x1 (0 with < 2 expression samples), and `residual` is the squared mean of its predicted velocities over
    genes — with a prior source that mean is the learned residual over the prior, which the penalty keeps
    small unless the data pull it away. Both are averaged over perturbations. `latent_residual` is the same
    penalty on v_latent_pred over the latent-first samples (with a latent prior source: the learned residual over
    the additive latent), weighted by `latent_residual_weight` (v_latent_pred must then be velocities).
    """
    _check_shapes(v_expr_pred, v_expr_target, x_t, x1, t_expr, latent_first)
    if (v_latent_pred is None) != (v_latent_target is None):
        raise ValueError("v_latent_pred and v_latent_target must both be tensors or both be None")
    groups = groups_or_one(groups, t_expr)
    if v_latent_pred is None:
        trains_expr = torch.ones_like(latent_first, dtype=torch.bool)  # (B,)
        latent_mse = latent_residual = v_expr_pred.new_zeros((), dtype=torch.float32)
    else:
        if v_latent_pred.shape != v_latent_target.shape or v_latent_pred.shape[:2] != v_expr_pred.shape:
            raise ValueError(
                f"latent tensors must be (B, G, D) with (B, G) = {tuple(v_expr_pred.shape)}, "
                f"got {tuple(v_latent_pred.shape)} and {tuple(v_latent_target.shape)}"
            )
        trains_expr = ~latent_first  # (B,)
        latent_mse = _latent_mse(v_latent_pred, v_latent_target, latent_first, latent_mask)
        latent_residual = v_latent_pred.new_zeros((), dtype=torch.float32)
        if latent_residual_weight > 0:
            latent_residual = group_mean_square(v_latent_pred[latent_first], groups[latent_first])
    v_hat = v_expr_pred[trains_expr].float()  # (B_expr, G)
    expr_mse = _mean_or_zero((v_hat - v_expr_target[trains_expr].float()).pow(2), v_expr_pred)
    n_expr = int(trains_expr.sum())
    mmd, residual = _per_perturbation(v_hat, x_t[trains_expr].float(), t_expr[trains_expr].float(), x1.float(),
                                      groups[trains_expr], groups, residual_weight > 0)  # fmt: skip
    return LossTerms(
        total=expr_mse
        + latent_weight * latent_mse
        + mmd_weight * mmd
        + residual_weight * residual
        + latent_residual_weight * latent_residual,
        expr_mse=expr_mse,
        latent_mse=latent_mse,
        mmd=mmd,
        residual=residual,
        latent_residual=latent_residual,
        n_expr=n_expr,
        n_latent=v_expr_pred.shape[0] - n_expr,
    )
