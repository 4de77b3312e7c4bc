"""The co-expression graph and the graph-masked gene encoder."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ccfm.config import MODEL_PRESETS
from ccfm.errors import CCFMError
from ccfm.model import coexpression_graph
from ccfm.model.graph import GeneEncoder

N_GENES, H, HEADS = 60, MODEL_PRESETS["tiny"].d_model, MODEL_PRESETS["tiny"].heads


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def test_coexpression_graph_symmetric_self_loops_and_planted_pair() -> None:
    rng = np.random.default_rng(0)
    expression = rng.normal(size=(300, 12))
    expression[:, 7] = 2 * expression[:, 2] + 0.01 * rng.normal(size=300)  # planted pair (2, 7)
    expression[:, 9] = 1.5  # a constant gene
    adjacency = coexpression_graph(expression, k=1)
    assert adjacency.shape == (12, 12) and adjacency.dtype == torch.bool
    assert torch.equal(adjacency, adjacency.T)
    assert adjacency.diagonal().all()
    assert adjacency[2, 7] and adjacency[7, 2]
    assert adjacency[9].sum() == 1 and adjacency[:, 9].sum() == 1  # constant: self-loop only
    # k = 1, symmetrized: each non-constant gene has ≤ 1 own pick plus the genes that picked it.
    assert (adjacency.sum(dim=1) >= 2).sum() == 11
    assert torch.equal(adjacency, coexpression_graph(expression, k=1))


def test_coexpression_graph_k_zero_and_large_k() -> None:
    expression = np.random.default_rng(1).normal(size=(50, 6))
    assert torch.equal(coexpression_graph(expression, k=0), torch.eye(6, dtype=torch.bool))
    assert coexpression_graph(expression, k=100).all()


def test_coexpression_graph_rejects_bad_input() -> None:
    with pytest.raises(CCFMError, match="cells, genes"):
        coexpression_graph(np.zeros(5), k=2)
    with pytest.raises(CCFMError, match="≥ 0"):
        coexpression_graph(np.zeros((5, 3)), k=-1)
    with pytest.raises(CCFMError, match="NaN"):
        coexpression_graph(np.full((5, 3), np.nan), k=1)


def test_graph_mask_restricts_gene_attention() -> None:
    encoder = GeneEncoder(N_GENES, H, HEADS).eval()
    adjacency = torch.eye(N_GENES, dtype=torch.bool)
    adjacency[0, 1] = adjacency[1, 0] = True
    encoder.set_graph(adjacency)
    genes = torch.arange(10)
    before = encoder(genes)
    with torch.no_grad():
        # A random change: a constant shift would vanish in the LayerNorm.
        encoder.embedding.weight[5] += torch.randn(H)  # gene 5 is not a neighbour of gene 0
    after_far = encoder(genes)
    torch.testing.assert_close(after_far[0], before[0], rtol=0, atol=0)
    assert not torch.allclose(after_far[5], before[5])
    with torch.no_grad():
        encoder.embedding.weight[1] += torch.randn(H)  # gene 1 is
    assert not torch.allclose(encoder(genes)[0], before[0])


def test_gene_subset_uses_subgraph() -> None:
    encoder = GeneEncoder(N_GENES, H, HEADS).eval()
    adjacency = torch.eye(N_GENES, dtype=torch.bool)
    adjacency[10, 20] = adjacency[20, 10] = True
    encoder.set_graph(adjacency)
    subset = torch.tensor([20, 3, 10])
    full = encoder(torch.arange(N_GENES))
    torch.testing.assert_close(encoder(subset), full[subset], rtol=1e-5, atol=1e-6)
