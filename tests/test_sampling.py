"""ccfm.flow's two-stage sampler, tested against a recording fake model: what each stage sees, solvers, clamp,
guidance, seeds, label dropout.

Shapes: B cells, G genes, D scGPT width.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
import torch
from torch import Tensor

from ccfm.config import SamplerConfig
from ccfm.errors import CCFMError
from ccfm.flow import NULL_PERTURBATION, gaussian_noise, guided, label_dropout, sample_cascade

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
        self.calls.append((x.clone(), t_expr.clone(), _clone(z), _clone(t_latent)))
        self.needs.append(need)
        v_latent = None if z is None else torch.full_like(z, self.v_latent)
        return torch.full_like(x, self.v_expr), v_latent


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
