"""The cascaded flow model: an scDFM backbone on expression, guided by a flowing scGPT latent.

With `latent == "scgpt"` the model reads a noisy latent z_t (added to the expression tokens) and its time
(added to the conditioning vector), and predicts both velocities. With `latent_target == "clean"` the latent
head predicts the clean latent ẑ1 instead and the model returns the velocity (ẑ1 − z_t) / (1 − t): a network
of width H then outputs the structured latent rather than D dimensions of noise (x-prediction, as in JiT).
With `latent_target == "residual"` (latent prior source only) the head predicts ẑ1 minus the latent prior's
mean (the control code plus the components' code shifts): a fresh model generates the additive latent, and
training learns what a perturbation's latent is beyond it — the latent twin of the expression stream, which
starts at the additive prior at zero velocity.
With `latent == "none"` it has no latent parameters at all and is the scDFM-equivalent ablation built from
the same code.

Shape legend: B cells, G genes, D scGPT width, H hidden width, P perturbation slots.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from ccfm.config import ModelConfig
from ccfm.errors import CCFMError
from ccfm.model.blocks import BackboneLayer
from ccfm.model.embeddings import (
    LatentEmbedder,
    PerturbationEmbedder,
    TimestepEmbedder,
    TokenFusion,
    ValueEncoder,
)
from ccfm.model.graph import GeneEncoder
from ccfm.model.heads import ExpressionHead, LatentHead
from ccfm.model.latent_space import LatentSpace
from ccfm.model.source import FlowSource


@dataclass
class FlowInputs:
    """One batch as the model sees it. Times may also be 0-d tensors, shared by the whole batch."""

    x_t: Tensor  # (B, G) noisy expression state
    control: Tensor  # (B, G) paired control cells' expression (log1p)
    genes: Tensor  # (G,) long ids into the gene vocabulary (a gene subset is allowed)
    pert: Tensor  # (B, P) long: [0, n_genes) gene, [n_genes, n_genes + n_drugs) drug, -1 empty slot
    t_expr: Tensor  # (B,) expression time in [0, 1]
    z_t: Tensor | None = None  # (B, G, D) noisy latent state (None when cfg.latent == "none")
    t_latent: Tensor | None = None  # (B,) latent time (None when cfg.latent == "none")
    heads: Literal["both", "expr", "latent"] = "both"  # sampling needs one stream per stage: skip the other


@dataclass
class FlowOutputs:
    """Predicted velocities; a head that was not asked for returns None."""

    expr_velocity: Tensor | None  # (B, G)
    latent_velocity: Tensor | None  # (B, G, D); None when cfg.latent == "none"


def _expect_shape(name: str, tensor: Tensor, shape: tuple[int, ...], meaning: str) -> None:
    if tuple(tensor.shape) != shape:
        raise CCFMError(f"FlowInputs.{name} has shape {tuple(tensor.shape)}, expected {shape} ({meaning}).")


def _batch_time(name: str, t: Tensor, batch: int) -> Tensor:
    """A (B,) time from a (B,) or 0-d tensor."""
    if t.ndim == 0:
        return t.expand(batch)  # (B,)
    _expect_shape(name, t, (batch,), "one time per cell, B")
    return t


def _check_inputs(cfg: ModelConfig, inputs: FlowInputs) -> None:
    """Shape and presence checks; values are not inspected (that would synchronize a GPU every step)."""
    if inputs.genes.ndim != 1 or inputs.genes.dtype != torch.long:
        raise CCFMError(
            f"FlowInputs.genes must be a 1-D long tensor of gene ids; got {inputs.genes.dtype} "
            f"of shape {tuple(inputs.genes.shape)}."
        )
    if inputs.x_t.ndim != 2:
        raise CCFMError(f"FlowInputs.x_t must be (B, G); got shape {tuple(inputs.x_t.shape)}.")
    b, g = inputs.x_t.shape
    _expect_shape("x_t", inputs.x_t, (b, len(inputs.genes)), "B cells × the G genes in `genes`")
    _expect_shape("control", inputs.control, (b, g), "one control cell per noisy cell, same genes")
    if inputs.pert.ndim != 2 or inputs.pert.shape[0] != b or inputs.pert.dtype != torch.long:
        raise CCFMError(
            f"FlowInputs.pert must be a (B={b}, P) long tensor of perturbation tokens; got "
            f"{inputs.pert.dtype} of shape {tuple(inputs.pert.shape)}."
        )
    if cfg.latent == "none":
        if inputs.z_t is not None or inputs.t_latent is not None:
            raise CCFMError(
                "this model was built with latent='none' (no latent stream); pass z_t=None and "
                "t_latent=None, or build the model with latent='scgpt'."
            )
        return
    if inputs.z_t is None or inputs.t_latent is None:
        raise CCFMError(
            "this model was built with latent='scgpt': FlowInputs needs z_t (B, G, K) and "
            "t_latent (B,); build with latent='none' for the ablation without a latent."
        )
    _expect_shape("z_t", inputs.z_t, (b, g, cfg.latent_width), "B × G × K, K = cfg.latent_width (PCA codes or D)")


def target_mask(genes: Tensor, pert: Tensor) -> Tensor:
    """(B, G) bool: True where token g of cell b is one of the genes its perturbation targets.

    genes: (G,) gene ids; pert: (B, P) tokens (drug ids ≥ n_genes and empty slots −1 match no gene)."""
    return (genes[None, :, None] == pert[:, None, :]).any(dim=-1)  # (B, G)


#: latent_target "clean": 1 − t is clamped at this when a predicted clean latent becomes a velocity (JiT's 0.05).
MIN_LATENT_GAP = 0.05


class CascadedFlowModel(nn.Module):
    """Predicts expression velocity and (with a latent stream) scGPT-latent velocity."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        if cfg.n_genes < 1 or cfg.n_drugs < 0:
            raise CCFMError(f"ModelConfig needs n_genes ≥ 1 and n_drugs ≥ 0; got {cfg.n_genes}, {cfg.n_drugs}.")
        self.cfg = cfg
        hidden = cfg.d_model
        self.gene_encoder = GeneEncoder(cfg.n_genes, hidden, cfg.heads)
        self.state_encoder = ValueEncoder(hidden, cfg.value_clamp)
        self.control_encoder = ValueEncoder(hidden, cfg.value_clamp)
        self.fusion = TokenFusion(hidden)
        self.pert_embedder = PerturbationEmbedder(cfg.n_genes, cfg.n_drugs, hidden)
        self.source = FlowSource(
            cfg.source,
            cfg.source_noise,
            cfg.n_genes + cfg.n_drugs,
            cfg.n_genes,
            with_table=cfg.shift_tokens,
            interaction=cfg.interaction_head,
        )
        if cfg.shift_tokens:  # the expected change of each gene under the perturbation, as a token feature
            self.shift_encoder = ValueEncoder(hidden, cfg.value_clamp)
        if cfg.target_flag:  # added to the tokens of the perturbed genes themselves
            self.target_embedding = nn.Parameter(torch.randn(hidden))
        self.t_expr_embedder = TimestepEmbedder(hidden, scale=cfg.time_scale)
        self.layers = nn.ModuleList(
            [BackboneLayer(hidden, cfg.heads, depth, cfg.dropout) for depth in range(cfg.layers)]
        )
        self.expr_head = ExpressionHead(hidden)
        if cfg.latent == "scgpt":
            self.t_latent_embedder = TimestepEmbedder(hidden, scale=cfg.time_scale)
            self.latent_embedder = LatentEmbedder(cfg.latent_width, cfg.latent_bottleneck, hidden)
            if cfg.latent_prior_tokens:  # the prior's mean code apart from the noisy z_t (the latent shift tokens)
                self.prior_embedder = LatentEmbedder(cfg.latent_width, cfg.latent_bottleneck, hidden)
            self.latent_head = LatentHead(hidden, cfg.heads, cfg.latent_width, cfg.latent_head_blocks)
            self.latent_space = LatentSpace(
                cfg.n_genes, cfg.n_genes + cfg.n_drugs, cfg.latent_dim, cfg.latent_pca, cfg.latent_source,
                cfg.latent_source_noise,
            )  # fmt: skip

    @property
    def has_latent(self) -> bool:
        return self.cfg.latent == "scgpt"

    def flow_source(self, control: Tensor, pert: Tensor, genes: Tensor, noise: Tensor) -> Tensor:
        """x0 (B, G) of the expression flow (ccfm/model/source.py), the same in training and sampling."""
        return self.source(control, pert, genes, noise)

    def latent_flow_source(self, pert: Tensor, genes: Tensor, noise: Tensor) -> Tensor:
        """z0 (B, G, K) of the latent flow (ccfm/model/latent_space.py) from noise (B, G, K)."""
        return self.latent_space.source(pert, genes, noise)

    @property
    def has_prior_shifts(self) -> bool:
        return self.source.has_table

    def set_prior_shifts(self, shift: Tensor) -> None:
        """shift: (n_genes + n_drugs, n_genes) each token's prior shift on each gene; stored in the state_dict."""
        self.source.set_shifts(shift)

    def set_gene_graph(self, adjacency: Tensor) -> None:
        """adjacency: (n_genes, n_genes) bool with self-loops; stored in the state_dict."""
        self.gene_encoder.set_graph(adjacency)

    def forward(self, inputs: FlowInputs) -> FlowOutputs:
        _check_inputs(self.cfg, inputs)
        b = inputs.x_t.shape[0]
        gene_tokens = self.gene_encoder(inputs.genes)  # (G, H)
        control_tokens = self.control_encoder(inputs.control) + gene_tokens  # (B, G, H)
        state_tokens = self.state_encoder(inputs.x_t) + gene_tokens  # (B, G, H)
        tokens = self.fusion(state_tokens, control_tokens)  # (B, G, H)
        if self.cfg.target_flag:
            is_target = target_mask(inputs.genes, inputs.pert)[..., None].to(tokens.dtype)  # (B, G, 1)
            tokens = tokens + is_target * self.target_embedding  # (B, G, H)
        if self.cfg.shift_tokens:
            shift = self.source.prior_shift(inputs.pert, inputs.genes)  # (B, G)
            tokens = tokens + self.shift_encoder(shift)  # (B, G, H)
        pert = self.pert_embedder(inputs.pert, self.gene_encoder.embedding.weight)  # (B, H)
        c = self.t_expr_embedder(_batch_time("t_expr", inputs.t_expr, b)) + pert  # (B, H)
        if self.has_latent:
            c = c + self.t_latent_embedder(_batch_time("t_latent", inputs.t_latent, b))  # (B, H)
            tokens = tokens + self.latent_embedder(inputs.z_t)  # (B, G, H)
            if self.cfg.latent_prior_tokens:
                tokens = tokens + self.prior_embedder(self.latent_space.prior_code(inputs.pert, inputs.genes))
        for layer in self.layers:
            tokens = layer(tokens, gene_tokens, control_tokens, pert, c)  # (B, G, H)
        expr_velocity = self.expr_head(tokens, pert) if inputs.heads != "latent" else None  # (B, G)
        wants_latent = self.has_latent and inputs.heads != "expr"
        latent_velocity = None
        if wants_latent:
            latent_velocity = self.latent_head(tokens, c)  # (B, G, D)
            if self.cfg.latent_target == "residual":  # the head predicted z1 − prior mean
                latent_velocity = latent_velocity + self.latent_space.prior_code(inputs.pert, inputs.genes)
            if self.cfg.latent_target != "velocity":  # the head predicted z1: v = (ẑ1 − z_t) / (1 − t)
                t_latent = _batch_time("t_latent", inputs.t_latent, b)
                gap = (1 - t_latent).clamp_min(MIN_LATENT_GAP)[:, None, None]  # (B, 1, 1)
                latent_velocity = (latent_velocity - inputs.z_t) / gap  # (B, G, D)
        return FlowOutputs(expr_velocity=expr_velocity, latent_velocity=latent_velocity)


def build_model(cfg: ModelConfig) -> CascadedFlowModel:
    """The model for a config (parameters drawn from torch's default generator: seed at the entry point)."""
    return CascadedFlowModel(cfg)
