"""Flow matching for CCFM: the linear path, cascaded time sampling, losses and the two-stage ODE sampler.

Independent of the network: the model enters only as a `VelocityFn`,
velocity_fn(x_t (B, G), t_expr (B,), z_t (B, G, D) | None, t_latent (B,) | None, need)
    -> (v_expr (B, G), v_latent (B, G, D) | None), where need ("expr" | "latent") is the stream used.
"""

from ccfm.flow.losses import MMD_SCALES, LossTerms, cascade_loss, mmd2_unbiased
from ccfm.flow.path import PathSample, gaussian_noise, linear_path
from ccfm.flow.sampling import (
    NULL_PERTURBATION,
    CascadeSample,
    VelocityFn,
    guided,
    label_dropout,
    sample_cascade,
)
from ccfm.flow.time_sampling import (
    CascadeTimes,
    cascaded_time_sample,
    expression_only_time_sample,
)

__all__ = [
    "MMD_SCALES",
    "NULL_PERTURBATION",
    "CascadeSample",
    "CascadeTimes",
    "LossTerms",
    "PathSample",
    "VelocityFn",
    "cascade_loss",
    "cascaded_time_sample",
    "expression_only_time_sample",
    "gaussian_noise",
    "guided",
    "label_dropout",
    "linear_path",
    "mmd2_unbiased",
    "sample_cascade",
]
