"""The latent stream's code space and prior source (ccfm/model/latent_space.py), and the pretrained toy scGPT."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from clitools import ok, refused
from factories import REAL_GENES, tiny_gears_adata

from ccfm.errors import CCFMError
from ccfm.model.latent_space import GenePCA, LatentSpace
from ccfm.scgpt.checkpoint import build_scgpt_model, load_scgpt
from ccfm.scgpt.pretrain import MASK_VALUE, TokenSpec, masked_batch, pretrain
from ccfm.scgpt.toy import released_args

G, D, T = 5, 6, 4  # genes, features, tokens


def _space(k: int, source: str = "prior", noise: float = 0.5) -> LatentSpace:
    return LatentSpace(n_panel=G, n_tokens=T, d=D, k=k, source=source, noise_std=noise)


# --- shapes and closed-form numbers ---------------------------------------------------------------------------


def test_pca_with_all_components_round_trips_exactly() -> None:
    z = torch.randn(40, G, D, generator=torch.Generator().manual_seed(0))
    pca = GenePCA(G, D)
    pca.add(z[:25])
    pca.add(z[25:])  # streaming: two chunks give the moments of all cells
    mean, basis, explained = pca.fit(D)
    space = _space(D)
    space.set_pca(mean, basis)
    genes = torch.arange(G)
    assert torch.allclose(space.decode(space.encode(z, genes), genes), z, atol=1e-4)
    assert torch.allclose(mean, z.mean(0), atol=1e-5)
    assert torch.allclose(explained, torch.ones(G), atol=1e-5)


def test_pca_recovers_a_low_rank_latent_and_its_codes_carry_the_variance() -> None:
    gen = torch.Generator().manual_seed(1)
    directions = torch.linalg.qr(torch.randn(G, D, 2, generator=gen)).Q  # (G, D, 2) per-gene planes
    z = 3.0 + torch.einsum("ngk,gdk->ngd", torch.randn(200, G, 2, generator=gen), directions)
    pca = GenePCA(G, D)
    pca.add(z)
    mean, basis, explained = pca.fit(2)
    space = _space(2)
    space.set_pca(mean, basis)
    genes = torch.tensor([3, 1])  # a gene subset, as training with gene_subset hands it
    codes = space.encode(z[:, genes], genes)
    assert codes.shape == (200, 2, 2)
    assert torch.allclose(space.decode(codes, genes), z[:, genes], atol=1e-4)
    assert torch.all(explained > 0.999)


def test_prior_code_composes_the_components_shifts() -> None:
    space = _space(0)  # no PCA: codes are the features
    gen = torch.Generator().manual_seed(2)
    control = torch.randn(G, D, generator=gen)
    shift = torch.randn(T + 1, G, D, generator=gen)
    space.set_prior(control, shift, torch.arange(T) + 1)  # row 0 (the default) is no token's here
    genes = torch.arange(G)
    pert = torch.tensor([[1, -1], [1, 2], [-1, -1]])  # a single, a double, the control
    prior = space.prior_code(pert, genes)
    assert torch.allclose(prior[0], control + shift[2], atol=1e-6)
    assert torch.allclose(prior[1], control + shift[2] + shift[3], atol=1e-6)  # summed in another order
    assert torch.allclose(prior[2], control, atol=1e-6)
    noise = torch.randn(3, G, D, generator=gen)
    assert torch.allclose(space.source(pert, genes, noise), prior + 0.5 * noise, atol=1e-6)


def test_noise_source_is_the_noise_and_has_no_tables() -> None:
    space = _space(0, source="noise")
    noise = torch.randn(2, G, D)
    assert torch.equal(space.source(torch.tensor([[0, -1], [1, 2]]), torch.arange(G), noise), noise)
    assert space.shift.numel() == 0 and space.mean.numel() == 0


def test_tables_of_the_wrong_shape_are_refused() -> None:
    with pytest.raises(CCFMError, match="latent prior shift table has shape"):
        _space(0).set_prior(torch.zeros(G, D), torch.zeros(T, G + 1, D), torch.zeros(T, dtype=torch.long))
    with pytest.raises(CCFMError, match="token rows must index"):
        _space(0).set_prior(torch.zeros(G, D), torch.zeros(2, G, D), torch.full((T,), 2))
    with pytest.raises(CCFMError, match="latent_source must be one of"):
        _space(0, source="control")


# --- scGPT's masked-expression objective ----------------------------------------------------------------------


def _spec() -> TokenSpec:
    return TokenSpec(vocab_ids=np.arange(10, 10 + len(REAL_GENES)), cls_id=1, pad_id=0, pad_value=-2.0, n_bins=51)


def test_masked_batch_masks_only_expressed_genes_and_never_cls_or_pads() -> None:
    expression = np.zeros((3, len(REAL_GENES)), dtype=np.float32)
    expression[0, [1, 4, 9]] = [1.0, 2.0, 3.0]
    expression[1, :20] = np.arange(1, 21)
    batch = masked_batch(expression, _spec(), np.random.default_rng(0), ratio=0.5)
    assert batch.src.shape == (3, 21)  # <cls> + the longest cell's 20 genes
    assert torch.all(batch.src[:, 0] == 1) and not batch.masked[:, 0].any()
    assert torch.equal(batch.padding, batch.src == 0)
    assert not (batch.masked & batch.padding).any()
    assert torch.all(batch.values[batch.masked] == MASK_VALUE)
    kept = (batch.genes >= 0) & ~batch.masked  # unmasked genes keep their bins as inputs
    assert torch.equal(batch.values[kept], batch.target[kept]) and torch.all(batch.target[kept] >= 1)
    assert batch.masked[0].sum() >= 1 and batch.masked[2].sum() == 0  # a cell with no expressed gene: none
    assert batch.genes[0, 1:4].tolist() == [1, 4, 9]


def test_pretraining_beats_the_random_weights_on_held_out_cells() -> None:
    """Genes with distinct typical levels: a few dozen steps learn them (a random model predicts ~0)."""
    rng = np.random.default_rng(0)
    levels = np.linspace(0.5, 20, len(REAL_GENES))
    cells = rng.poisson(levels, size=(160, len(REAL_GENES))).astype(np.float32)
    vocab = {g: i for i, g in enumerate([*REAL_GENES, "<pad>", "<cls>", "<eoc>"])}
    args = {**released_args(), "embsize": 16, "d_hid": 16, "nlayers": 1, "nheads": 2}
    model = build_scgpt_model(args, vocab, seed=0)
    spec = TokenSpec(np.arange(len(REAL_GENES)), vocab["<cls>"], vocab["<pad>"], -2.0, 51)
    result = pretrain(model, cells[:128], cells[128:], spec, seconds=60.0, seed=0, lr=3e-3, max_steps=150)
    assert result.steps == 150
    assert result.before.model > result.before.constant  # random weights: worse than one mean bin
    assert result.after.model < 0.5 * result.before.model
    assert result.after.constant == pytest.approx(result.before.constant)  # references use the same masks


# --- the CLI ------------------------------------------------------------------------------------------------------


def test_toy_scgpt_pretrain_records_what_it_learned(tmp_path: Path) -> None:
    data = tmp_path / "data.h5ad"
    tiny_gears_adata(cells_per_condition=30, genes=REAL_GENES).write_h5ad(data)
    out = tmp_path / "toy"
    ok("toy-scgpt", "--out", out, "--pretrain", data, "--minutes", "0.05", "--d-model", "16", "--layers", "1",
       "--heads", "2")  # fmt: skip
    args = json.loads((out / "args.json").read_text())
    record = args["pretraining"]
    assert args["stand_in"] is True and "pretrained" in args["description"]
    assert record["data"] == str(data.resolve()) and record["cells"] + record["held_out_cells"] == 30
    assert record["steps"] > 0
    assert record["held_out_mse_pretrained"]["model"] < record["held_out_mse_random_weights"]["model"]
    assert load_scgpt(out).d_model == 16  # still the released layout: the strict loader takes it


def test_toy_scgpt_pretrain_refuses_a_bad_budget(tmp_path: Path) -> None:
    refused("toy-scgpt", "--out", tmp_path / "toy", "--minutes", "0", match="--minutes must be")


def test_a_model_without_pca_or_prior_saves_no_latent_space_tables() -> None:
    """Runs from before the latent space have none of its keys; such a model must load their state dicts."""
    from ccfm.config import ModelConfig
    from ccfm.model.cascade import build_model

    plain = build_model(ModelConfig(n_genes=12, latent_dim=D, d_model=16, heads=2, layers=1))
    assert not [key for key in plain.state_dict() if key.startswith("latent_space.")]
    fitted = build_model(ModelConfig(n_genes=12, latent_dim=D, d_model=16, heads=2, layers=1, latent_pca=2,
                                     latent_source="prior"))  # fmt: skip
    saved = {key for key in fitted.state_dict() if key.startswith("latent_space.")}
    assert saved == {f"latent_space.{name}" for name in ("mean", "basis", "control", "token_row", "shift")}
