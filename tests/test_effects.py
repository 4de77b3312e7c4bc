"""What lets the model learn perturbation effects: the target flag, the flow's source, batches that mix
perturbations, the per-perturbation MMD and the residual penalty. Closed forms where there are some."""

from __future__ import annotations

import dataclasses
import re
from types import SimpleNamespace

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from torch import Tensor

from ccfm.config import LEGACY_MODEL_FIELDS, MODEL_PRESETS, ModelConfig, SamplerConfig, TrainConfig
from ccfm.data.batches import BatchStream, TrainingCells
from ccfm.errors import CCFMError
from ccfm.flow.coupling import ot_pairing
from ccfm.flow.generation import generate_cells
from ccfm.flow.losses import cascade_loss, mmd2_unbiased
from ccfm.model import build_model
from ccfm.model.cascade import target_mask
from ccfm.model.source import FlowSource, fit_interaction
from pipeline.train_setup import prior_shifts, training_pseudobulk

G, T = 5, 7  # panel genes; perturbation tokens (5 panel genes + 2 outside the panel)


def test_target_mask_marks_exactly_the_perturbed_genes_tokens() -> None:
    genes = torch.tensor([0, 2, 4, 6])
    pert = torch.tensor([[2, -1], [4, 6], [-1, -1], [9, 0]])  # 9: a drug id (≥ n_genes) matches no gene
    expected = torch.tensor([[0, 1, 0, 0], [0, 0, 1, 1], [0, 0, 0, 0], [1, 0, 0, 0]], dtype=torch.bool)
    assert torch.equal(target_mask(genes, pert), expected)


def _source(kind: str, noise_std: float = 0.5) -> FlowSource:
    source = FlowSource(kind, noise_std, T, G)
    if kind == "prior":
        source.set_shifts(torch.arange(T * G, dtype=torch.float32).reshape(T, G))
    return source


def test_each_source_in_closed_form() -> None:
    control, noise = torch.rand(3, G), torch.randn(3, G)
    pert, genes = torch.tensor([[1, -1], [1, 3], [-1, -1]]), torch.arange(G)
    assert torch.equal(_source("noise")(control, pert, genes, noise), noise)
    torch.testing.assert_close(_source("control")(control, pert, genes, noise), control + 0.5 * noise)
    table = torch.arange(T * G, dtype=torch.float32).reshape(T, G)
    shift = torch.stack([table[1], table[1] + table[3], torch.zeros(G)])  # a double adds its singles' shifts
    torch.testing.assert_close(_source("prior")(control, pert, genes, noise), control + shift + 0.5 * noise)
    subset = torch.tensor([4, 0])  # a gene subset reads its own columns
    torch.testing.assert_close(
        _source("prior")(control[:, subset], pert, subset, noise[:, subset]),
        (control + shift + 0.5 * noise)[:, subset],
    )
    with pytest.raises(CCFMError, match="expected"):
        FlowSource("prior", 0.1, T, G).set_shifts(torch.zeros(T, G + 1))


def test_shared_shift_is_what_the_components_move_together() -> None:
    source = FlowSource("prior", 0.0, 3, 4)
    source.set_shifts(torch.tensor([[2.0, 1.0, 0.0, -4.0], [2.0, -4.0, 3.0, -1.0], [0.0, 0.0, 0.0, 0.0]]))
    pert, genes = torch.tensor([[0, 1], [1, 0], [0, -1], [-1, -1]]), torch.arange(4)
    shared = source.shared_shift(pert, genes)
    torch.testing.assert_close(shared[0], torch.tensor([2.0, -2.0, 0.0, 2.0]))  # signed √(a·b)
    torch.testing.assert_close(shared[1], shared[0])  # order-invariant
    assert torch.equal(shared[2:], torch.zeros(2, 4))  # one component, or none: nothing shared


def _shared_program_pairs(saturate: bool) -> tuple[FlowSource, Tensor, Tensor, Tensor]:
    """15 pairs of 6 tokens that all move genes 0-1 by 1 and one of genes 2-4 by 0.8 of their own; with `saturate`
    a pair moves genes 0-1 once (as one token does), else it adds. Returns (source, pairs, prior, missed)."""
    n_tokens, genes = 6, torch.arange(G)
    source = FlowSource("prior", 0.0, n_tokens, G, interaction=True)
    table = torch.zeros(n_tokens, G)
    table[:, :2] = 1.0
    table[torch.arange(n_tokens), 2 + torch.arange(n_tokens) % 3] = 0.8
    source.set_shifts(table)
    pairs = torch.tensor([[i, j] for i in range(n_tokens) for j in range(i + 1, n_tokens)])
    prior = source.prior_shift(pairs, genes)
    missed = torch.zeros_like(prior)
    if saturate:
        missed[:, :2] = -1.0
    return source, pairs, prior, missed


def test_interaction_head_fits_a_shared_program_rule_and_carries_it_to_unseen_pairs() -> None:
    torch.manual_seed(0)
    source, pairs, prior, missed = _shared_program_pairs(saturate=True)
    genes = torch.arange(G)
    shared = source.shared_shift(pairs, genes)
    assert torch.equal(source.prior_and_interaction(pairs, genes)[1], torch.zeros(len(pairs), G))  # fresh: prior
    fit = fit_interaction(source.interaction, prior[3:], shared[3:], missed[3:], genes, seed=0)  # 3 pairs unseen
    assert 0 < fit.steps and fit.cv_mse_fit < 0.1 * fit.cv_mse_prior
    r_hat = source.prior_and_interaction(pairs[:3], genes)[1]
    torch.testing.assert_close(r_hat[:, :2], torch.full((3, 2), -1.0), atol=0.1, rtol=0)
    singles = torch.tensor([[i, -1] for i in range(6)])
    assert torch.equal(source.prior_and_interaction(singles, genes)[1], torch.zeros(6, G))  # singles: exactly 0
    alone = source.shared_shift(pairs[:3], genes) == 0  # genes at most one component moves: exactly 0
    assert alone.any() and torch.equal(r_hat[alone], torch.zeros(int(alone.sum())))


def test_interaction_head_stays_the_prior_when_the_doubles_add() -> None:
    """Nothing to learn (and too few doubles): early stopping keeps the additive prior."""
    torch.manual_seed(0)
    source, pairs, prior, missed = _shared_program_pairs(saturate=False)
    genes = torch.arange(G)
    shared = source.shared_shift(pairs, genes)
    fit = fit_interaction(source.interaction, prior, shared, missed + 0.05 * torch.randn_like(missed), genes, seed=0)
    assert fit.steps == 0 and fit.cv_mse_fit == fit.cv_mse_prior
    assert torch.equal(source.prior_and_interaction(pairs, genes)[1], torch.zeros(len(pairs), G))
    few = fit_interaction(source.interaction, prior[:3], shared[:3], missed[:3], genes, seed=0)
    assert few.steps == 0 and few.doubles == 3


def test_a_fresh_model_samples_the_prior_exactly() -> None:
    """Zero-initialized heads predict zero velocity: with the prior source a fresh model returns
    clamp(control + Δa + Δb + σ·noise), the additive baseline plus the source noise."""
    torch.manual_seed(0)
    cfg = ModelConfig(
        n_genes=T, latent="none", source="prior", source_noise=0.2, **dataclasses.asdict(MODEL_PRESETS["tiny"])
    )
    model = build_model(cfg).eval()
    table = torch.cat([torch.randn(T, G), torch.zeros(T, T - G)], dim=1)  # 2 genes outside the panel
    model.set_prior_shifts(table)
    control, pert = torch.rand(4, G), torch.tensor([[1, 2], [3, -1], [0, 4], [2, -1]])
    sample = generate_cells(model, control, pert, torch.Generator().manual_seed(3), SamplerConfig("euler", 4, 4))
    noise = torch.randn(4, G, generator=torch.Generator().manual_seed(3))
    shift = torch.stack([table[[i for i in row.tolist() if i >= 0], :G].sum(0) for row in pert])
    torch.testing.assert_close(sample.expression, (control + shift + 0.2 * noise).clamp_min(0))


def test_prior_shifts_are_the_singles_deltas_and_the_mean_delta_elsewhere() -> None:
    rows = np.array([[1.0, 0, 0, 0, 0], [3.0, 0, 0, 0, 0], [0, 4.0, 0, 0, 0], [0, 0, 0, 2.0, 2.0], [0, 0, 0, 0, 0]])
    cells = TrainingCells(
        expression=sp.csr_matrix(rows),
        obs_names=np.array([f"c{i}" for i in range(5)]),
        by_condition={"A": np.array([1]), "B": np.array([2]), "A+C": np.array([3])},
        controls=np.array([0, 4]),
        tokens={"A": np.array([0, -1]), "B": np.array([1, -1]), "A+C": np.array([0, 2])},
    )
    setup = SimpleNamespace(cells=cells, model=SimpleNamespace(n_genes=6, n_drugs=0))  # 5 panel genes + 1 more
    table = prior_shifts(setup, training_pseudobulk(setup)).numpy()  # (6 tokens, 6 genes)
    control = rows[[0, 4]].mean(0)
    delta = {"A": rows[1] - control, "B": rows[2] - control, "A+C": rows[3] - control}
    mean = np.mean(list(delta.values()), axis=0)
    np.testing.assert_allclose(table[:, :5], np.stack([delta["A"], delta["B"], mean, mean, mean, mean]), rtol=1e-6)
    assert not table[:, 5].any()  # a gene outside the panel is never an expression token


def test_batches_mix_perturbations_in_equal_groups() -> None:
    n = 40
    cells = TrainingCells(
        expression=sp.csr_matrix(np.arange(n * G, dtype=np.float32).reshape(n, G)),
        obs_names=np.array([f"c{i}" for i in range(n)]),
        by_condition={f"P{i}": np.arange(5 * i, 5 * i + 5) for i in range(1, 8)},
        controls=np.arange(5),
        tokens={f"P{i}": np.array([i, -1]) for i in range(1, 8)},
    )
    stream = BatchStream(cells, None, batch_size=13, gene_subset=None, seed=0, steps=4, pert_cells=3)
    batch = stream[2]
    groups = batch.groups.numpy()
    assert sorted(np.bincount(groups).tolist()) == [3, 3, 3, 4]  # 13 // 3 = 4 perturbations
    labels = []
    for group in range(4):
        mine = groups == group
        pert = batch.pert[mine]
        assert (pert == pert[0]).all()  # one perturbation per group
        rows = batch.target[mine, 0].numpy() / G  # row index of each target cell
        assert set(rows.astype(int).tolist()) <= set(cells.by_condition[f"P{int(pert[0, 0])}"].tolist())
        labels.append(int(pert[0, 0]))
    assert len(set(labels)) == 4  # distinct perturbations
    assert torch.equal(stream[2].target, batch.target)  # a pure function of the step
    one = BatchStream(cells, None, batch_size=13, gene_subset=None, seed=0, steps=4, pert_cells=13)[2]
    assert (one.groups == 0).all() and (one.pert == one.pert[0]).all()


def test_mmd_and_residual_are_averaged_over_perturbations() -> None:
    torch.manual_seed(0)
    b = 8
    v_pred, v_target, x_t, x1 = (torch.randn(b, G) for _ in range(4))
    t = torch.rand(b)
    groups = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
    first = torch.zeros(b, dtype=torch.bool)
    terms = cascade_loss(v_pred, v_target, None, None, first, x_t, t, x1, mmd_weight=0.5, groups=groups,
                         residual_weight=2.0)  # fmt: skip
    x1_hat = x_t + (1 - t)[:, None] * v_pred
    mmd = torch.stack([mmd2_unbiased(x1_hat[groups == k], x1[groups == k]) for k in (0, 1)]).mean()
    residual = torch.stack([v_pred[groups == k].mean(0).pow(2).mean() for k in (0, 1)]).mean()
    torch.testing.assert_close(terms.mmd, mmd)
    torch.testing.assert_close(terms.residual, residual)
    torch.testing.assert_close(terms.total, terms.expr_mse + 0.5 * mmd + 2.0 * residual)
    alone = cascade_loss(v_pred, v_target, None, None, first, x_t, t, x1)  # no groups: one perturbation
    torch.testing.assert_close(alone.mmd, mmd2_unbiased(x1_hat, x1))
    assert float(alone.residual) == 0.0


def test_runs_written_before_a_model_field_existed_load_as_they_were_trained() -> None:
    new = dataclasses.asdict(ModelConfig(n_genes=4))
    old = {k: v for k, v in new.items() if k not in LEGACY_MODEL_FIELDS}
    assert dataclasses.asdict(ModelConfig.from_json(old)) == {**new, **LEGACY_MODEL_FIELDS}
    assert ModelConfig.from_json(new) == ModelConfig(n_genes=4)


def test_train_config_checks_the_new_knobs() -> None:
    base = {"data": "d.h5ad", "cache": "c.zarr", "out": "r"}
    for field, value, match in (
        ("source", "gaussian", "--source must be one of noise, control, prior"),
        ("source_noise", -0.1, "--source-noise must be a number in [0, 10]"),
        ("pert_cells", 1, "--pert-cells must be an integer ≥ 2"),
        ("residual_weight", float("nan"), "--residual-weight must be a number ≥ 0"),
    ):
        with pytest.raises(CCFMError, match=re.escape(match)):
            TrainConfig(**base).replace(**{field: value})


def test_ot_pairing_undoes_a_shuffle_within_each_perturbation() -> None:
    torch.manual_seed(0)
    x0 = torch.randn(9, G) * 5
    groups = torch.tensor([0, 0, 0, 1, 1, 1, 1, 2, 2])
    shuffle = torch.tensor([2, 0, 1, 6, 5, 3, 4, 8, 7])  # targets: the sources, permuted within groups
    x1 = x0[shuffle] + 0.01 * torch.randn(9, G)
    perm = ot_pairing(x0, x1, groups)
    torch.testing.assert_close(x1[perm], x0, atol=0.05, rtol=0)  # each source meets its own target
    assert torch.equal(groups[perm], groups)  # nobody changes perturbation
    assert torch.equal(ot_pairing(x0, x0, None), torch.arange(9))


def test_latent_residual_is_the_squared_mean_latent_velocity_of_each_perturbations_latent_first_samples() -> None:
    torch.manual_seed(0)
    b, k = 8, 3
    v_pred, v_target, x_t, x1 = (torch.randn(b, G) for _ in range(4))
    z_pred, z_target = torch.randn(b, G, k), torch.randn(b, G, k)
    t = torch.rand(b)
    groups = torch.tensor([0, 0, 1, 1, 0, 0, 1, 1])
    first = torch.tensor([True, True, True, False, False, False, True, False])
    args = (v_pred, v_target, z_pred, z_target, first, x_t, t, x1)
    terms = cascade_loss(*args, groups=groups, latent_residual_weight=3.0)
    latent = z_pred[first]
    want = torch.stack([latent[groups[first] == g].mean(0).pow(2).mean() for g in (0, 1)]).mean()
    torch.testing.assert_close(terms.latent_residual, want)
    torch.testing.assert_close(terms.total, terms.expr_mse + terms.latent_mse + 0.5 * terms.mmd + 3.0 * want)
    assert float(cascade_loss(*args, groups=groups).latent_residual) == 0.0
