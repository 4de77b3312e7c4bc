"""Read a run folder: its description (model-free, for evaluation) or the trained model itself."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ccfm.config import ModelConfig, SchemaOverrides
from ccfm.data.loading import PerturbationData, load_dataset
from ccfm.data.splits import Split
from ccfm.data.vocab import PerturbationVocab
from ccfm.errors import CCFMError
from ccfm.model.cascade import CascadedFlowModel, build_model
from pipeline.checkpoints import load_checkpoint, resolve_checkpoint


@dataclass(frozen=True)
class RunInfo:
    """What a run folder says about itself (run.json, split.json)."""

    folder: Path
    train_config: dict[str, Any]  # run.json's "train_config"
    panel: list[str]  # (G,) gene symbols in panel order
    split: Split
    stand_in: dict[str, bool]  # run.json's stand-in flags (data, scgpt)

    @property
    def data(self) -> Path:
        """The data file the run was trained on (absolute in runs since the store hand-off; older: as typed)."""
        return Path(self.train_config["data"])

    @property
    def schema(self) -> SchemaOverrides:
        return SchemaOverrides(**self.train_config.get("schema", {}))

    def _setting(self, section: str, name: str, default: Any = None) -> Any:
        """A TrainConfig setting: `section.name` (nested configs), or `name` in runs written before them."""
        nested = self.train_config.get(section)
        if isinstance(nested, dict) and name in nested:
            return nested[name]
        return self.train_config.get(name, default)

    @property
    def cfg_dropout(self) -> float:
        """Perturbation-label dropout at training (0: the run never learned the null label guidance needs)."""
        return float(self._setting("objective", "cfg_dropout", 0.0))

    @property
    def method(self) -> str:
        latent = self._setting("model", "latent")
        if latent == "scgpt":
            return "ccfm"
        return f"ccfm-{latent}" if latent else self.folder.name


def read_run(folder: Path) -> RunInfo:
    folder = Path(folder)
    run_json, split_json = folder / "run.json", folder / "split.json"
    if not run_json.is_file():
        raise CCFMError(f"{folder} is not a run folder: {run_json} is missing; pass the --out folder of `ccfm train`")
    if not split_json.is_file():
        raise CCFMError(f"{split_json} is missing; the run folder is incomplete — rerun `ccfm train`")
    try:
        info = json.loads(run_json.read_text())
        split = Split.from_json(split_json.read_text())
        train_config, panel = info["train_config"], [str(g) for g in info["panel"]]
        if "data" not in train_config:
            raise KeyError("train_config.data")  # a run.json that does not name its data file is not readable
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise CCFMError(
            f"cannot read {run_json} / {split_json} ({type(err).__name__}: {err}); rerun `ccfm train`"
        ) from err
    return RunInfo(folder, train_config, panel, split, {k: bool(v) for k, v in info.get("stand_in", {}).items()})


def load_real_data(run: RunInfo) -> PerturbationData:
    """The data set the run was trained on, loaded as training loaded it."""
    if not run.data.is_file():
        where = "restore the file" if run.data.is_absolute() else "run from the folder training ran in"
        raise CCFMError(f"the data file {run.data} recorded in {run.folder / 'run.json'} does not exist; {where}")
    return load_dataset(run.data, run.schema)


@dataclass
class TrainedRun:
    info: RunInfo
    vocab: PerturbationVocab
    model: CascadedFlowModel  # EMA weights, eval mode, frozen
    checkpoint: Path
    step: int


def load_run(folder: Path, checkpoint: str = "last", device: torch.device | str = "cpu") -> TrainedRun:
    """Rebuild model (EMA weights), panel, vocabularies and split from the run folder alone."""
    info = read_run(folder)
    path = resolve_checkpoint(info.folder, checkpoint)
    payload = load_checkpoint(path)
    if payload.get("panel") != info.panel:
        raise CCFMError(
            f"checkpoint {path} was trained on another gene panel than run {info.folder}; use a checkpoint of this run"
        )
    model = build_model(ModelConfig.from_json(payload["model_config"]))
    model.load_state_dict(payload["ema"])
    model.eval().requires_grad_(False)
    return TrainedRun(
        info=info,
        vocab=PerturbationVocab.from_json(payload["perturbation_vocab"]),
        model=model.to(device),
        checkpoint=path,
        step=int(payload["completed_steps"]),
    )
