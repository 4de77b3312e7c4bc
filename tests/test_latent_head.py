"""What the latent head predicts: the velocity, the clean latent (x-prediction), or its residual over the latent
prior — and the velocity the model returns for each."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from modelkit import make_inputs, unzero_heads

from ccfm.config import ModelConfig, ModelKnobs
from ccfm.errors import CCFMError
from ccfm.model import build_model


def test_clean_latent_target_returns_the_velocity_of_the_predicted_clean_latent() -> None:
    from ccfm.model.cascade import MIN_LATENT_GAP

    torch.manual_seed(0)
    cfg = ModelConfig(n_genes=12, latent_dim=6, d_model=16, heads=4, layers=1, latent_bottleneck=8)
    raw = build_model(cfg).eval()  # "velocity": the model returns its latent head's output as is
    with torch.no_grad():
        for p in raw.parameters():  # leave the zero-initialized state: a zero head would prove nothing
            p.add_(0.1 * torch.randn_like(p))
    clean = build_model(dataclasses.replace(cfg, latent_target="clean")).eval()
    clean.load_state_dict(raw.state_dict())
    inputs = make_inputs(cfg, genes=torch.arange(10), batch=3)
    inputs.t_latent = torch.tensor([0.0, 0.5, 1.0])
    head = raw(inputs).latent_velocity  # (B, G, D): read as the predicted clean latent
    gap = (1 - inputs.t_latent).clamp_min(MIN_LATENT_GAP)[:, None, None]
    torch.testing.assert_close(clean(inputs).latent_velocity, (head - inputs.z_t) / gap)
    with pytest.raises(CCFMError, match="latent.target"):
        build_model(ModelConfig(n_genes=4, latent_target="noise"))  # type: ignore[arg-type]


def test_residual_latent_target_adds_the_latent_prior_and_a_fresh_model_flows_to_it() -> None:
    torch.manual_seed(0)
    cfg = ModelConfig(
        n_genes=12, latent_dim=6, d_model=16, heads=4, layers=1, latent_bottleneck=8, latent_target="clean",
        latent_source="prior",
    )  # fmt: skip
    control, shift = torch.randn(12, 6), torch.randn(3, 12, 6)
    token_row = torch.randint(0, 3, (12,))
    clean = build_model(cfg).eval()
    clean.latent_space.set_prior(control, shift, token_row)
    residual = build_model(dataclasses.replace(cfg, latent_target="residual")).eval()
    residual.load_state_dict(clean.state_dict())
    inputs = make_inputs(cfg, genes=torch.arange(10), batch=3)
    inputs.t_latent = torch.zeros(3)
    prior = clean.latent_space.prior_code(inputs.pert, inputs.genes)  # (B, G, D)
    # Fresh (zero head): the clean model flows to the all-zero code, the residual one to the prior's mean.
    torch.testing.assert_close(clean(inputs).latent_velocity, -inputs.z_t)
    torch.testing.assert_close(residual(inputs).latent_velocity, prior - inputs.z_t)
    unzero_heads(clean)
    residual.load_state_dict(clean.state_dict())
    torch.testing.assert_close(residual(inputs).latent_velocity, clean(inputs).latent_velocity + prior)
    with pytest.raises(CCFMError, match="--latent-source prior"):
        ModelConfig(n_genes=4, latent_target="residual", latent_source="noise")


def test_latent_prior_tokens_read_the_prior_mean_code_apart_from_the_noisy_latent() -> None:
    torch.manual_seed(0)
    cfg = ModelConfig(
        n_genes=12, latent_dim=6, d_model=16, heads=4, layers=1, latent_bottleneck=8, latent_target="clean",
        latent_source="prior", latent_prior_tokens=True,
    )  # fmt: skip
    model = build_model(cfg).eval()
    unzero_heads(model)
    inputs = make_inputs(cfg, genes=torch.arange(10), batch=3)
    token_row = torch.randint(0, 3, (12,))
    model.latent_space.set_prior(torch.zeros(12, 6), torch.zeros(3, 12, 6), token_row)
    before = model(inputs).latent_velocity
    model.latent_space.set_prior(torch.zeros(12, 6), torch.randn(3, 12, 6), token_row)
    after = model(inputs).latent_velocity  # same z_t, another prior: the tokens saw it
    assert not torch.allclose(before[:2], after[:2])  # cells 0 and 1 are perturbed
    torch.testing.assert_close(before[2], after[2])  # cell 2 has no perturbation: the control code, unchanged
    with pytest.raises(CCFMError, match="--latent-source prior"):
        ModelConfig(n_genes=4, latent_prior_tokens=True, latent_source="noise")
    assert ModelKnobs().build(n_genes=4, n_drugs=0, latent_dim=8).latent_prior_tokens  # the default
    noise = ModelKnobs(latent_source="noise")  # the default tokens need the prior: left out, not refused
    assert not noise.build(n_genes=4, n_drugs=0, latent_dim=8).latent_prior_tokens
