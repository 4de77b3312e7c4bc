"""ccfm.flow: the linear path, cascaded times and the losses (the sampler: tests/test_sampling.py).

Shapes: B cells, G genes, D scGPT width.
"""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from ccfm.config import CascadeTimeConfig
from ccfm.errors import CCFMError
from ccfm.flow import (
    cascade_loss,
    cascaded_time_sample,
    expression_only_time_sample,
    gaussian_noise,
    linear_path,
    mmd2_unbiased,
)

B, G, D = 6, 5, 3


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# --- path -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(B, G), (B, G, D)])
def test_linear_path_endpoints_and_velocity(shape: tuple[int, ...]) -> None:
    x0, x1 = torch.randn(shape, generator=_gen(0)), torch.randn(shape, generator=_gen(1))
    at0 = linear_path(x0, x1, torch.zeros(B))
    at1 = linear_path(x0, x1, torch.ones(B))
    assert torch.equal(at0.x_t, x0) and torch.equal(at1.x_t, x1)
    assert torch.equal(at0.velocity, x1 - x0)
    t = torch.linspace(0, 1, B)
    mid = linear_path(x0, x1, t)
    assert mid.x_t.shape == shape
    expected = x0[2] + t[2] * (x1[2] - x0[2])
    torch.testing.assert_close(mid.x_t[2], expected)


def test_linear_path_rejects_bad_time_shape() -> None:
    with pytest.raises(ValueError, match=r"t must have shape \(B,\)"):
        linear_path(torch.zeros(B, G), torch.zeros(B, G), torch.zeros(B, 1))


def test_gaussian_noise_is_seeded() -> None:
    a = gaussian_noise((B, G, D), _gen(7), "cpu")
    assert a.shape == (B, G, D)
    assert torch.equal(a, gaussian_noise((B, G, D), _gen(7), "cpu"))
    assert not torch.equal(a, gaussian_noise((B, G, D), _gen(8), "cpu"))


# --- time sampling ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("t_dist", ["uniform", "logit_normal"])
def test_cascaded_times_clean(t_dist: str) -> None:
    times = cascaded_time_sample(4000, CascadeTimeConfig(t_dist=t_dist), _gen(), "cpu")
    lf = times.latent_first
    assert times.t_expr.shape == times.t_latent.shape == lf.shape == (4000,)
    assert lf.dtype == torch.bool
    assert torch.all(times.t_expr[lf] == 0.0)
    assert torch.all(times.t_latent[~lf] == 1.0)
    trained = torch.cat([times.t_latent[lf], times.t_expr[~lf]])
    assert torch.all((trained >= 0) & (trained < 1))
    if t_dist == "logit_normal":
        assert torch.all(trained > 0)
        assert abs(trained.mean().item() - 0.5) < 0.02  # sigmoid(N(0, 1)) is symmetric about 1/2
        assert trained.std() < 0.25  # narrower than U(0, 1)'s 0.289


def test_cascaded_times_late_and_fraction() -> None:
    cfg = CascadeTimeConfig(latent_first_prob=0.3, t_latent_for_expr="late")
    times = cascaded_time_sample(20000, cfg, _gen(), "cpu")
    lf = times.latent_first
    assert abs(lf.float().mean().item() - 0.3) < 0.015
    late = times.t_latent[~lf]
    assert torch.all((late >= 0.75) & (late <= 1.0))
    assert late.std() > 0.05  # really drawn, not a constant
    assert torch.all(times.t_expr[lf] == 0.0)


def test_cascaded_times_are_seeded() -> None:
    cfg = CascadeTimeConfig(t_latent_for_expr="late", t_dist="logit_normal")
    a = cascaded_time_sample(64, cfg, _gen(3), "cpu")
    b = cascaded_time_sample(64, cfg, _gen(3), "cpu")
    c = cascaded_time_sample(64, cfg, _gen(4), "cpu")
    assert torch.equal(a.t_expr, b.t_expr) and torch.equal(a.t_latent, b.t_latent)
    assert torch.equal(a.latent_first, b.latent_first)
    assert not torch.equal(a.t_latent, c.t_latent)


def test_expression_only_times() -> None:
    times = expression_only_time_sample(500, CascadeTimeConfig(latent_first_prob=0.9), _gen(), "cpu")
    assert times.t_latent is None
    assert not times.latent_first.any()
    assert torch.all((times.t_expr >= 0) & (times.t_expr < 1)) and times.t_expr.std() > 0.2


def test_time_config_refuses_bad_values() -> None:
    with pytest.raises(CCFMError, match="latent.first.prob"):
        CascadeTimeConfig(latent_first_prob=1.5)
    with pytest.raises(CCFMError, match="clean"):
        CascadeTimeConfig(t_latent_for_expr="early")  # type: ignore[arg-type]


# --- losses -----------------------------------------------------------------------------------------------


def _loss_batch(latent_first: Tensor) -> dict[str, Tensor]:
    g = _gen(11)
    n = latent_first.shape[0]
    return {
        "v_expr_pred": torch.randn(n, G, generator=g),
        "v_expr_target": torch.randn(n, G, generator=g),
        "v_latent_pred": torch.randn(n, G, D, generator=g),
        "v_latent_target": torch.randn(n, G, D, generator=g),
        "latent_first": latent_first,
        "x_t": torch.randn(n, G, generator=g),
        "t_expr": torch.where(latent_first, 0.0, torch.rand(n, generator=g)),
        "x1": torch.randn(n, G, generator=g),
    }


LATENT_FIRST = torch.tensor([True, False, False, True, False, False])


def test_loss_streams_are_separate() -> None:
    batch = _loss_batch(LATENT_FIRST)
    base = cascade_loss(**batch)
    assert (base.n_expr, base.n_latent) == (4, 2)
    rows = LATENT_FIRST
    expected_expr = (batch["v_expr_pred"][~rows] - batch["v_expr_target"][~rows]).pow(2).mean()
    expected_latent = (batch["v_latent_pred"][rows] - batch["v_latent_target"][rows]).pow(2).mean()
    torch.testing.assert_close(base.expr_mse, expected_expr)
    torch.testing.assert_close(base.latent_mse, expected_latent)
    torch.testing.assert_close(base.total, base.expr_mse + base.latent_mse + 0.5 * base.mmd)

    garbage_expr = dict(batch, v_expr_pred=batch["v_expr_pred"].clone())
    garbage_expr["v_expr_pred"][rows] = 1e6
    terms = cascade_loss(**garbage_expr)
    assert torch.equal(terms.expr_mse, base.expr_mse) and torch.equal(terms.mmd, base.mmd)

    garbage_latent = dict(batch, v_latent_pred=batch["v_latent_pred"].clone())
    garbage_latent["v_latent_pred"][~rows] = 1e6
    assert torch.equal(cascade_loss(**garbage_latent).latent_mse, base.latent_mse)


def test_loss_gradients_reach_only_the_trained_stream() -> None:
    batch = _loss_batch(LATENT_FIRST)
    batch["v_expr_pred"].requires_grad_(True)
    batch["v_latent_pred"].requires_grad_(True)
    cascade_loss(**batch).total.backward()
    assert torch.all(batch["v_expr_pred"].grad[LATENT_FIRST] == 0)
    assert torch.all(batch["v_expr_pred"].grad[~LATENT_FIRST].abs().sum(1) > 0)
    assert torch.all(batch["v_latent_pred"].grad[~LATENT_FIRST] == 0)
    assert torch.all(batch["v_latent_pred"].grad[LATENT_FIRST].abs().sum((1, 2)) > 0)


@pytest.mark.parametrize("all_latent_first", [False, True])
def test_loss_with_an_empty_stream_is_zero_not_nan(all_latent_first: bool) -> None:
    batch = _loss_batch(torch.full((B,), all_latent_first))
    batch["v_expr_pred"].requires_grad_(True)
    batch["v_latent_pred"].requires_grad_(True)
    terms = cascade_loss(**batch)
    empty = terms.expr_mse if all_latent_first else terms.latent_mse
    assert empty.item() == 0.0
    assert torch.isfinite(terms.total)
    if all_latent_first:
        assert terms.mmd.item() == 0.0 and terms.n_expr == 0
    terms.total.backward()  # both predictions stay in the graph (zero gradients), as DDP needs
    assert batch["v_expr_pred"].grad is not None and batch["v_latent_pred"].grad is not None


def test_loss_without_latent_trains_every_sample_on_expression() -> None:
    batch = _loss_batch(LATENT_FIRST)
    batch.update(v_latent_pred=None, v_latent_target=None)
    terms = cascade_loss(**batch, mmd_weight=0.0)
    assert (terms.n_expr, terms.n_latent) == (B, 0)
    assert terms.latent_mse.item() == 0.0
    expected = (batch["v_expr_pred"] - batch["v_expr_target"]).pow(2).mean()
    torch.testing.assert_close(terms.total, expected)


def test_latent_mask_restricts_latent_mse_to_covered_positions() -> None:
    batch = _loss_batch(LATENT_FIRST)
    mask = torch.rand(B, G, generator=_gen(5)) < 0.5
    mask[LATENT_FIRST, 0] = True
    masked = cascade_loss(**batch, latent_mask=mask)
    keep = LATENT_FIRST[:, None] & mask
    expected = (batch["v_latent_pred"][keep] - batch["v_latent_target"][keep]).pow(2).mean()
    torch.testing.assert_close(masked.latent_mse, expected)
    batch["v_latent_pred"][~mask] = 1e6  # uncovered positions no longer matter
    torch.testing.assert_close(cascade_loss(**batch, latent_mask=mask).latent_mse, expected)


def test_mmd_uses_one_step_estimates() -> None:
    batch = _loss_batch(torch.zeros(B, dtype=torch.bool))
    t = batch["t_expr"][:, None]
    # A velocity that lands every one-step estimate exactly on its own target: x_t + (1 - t)·v = x1.
    batch["v_expr_pred"] = (batch["x1"] - batch["x_t"]) / (1 - t)
    terms = cascade_loss(**batch)
    torch.testing.assert_close(terms.mmd, mmd2_unbiased(batch["x1"], batch["x1"]))


def test_mmd_identical_sets_near_zero_and_shifted_sets_positive() -> None:
    x = torch.randn(64, 20, generator=_gen(1))
    y = torch.randn(64, 20, generator=_gen(2))
    assert abs(mmd2_unbiased(x, x).item()) < 0.05
    assert abs(mmd2_unbiased(x, y).item()) < 0.05  # same distribution: unbiased estimate near 0
    shifted = mmd2_unbiased(x + 2.0, y).item()
    assert shifted > 0.5


def test_mmd_closed_form_on_two_points() -> None:
    # y = {0, 1} on a line: median squared distance 1, so with scales (1,) k(a, b) = exp(-(a - b)² / 2).
    x = torch.tensor([[0.0], [3.0]])
    y = torch.tensor([[0.0], [1.0]])

    def k(d2: float) -> Tensor:
        return torch.exp(torch.tensor(-d2 / 2))

    expected = k(9.0) + k(1.0) - 2 * (k(0.0) + k(1.0) + k(9.0) + k(4.0)) / 4
    torch.testing.assert_close(mmd2_unbiased(x, y, scales=(1.0,)), expected)


def test_mmd_unbiased_in_expectation() -> None:
    g = _gen(9)
    estimates = [mmd2_unbiased(torch.randn(8, 4, generator=g), torch.randn(8, 4, generator=g)) for _ in range(400)]
    mean = torch.stack(estimates).mean().item()
    assert abs(mean) < 0.01  # a biased (V-statistic) estimate would sit clearly above 0


def test_the_clean_latent_loss_is_the_velocity_loss_weighted_by_the_squared_gap() -> None:
    """latent_loss "clean" compares ẑ1 = z_t + (1 − t)·v̂ with z1: the velocity MSE weighted by (1 − t)²."""
    import dataclasses

    from ccfm.config import ModelConfig, ObjectiveConfig
    from ccfm.flow.objective import StepInputs, cascade_objective
    from ccfm.model.cascade import build_model

    torch.manual_seed(0)
    model = build_model(ModelConfig(n_genes=6, latent_dim=4, d_model=8, heads=2, layers=1, latent_bottleneck=4,
                                    latent_target="clean", source="control", shift_tokens=False))  # fmt: skip
    for p in model.parameters():  # a fresh head predicts 0 everywhere; give it something to be wrong with
        p.data.add_(0.1 * torch.randn_like(p))
    batch = StepInputs(torch.rand(8, 6), torch.rand(8, 6), torch.arange(6), torch.randint(0, 6, (8, 2)),
                       torch.randn(8, 6, 4))  # fmt: skip
    times = CascadeTimeConfig(latent_first_prob=1.0)  # every sample trains the latent
    velocity = ObjectiveConfig(times=times, mmd_weight=0.0, residual_weight=0.0)
    clean = dataclasses.replace(velocity, latent_loss="clean")
    v_terms = cascade_objective(model, batch, velocity, torch.Generator().manual_seed(3))
    x_terms = cascade_objective(model, batch, clean, torch.Generator().manual_seed(3))
    assert 0 < x_terms.latent_mse < v_terms.latent_mse  # (1 − t)² ≤ 1 shrinks every sample's error
