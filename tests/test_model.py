"""The cascaded flow model: shapes, closed-form attention, graph masking, zero-init, latent use, round trips."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from modelkit import B, make_inputs, unzero_heads

from ccfm.config import MODEL_PRESETS, ModelConfig
from ccfm.errors import CCFMError
from ccfm.model import CascadedFlowModel, FlowOutputs, build_model, coexpression_graph
from ccfm.model.attention import DifferentialAttention, GraphMaskedAttention, SelfAttention, lambda_init
from ccfm.model.blocks import (
    AdaLNBlock,
    BackboneLayer,
    DifferentialPerceiverBlock,
    GeneModulation,
    PerturbationAdapter,
)
from ccfm.model.embeddings import (
    LatentEmbedder,
    PerturbationEmbedder,
    TimestepEmbedder,
    TokenFusion,
    ValueEncoder,
    timestep_features,
)
from ccfm.model.graph import GeneEncoder
from ccfm.model.heads import ExpressionHead, LatentHead

N_GENES, D, H = 60, 16, MODEL_PRESETS["tiny"].d_model
HEADS = MODEL_PRESETS["tiny"].heads


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def tiny_cfg(**overrides: object) -> ModelConfig:
    return ModelConfig(n_genes=N_GENES, latent_dim=D, **{**dataclasses.asdict(MODEL_PRESETS["tiny"]), **overrides})


def unzero_all(model: CascadedFlowModel) -> None:
    """Also open every zero-initialized modulation (adaLN-Zero and gene modulation), as training would."""
    unzero_heads(model)
    for name, module in model.named_modules():
        if name.endswith(("ada_ln.1", "modulation.1")):
            torch.nn.init.normal_(module.weight, std=0.1)


# --- shapes ------------------------------------------------------------------------------------------------


def test_embedder_shapes() -> None:
    t = torch.rand(B)
    assert timestep_features(t).shape == (B, 256)
    assert TimestepEmbedder(H)(t).shape == (B, H)
    values = torch.rand(B, 10)
    assert ValueEncoder(H, 512.0)(values).shape == (B, 10, H)
    assert TokenFusion(H)(torch.randn(B, 10, H), torch.randn(B, 10, H)).shape == (B, 10, H)
    table = torch.randn(N_GENES, H)
    pert = torch.tensor([[1, 2], [3, -1], [-1, -1]])
    assert PerturbationEmbedder(N_GENES, 0, H)(pert, table).shape == (B, H)
    assert LatentEmbedder(D, 8, H)(torch.randn(B, 10, D)).shape == (B, 10, H)
    assert GeneEncoder(N_GENES, H, HEADS)(torch.arange(10)).shape == (10, H)


def test_attention_and_block_shapes() -> None:
    x, control, c = torch.randn(B, 10, H), torch.randn(B, 10, H), torch.randn(B, H)
    gene_tokens = torch.randn(10, H)
    assert GraphMaskedAttention(H, HEADS)(gene_tokens, torch.eye(10, dtype=torch.bool)).shape == (10, H)
    assert SelfAttention(H, HEADS)(x).shape == (B, 10, H)
    assert DifferentialAttention(H, HEADS, depth=1)(x).shape == (B, 10, H)
    assert DifferentialAttention(H, HEADS, depth=1, second_stream=True)(x, control).shape == (B, 10, H)
    assert AdaLNBlock(H, SelfAttention(H, HEADS))(x, c).shape == (B, 10, H)
    assert GeneModulation(H)(x, gene_tokens).shape == (B, 10, H)
    assert PerturbationAdapter(H, 0.1)(x, c).shape == (B, 10, H)
    assert DifferentialPerceiverBlock(H, HEADS, depth=0)(x, control, c).shape == (B, 10, H)
    assert BackboneLayer(H, HEADS, 0, 0.1)(x, gene_tokens, control, c, c).shape == (B, 10, H)


def test_head_shapes() -> None:
    tokens, c = torch.randn(B, 10, H), torch.randn(B, H)
    assert ExpressionHead(H)(tokens, c).shape == (B, 10)
    assert LatentHead(H, HEADS, D, blocks=2)(tokens, c).shape == (B, 10, D)


def test_model_output_shapes() -> None:
    cfg = tiny_cfg()
    out = build_model(cfg)(make_inputs(cfg))
    assert isinstance(out, FlowOutputs)
    assert out.expr_velocity.shape == (B, N_GENES)
    assert out.latent_velocity is not None and out.latent_velocity.shape == (B, N_GENES, D)


# --- closed-form numbers -----------------------------------------------------------------------------------


def test_lambda_init_schedule() -> None:
    assert lambda_init(0) == pytest.approx(0.2)
    assert lambda_init(3) == pytest.approx(0.8 - 0.6 * np.exp(-0.9))


@pytest.mark.parametrize("second_stream", [False, True])
def test_differential_attention_matches_explicit_formula(second_stream: bool) -> None:
    attn = DifferentialAttention(H, HEADS, depth=2, second_stream=second_stream).eval()
    x, control = torch.randn(B, 7, H), torch.randn(B, 7, H)
    source = attn.second_norm(control) if second_stream else x
    h = attn.head_dim

    def heads(t: torch.Tensor) -> torch.Tensor:
        return t.view(B, 7, HEADS, -1).transpose(1, 2)

    map1 = torch.softmax(heads(attn.q1(x)) @ heads(attn.k1(x)).transpose(-1, -2) / h**0.5, dim=-1)
    map2 = torch.softmax(heads(attn.q2(source)) @ heads(attn.k2(source)).transpose(-1, -2) / h**0.5, dim=-1)
    lam = torch.exp(attn.lambda_q1 @ attn.lambda_k1) - torch.exp(attn.lambda_q2 @ attn.lambda_k2) + attn.lambda_init
    out = (map1 - lam * map2) @ heads(attn.v(x))
    out = F.rms_norm(out, (2 * h,), attn.head_norm.weight, eps=1e-5) * (1 - lambda_init(2))
    expected = attn.proj(out.transpose(1, 2).reshape(B, 7, H))
    got = attn(x, control) if second_stream else attn(x)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)


# --- co-expression graph -----------------------------------------------------------------------------------


# --- perturbation embedding --------------------------------------------------------------------------------


def test_perturbation_embedding_order_invariant_and_null() -> None:
    embedder = PerturbationEmbedder(N_GENES, 0, H)
    table = torch.randn(N_GENES, H)
    out = embedder(torch.tensor([[3, 8], [8, 3], [-1, 3], [3, -1], [-1, -1]]), table)
    torch.testing.assert_close(out[0], out[1])
    torch.testing.assert_close(out[2], out[3])
    assert not torch.allclose(out[0], out[2])
    torch.testing.assert_close(out[4], embedder.mlp(embedder.null_embedding))


def test_gene_perturbation_shares_the_gene_table() -> None:
    cfg = tiny_cfg()
    model = build_model(cfg)
    pert = torch.tensor([[4, -1]])
    before = model.pert_embedder(pert, model.gene_encoder.embedding.weight)
    with torch.no_grad():
        model.gene_encoder.embedding.weight[4] += torch.randn(H)
    assert not torch.allclose(model.pert_embedder(pert, model.gene_encoder.embedding.weight), before)


def test_drug_tokens() -> None:
    cfg = tiny_cfg(n_drugs=5)
    model = build_model(cfg).eval()
    unzero_heads(model)
    inputs = make_inputs(cfg)
    drugs = dataclasses.replace(inputs, pert=torch.tensor([[N_GENES, N_GENES + 4], [N_GENES + 2, -1], [-1, -1]]))
    swapped = dataclasses.replace(drugs, pert=torch.tensor([[N_GENES + 4, N_GENES], [-1, N_GENES + 2], [-1, -1]]))
    out = model(drugs)
    assert out.expr_velocity.shape == (B, N_GENES) and torch.isfinite(out.expr_velocity).all()
    torch.testing.assert_close(model(swapped).expr_velocity, out.expr_velocity)
    assert not torch.allclose(model(inputs).expr_velocity[:2], out.expr_velocity[:2])  # drug ≠ gene token
    table = model.gene_encoder.embedding.weight
    before = model.pert_embedder(drugs.pert, table)
    with torch.no_grad():
        model.pert_embedder.drug_embedding.weight[2] += torch.randn(H)
    after = model.pert_embedder(drugs.pert, table)
    assert not torch.allclose(after[1], before[1])
    torch.testing.assert_close(after[0], before[0])  # drug 2 is not in row 0
    with pytest.raises(IndexError):
        model.pert_embedder(torch.tensor([[N_GENES + 5, -1]]), table)


def test_drug_id_without_drug_table_raises() -> None:
    embedder = PerturbationEmbedder(N_GENES, 0, H)
    with pytest.raises(IndexError):
        embedder(torch.tensor([[N_GENES, -1]]), torch.randn(N_GENES, H))


# --- the model ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("latent", ["scgpt", "none"])
def test_fresh_model_predicts_zero_velocity(latent: str) -> None:
    cfg = tiny_cfg(latent=latent)
    out = build_model(cfg)(make_inputs(cfg))
    assert torch.count_nonzero(out.expr_velocity) == 0
    if latent == "scgpt":
        assert torch.count_nonzero(out.latent_velocity) == 0


def test_latent_stream_changes_both_predictions() -> None:
    cfg = tiny_cfg()
    model = build_model(cfg).eval()
    unzero_heads(model)
    inputs = make_inputs(cfg)
    other = dataclasses.replace(inputs, z_t=torch.randn_like(inputs.z_t))
    first, second = model(inputs), model(other)
    assert not torch.allclose(first.expr_velocity, second.expr_velocity)
    assert not torch.allclose(first.latent_velocity, second.latent_velocity)

    # The times reach the model only through c, i.e. through adaLN, which starts closed (as in DiT).
    later = dataclasses.replace(inputs, t_latent=torch.ones(B))
    torch.testing.assert_close(model(later).expr_velocity, first.expr_velocity, rtol=0, atol=0)
    unzero_all(model)
    assert not torch.allclose(model(later).expr_velocity, model(inputs).expr_velocity)


def test_latent_none_has_no_latent_parameters() -> None:
    cfg = tiny_cfg(latent="none")
    model = build_model(cfg)
    names = [name for name, _ in model.named_parameters()] + list(model.state_dict())
    assert not [name for name in names if "latent" in name]
    assert model(make_inputs(cfg)).latent_velocity is None
    full = sum(p.numel() for p in build_model(tiny_cfg()).parameters())
    assert sum(p.numel() for p in model.parameters()) < full


def test_random_gene_subset() -> None:
    cfg = tiny_cfg()
    model = build_model(cfg).eval()
    unzero_heads(model)
    genes = torch.randperm(N_GENES, generator=torch.Generator().manual_seed(0))[:17]
    out = model(make_inputs(cfg, genes=genes))
    assert out.expr_velocity.shape == (B, 17) and out.latent_velocity.shape == (B, 17, D)
    assert torch.isfinite(out.expr_velocity).all()


def test_eval_is_deterministic_and_train_uses_dropout() -> None:
    cfg = tiny_cfg(dropout=0.5)
    model = build_model(cfg)
    unzero_heads(model)
    inputs = make_inputs(cfg)
    model.eval()
    torch.testing.assert_close(model(inputs).expr_velocity, model(inputs).expr_velocity, rtol=0, atol=0)
    model.train()
    assert not torch.allclose(model(inputs).expr_velocity, model(inputs).expr_velocity)


def test_scalar_times_broadcast() -> None:
    cfg = tiny_cfg()
    model = build_model(cfg).eval()
    unzero_heads(model)
    inputs = make_inputs(cfg)
    per_cell = dataclasses.replace(inputs, t_expr=torch.full((B,), 0.3), t_latent=torch.full((B,), 1.0))
    shared = dataclasses.replace(inputs, t_expr=torch.tensor(0.3), t_latent=torch.tensor(1.0))
    torch.testing.assert_close(model(shared).expr_velocity, model(per_cell).expr_velocity)


def test_backward_reaches_the_backbone() -> None:
    cfg = tiny_cfg()
    model = build_model(cfg)
    unzero_all(model)
    model.set_prior_shifts(torch.randn(cfg.n_genes, cfg.n_genes))  # shift tokens read a non-zero table
    out = model(make_inputs(cfg))
    (out.expr_velocity.square().mean() + out.latent_velocity.square().mean()).backward()
    missing = [name for name, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert missing == [n for n, _ in model.named_parameters() if n.startswith("source.interaction.")]  # own loss


def test_bf16_autocast_runs_close_to_float32() -> None:
    cfg = tiny_cfg()
    model = build_model(cfg).eval()
    unzero_all(model)
    inputs = make_inputs(cfg)
    reference = model(inputs)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(inputs)
    (out.expr_velocity.float().square().mean() + out.latent_velocity.float().square().mean()).backward()
    scale = reference.expr_velocity.detach().abs().max().item()
    torch.testing.assert_close(out.expr_velocity.float(), reference.expr_velocity, rtol=0, atol=0.1 * scale)


# --- round trips and errors --------------------------------------------------------------------------------


def test_gene_graph_round_trips_through_state_dict() -> None:
    cfg = tiny_cfg()
    expression = np.random.default_rng(2).normal(size=(40, N_GENES))
    adjacency = coexpression_graph(expression, k=3)
    model = build_model(cfg).eval()
    assert torch.equal(model.gene_encoder.adjacency, torch.eye(N_GENES, dtype=torch.bool))  # default
    model.set_gene_graph(adjacency)
    unzero_heads(model)
    state = model.state_dict()
    assert torch.equal(state["gene_encoder.adjacency"], adjacency)
    restored = build_model(cfg).eval()
    restored.load_state_dict(state)
    assert torch.equal(restored.gene_encoder.adjacency, adjacency)
    inputs = make_inputs(cfg)
    torch.testing.assert_close(restored(inputs).expr_velocity, model(inputs).expr_velocity, rtol=0, atol=0)


def test_set_gene_graph_rejects_bad_graphs() -> None:
    model = build_model(tiny_cfg())
    with pytest.raises(CCFMError, match="expected"):
        model.set_gene_graph(torch.ones(N_GENES - 1, N_GENES - 1, dtype=torch.bool))
    with pytest.raises(CCFMError, match="self-loops"):
        model.set_gene_graph(torch.zeros(N_GENES, N_GENES, dtype=torch.bool))


def test_forward_rejects_mismatched_inputs() -> None:
    cfg = tiny_cfg()
    model = build_model(cfg)
    inputs = make_inputs(cfg)
    with pytest.raises(CCFMError, match="control"):
        model(dataclasses.replace(inputs, control=inputs.control[:, :5]))
    with pytest.raises(CCFMError, match="needs z_t"):
        model(dataclasses.replace(inputs, z_t=None))
    with pytest.raises(CCFMError, match="latent_width"):
        model(dataclasses.replace(inputs, z_t=inputs.z_t[..., :4]))
    with pytest.raises(CCFMError, match="latent='none'"):
        build_model(tiny_cfg(latent="none"))(inputs)
    with pytest.raises(CCFMError, match="divisible"):
        build_model(tiny_cfg(d_model=30))


def test_one_head_at_a_time_gives_the_same_velocity() -> None:
    cfg = tiny_cfg()
    model = build_model(cfg).eval()
    unzero_all(model)
    inputs = make_inputs(cfg)
    both = model(inputs)
    expr_only = model(dataclasses.replace(inputs, heads="expr"))
    latent_only = model(dataclasses.replace(inputs, heads="latent"))
    assert expr_only.latent_velocity is None and latent_only.expr_velocity is None
    torch.testing.assert_close(expr_only.expr_velocity, both.expr_velocity)
    torch.testing.assert_close(latent_only.latent_velocity, both.latent_velocity)


def test_ema_warm_up_follows_early_weights_then_reaches_the_decay() -> None:
    from ccfm.model.ema import EMA, warmed_decay

    assert warmed_decay(0.999, 0) == pytest.approx(0.1)
    assert warmed_decay(0.999, 90) == pytest.approx(91 / 100)
    assert warmed_decay(0.999, 100_000) == 0.999
    live = torch.nn.Linear(2, 1)
    ema = EMA(live, decay=0.999)
    with torch.no_grad():
        live.weight.fill_(1.0)
        ema.shadow.weight.zero_()
    for step in range(300):
        ema.update(live, step)
    # 300 updates at a plain 0.999 would keep 0.999^300 ≈ 74% of the initial 0 weight
    assert ema.shadow.weight.min().item() > 0.99
