"""Frozen, typed configurations: one per pipeline stage, serialized as JSON into every artifact.

Each checks its own values in `__post_init__` with the option's name (`checks.py`); they nest where a stage has
parts: `TrainConfig(model=ModelKnobs(...), objective=ObjectiveConfig(times=CascadeTimeConfig(...)))`,
`GenerateConfig(sampler=SamplerConfig(...))`. Import them from here.
"""

from ccfm.config.checks import MAX_SEED, to_json_dict
from ccfm.config.data import ExtractConfig, FetchScgptConfig, SchemaOverrides, SimulateConfig, ToyScgptConfig
from ccfm.config.model import (
    LATENT_SOURCES,
    LATENT_TARGETS,
    LEGACY_MODEL_FIELDS,
    MODEL_PRESETS,
    ODE_METHODS,
    SOURCES,
    ModelConfig,
    ModelKnobs,
    ModelPreset,
)
from ccfm.config.runs import EvaluateConfig, GenerateConfig, SamplerConfig, ScreenConfig
from ccfm.config.train import CascadeTimeConfig, ObjectiveConfig, TrainConfig

__all__ = [
    "LATENT_SOURCES",
    "LATENT_TARGETS",
    "LEGACY_MODEL_FIELDS",
    "MAX_SEED",
    "MODEL_PRESETS",
    "ODE_METHODS",
    "SOURCES",
    "CascadeTimeConfig",
    "EvaluateConfig",
    "ExtractConfig",
    "FetchScgptConfig",
    "GenerateConfig",
    "ModelConfig",
    "ModelKnobs",
    "ModelPreset",
    "ObjectiveConfig",
    "SamplerConfig",
    "SchemaOverrides",
    "ScreenConfig",
    "SimulateConfig",
    "ToyScgptConfig",
    "TrainConfig",
    "to_json_dict",
]
