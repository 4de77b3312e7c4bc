"""The cascaded flow model: scDFM backbone on expression plus a flowing scGPT latent (Latent Forcing)."""

from ccfm.model.cascade import CascadedFlowModel, FlowInputs, FlowOutputs, build_model
from ccfm.model.graph import coexpression_graph

__all__ = ["CascadedFlowModel", "FlowInputs", "FlowOutputs", "build_model", "coexpression_graph"]
