"""ccfm.flow: path, cascaded times, losses and the two-stage sampler, tested against a recording fake model.

Shapes: B cells, G genes, D scGPT width.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
import torch
from torch import Tensor

from ccfm.config import CascadeTimeConfig, SamplerConfig
from ccfm.errors import CCFMError
from ccfm.flow import (
    NULL_PERTURBATION,
    cascade_loss,
    cascaded_time_sample,
    expression_only_time_sample,
    gaussian_noise,
    guided,
    label_dropout,
    linear_path,
    mmd2_unbiased,
    sample_cascade,
)

B, G, D = 6, 5, 3


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _clone(value: Tensor | None) -> Tensor | None:
    return None if value is None else value.clone()


@dataclass
class RecordingVelocity:
    """A fake model: constant velocities, and a copy of every call's inputs."""

    v_expr: float = 1.0
    v_latent: float = 2.0
    calls: list[tuple[Tensor, Tensor, Tensor | None, Tensor | None]] = field(default_factory=list)
    needs: list[str] = field(default_factory=list)

    def __call__(
        self, x: Tensor, t_expr: Tensor, z: Tensor | None, t_latent: Tensor | None, need: str
    ) -> tuple[Tensor, Tensor | None]:
        clone = lambda v: None if v is None else v.clone()  # noqa: E731
        self.calls.append((x.clone(), t_expr.clone(), clone(z), clone(t_latent)))
        self.needs.append(need)
        v_latent = None if z is None else torch.full_like(z, self.v_latent)
        return torch.full_like(x, self.v_expr), v_latent


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


# --- sampler ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["euler", "rk4"])
def test_constant_velocity_integrates_exactly(method: str) -> None:
    x0, z0 = torch.randn(B, G, generator=_gen(0)), torch.randn(B, G, D, generator=_gen(1))
    fake = RecordingVelocity(v_expr=1.5, v_latent=-2.0)
    cfg = SamplerConfig(method=method, steps=3, latent_steps=4, clamp_min=None)
    out = sample_cascade(fake, x0, z0, cfg)
    torch.testing.assert_close(out.expression, x0 + 1.5)
    torch.testing.assert_close(out.latent, z0 - 2.0)
    assert out.expression.shape == (B, G) and out.latent.shape == (B, G, D)
    evals = 4 if method == "rk4" else 1
    assert len(fake.calls) == evals * (3 + 4)
    assert fake.needs == ["latent"] * evals * 4 + ["expr"] * evals * 3  # each stage asks for its own head only


def test_rk4_integrates_a_time_dependent_field() -> None:
    # dx/dt = a + b·t + c·t² (exact for RK4's Simpson weights): x(1) = x0 + a + b/2 + c/3.
    def field(x: Tensor, t: Tensor, z: Tensor | None, tl: Tensor | None, need: str) -> tuple[Tensor, None]:
        tt = t[:, None].double()
        return (0.3 - 1.2 * tt + 0.9 * tt**2).expand_as(x).clone(), None

    x0 = torch.randn(B, G, generator=_gen(0), dtype=torch.float64)
    out = sample_cascade(field, x0, None, SamplerConfig(method="rk4", steps=5, clamp_min=None))
    torch.testing.assert_close(out.expression, x0 + 0.3 - 0.6 + 0.3, atol=1e-6, rtol=0)


def test_stages_see_what_training_showed() -> None:
    x0, z0 = torch.randn(B, G, generator=_gen(0)), torch.randn(B, G, D, generator=_gen(1))
    fake = RecordingVelocity()
    cfg = SamplerConfig(method="rk4", steps=2, latent_steps=3)
    out = sample_cascade(fake, x0, z0, cfg)
    stage1, stage2 = fake.calls[: 4 * 3], fake.calls[4 * 3 :]
    assert len(stage2) == 4 * 2
    for x, t_expr, _, t_latent in stage1:
        assert torch.equal(x, x0) and torch.all(t_expr == 0)
        assert t_latent.shape == (B,) and torch.all((t_latent >= 0) & (t_latent <= 1))
    assert stage1[0][3].eq(0).all() and torch.equal(stage1[0][2], z0)
    assert torch.equal(stage2[0][0], x0) and stage2[0][1].eq(0).all()
    for _, _, z, t_latent in stage2:
        assert torch.equal(z, out.latent) and torch.all(t_latent == 1)
    assert stage2[-1][1].eq(1).all()
    assert torch.equal(out.x0, x0) and torch.equal(out.z0, z0)


def test_one_stage_without_latent() -> None:
    x0 = torch.randn(B, G, generator=_gen(0))
    fake = RecordingVelocity(v_expr=0.5)
    out = sample_cascade(fake, x0, None, SamplerConfig(method="euler", steps=4))
    assert out.latent is None and out.z0 is None
    assert len(fake.calls) == 4
    assert all(z is None and tl is None for _, _, z, tl in fake.calls)
    torch.testing.assert_close(out.expression, (x0 + 0.5).clamp_min(0))


def test_clamp() -> None:
    x0 = torch.randn(B, G, generator=_gen(0))
    out = sample_cascade(RecordingVelocity(v_expr=-10.0), x0, None, SamplerConfig(steps=2, clamp_min=0.0))
    assert torch.all(out.expression == 0.0)
    shifted = sample_cascade(RecordingVelocity(v_expr=-10.0), x0, None, SamplerConfig(steps=2, clamp_min=-1.0))
    assert torch.all(shifted.expression == -1.0)


def test_guidance_scale_one_skips_uncond_and_other_scales_combine() -> None:
    x0, z0 = torch.randn(B, G, generator=_gen(0)), torch.randn(B, G, D, generator=_gen(1))
    cond, uncond = RecordingVelocity(v_expr=1.0, v_latent=1.0), RecordingVelocity(v_expr=3.0, v_latent=0.0)
    cfg = SamplerConfig(method="euler", steps=2, latent_steps=2, clamp_min=None)
    sample_cascade(cond, x0, z0, cfg, velocity_fn_uncond=uncond)
    assert len(uncond.calls) == 0

    guided_cfg = SamplerConfig(
        method="euler", steps=2, latent_steps=2, clamp_min=None, guidance_expr=2.0, guidance_latent=3.0
    )
    out = sample_cascade(cond, x0, z0, guided_cfg, velocity_fn_uncond=uncond)
    assert len(uncond.calls) == 4
    torch.testing.assert_close(out.latent, z0 + 0.0 + 3.0 * (1.0 - 0.0))
    torch.testing.assert_close(out.expression, x0 + 3.0 + 2.0 * (1.0 - 3.0))
    torch.testing.assert_close(guided(torch.tensor(1.0), torch.tensor(3.0), 2.0), torch.tensor(-1.0))


def test_guidance_without_uncond_is_refused() -> None:
    with pytest.raises(CCFMError, match="velocity_fn_uncond"):
        sample_cascade(RecordingVelocity(), torch.zeros(B, G), None, SamplerConfig(guidance_expr=2.0))


def test_sampler_config_refuses_unknown_method() -> None:
    with pytest.raises(CCFMError, match="rk4"):
        SamplerConfig(method="dopri5")  # type: ignore[arg-type]


def test_same_seed_same_sample() -> None:
    torch.manual_seed(0)
    net = torch.nn.Linear(G, G)

    def velocity(x: Tensor, t: Tensor, z: Tensor | None, tl: Tensor | None, need: str) -> tuple[Tensor, Tensor | None]:
        v_latent = None if z is None else torch.tanh(z) * tl[:, None, None]
        return net(x) * (1 - t[:, None]), v_latent

    def draw(seed: int):
        g = _gen(seed)
        x0, z0 = gaussian_noise((B, G), g, "cpu"), gaussian_noise((B, G, D), g, "cpu")
        return sample_cascade(velocity, x0, z0, SamplerConfig(steps=3, latent_steps=3))

    a, b, c = draw(1), draw(1), draw(2)
    assert torch.equal(a.expression, b.expression) and torch.equal(a.latent, b.latent)
    assert not torch.equal(a.expression, c.expression)
    assert not a.expression.requires_grad  # sampled under no_grad


def test_label_dropout() -> None:
    pert = torch.tensor([[3, 4]] * 2000)
    dropped = label_dropout(pert, 0.25, _gen(0))
    is_null = dropped == NULL_PERTURBATION
    assert torch.equal(is_null[:, 0], is_null[:, 1])  # all slots of a sample, or none
    assert abs(is_null[:, 0].float().mean().item() - 0.25) < 0.03
    assert torch.equal(dropped[~is_null[:, 0]], pert[~is_null[:, 0]])
    assert torch.equal(dropped, label_dropout(pert, 0.25, _gen(0)))
    assert torch.equal(label_dropout(pert, 0.0, _gen(0)), pert)


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
