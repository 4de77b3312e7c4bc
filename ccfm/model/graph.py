"""The co-expression graph over genes and the gene encoder that attends along it.

Shape legend: N cells, G genes, H hidden width.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from ccfm.errors import CCFMError
from ccfm.model.attention import GraphMaskedAttention

#: Cells per chunk when accumulating the gene × gene cross-products (bounds float64 copies of the data).
_CELL_CHUNK = 4096


def _pearson(expression: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """|Pearson| between every pair of genes, and which genes vary.

    expression: (N, G). Returns abs_corr (G, G) float64 with 0 wherever a gene is constant, varies (G,) bool.
    """
    n, g = expression.shape
    mean = expression.mean(axis=0, dtype=np.float64)  # (G,)
    cross = np.zeros((g, g), dtype=np.float64)  # (G, G)
    for start in range(0, n, _CELL_CHUNK):
        centered = np.asarray(expression[start : start + _CELL_CHUNK], dtype=np.float64) - mean  # (n, G)
        cross += centered.T @ centered  # (G, G)
    variance = np.diag(cross).copy()  # (G,)
    # Relative threshold: float rounding leaves tiny non-zero variance on constant genes.
    varies = variance > 1e-12 * max(float(variance.max(initial=0.0)), 1.0)
    std = np.sqrt(np.where(varies, variance, 1.0))  # (G,)
    abs_corr = np.abs(cross / std[:, None] / std[None, :])  # (G, G)
    abs_corr[~varies, :] = 0.0
    abs_corr[:, ~varies] = 0.0
    return abs_corr, varies


def coexpression_graph(expression: np.ndarray, k: int) -> torch.Tensor:
    """(G, G) bool adjacency from training cells' expression (N, G).

    Each gene is joined to its k partners of largest |Pearson| correlation (ties broken by gene order),
    the relation is symmetrized (an edge if either gene picked the other), and every gene has its
    self-loop. A constant gene has no defined correlation: it gets only its self-loop and no gene picks
    it. Deterministic. Pass training cells only — the graph must not see held-out cells.
    """
    expression = np.asarray(expression)
    if expression.ndim != 2 or expression.shape[0] < 2:
        raise CCFMError(
            f"coexpression_graph needs a (cells, genes) matrix with ≥ 2 cells; got shape {expression.shape}. "
            "Pass the training cells' log1p expression on the panel."
        )
    if k < 0:
        raise CCFMError(f"graph_k must be ≥ 0 neighbours per gene; got {k}.")
    if not np.isfinite(expression).all():
        raise CCFMError("coexpression_graph: expression holds NaN or Inf; clean the data before training.")
    g = expression.shape[1]
    abs_corr, varies = _pearson(expression)
    np.fill_diagonal(abs_corr, -1.0)  # never pick yourself as a neighbour
    abs_corr[:, ~varies] = -1.0
    # Stable sort: among equal |r|, the lower gene index wins, so the graph never depends on the platform.
    order = np.argsort(-abs_corr, axis=1, kind="stable")[:, :k]  # (G, k)
    picked = np.take_along_axis(abs_corr, order, axis=1) >= 0.0  # (G, k): drops excluded partners
    adjacency = np.zeros((g, g), dtype=bool)  # (G, G)
    rows = np.repeat(np.arange(g), order.shape[1]).reshape(order.shape)  # (G, k)
    adjacency[rows[picked], order[picked]] = True
    adjacency[~varies, :] = False
    adjacency |= adjacency.T
    np.fill_diagonal(adjacency, True)
    return torch.from_numpy(adjacency)


class GeneEncoder(nn.Module):
    """Gene ids → tokens: embedding table, LayerNorm, one graph-masked attention layer.

    Holds the (n_genes, n_genes) adjacency as a persistent buffer, self-loops only until a graph is set.
    The output depends on the gene ids only, so it is computed once per step, not per cell.
    """

    def __init__(self, n_genes: int, hidden: int, heads: int) -> None:
        super().__init__()
        self.embedding = nn.Embedding(n_genes, hidden)
        self.norm = nn.LayerNorm(hidden)
        self.attention = GraphMaskedAttention(hidden, heads)
        self.register_buffer("adjacency", torch.eye(n_genes, dtype=torch.bool))

    def set_graph(self, adjacency: Tensor) -> None:
        """adjacency: (n_genes, n_genes) bool, e.g. from `coexpression_graph`; must hold every self-loop."""
        expected = tuple(self.adjacency.shape)
        if tuple(adjacency.shape) != expected:
            raise CCFMError(
                f"gene graph has shape {tuple(adjacency.shape)}, expected {expected} (the model's gene "
                "vocabulary); build it with coexpression_graph on the same genes, in the same order."
            )
        adjacency = adjacency.to(device=self.adjacency.device, dtype=torch.bool)
        if not bool(adjacency.diagonal().all()):
            raise CCFMError(
                "gene graph lacks self-loops: a gene without neighbours could attend to nothing. "
                "Set the diagonal to True (coexpression_graph does)."
            )
        self.adjacency.copy_(adjacency)

    def forward(self, genes: Tensor) -> Tensor:
        """genes: (G,) long ids. Returns (G, H)."""
        mask = self.adjacency.index_select(0, genes).index_select(1, genes)  # (G, G)
        return self.attention(self.norm(self.embedding(genes)), mask)  # (G, H)
