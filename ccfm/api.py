"""CCFM from Python: AnnData in, AnnData (or a DataFrame) out, thin over the pipeline's stages.

The façade above the pipeline (the one module of `ccfm` that may import `pipeline/`; the library below it never
does). Each call runs the same stage as the CLI command of the same name, with the same checks and artifacts::

    import anndata as ad
    import ccfm

    adata = ad.read_h5ad("norman.h5ad")
    store = ccfm.extract(adata, scgpt="models/scGPT_human", out="cache/norman.zarr")
    run = ccfm.train(store, out="runs/norman", preset="tiny", steps=300)
    pred = run.predict(["CBL+CNN1", "KLF1+ctrl"], n_cells=64)  # AnnData: cells × panel genes
    scores = run.evaluate(pred)  # cell-eval's summary, one row per metric and method
    pairs = run.screen(cells=16)  # every unmeasured pair, ranked by genetic interaction

Settings are passed by the names the configs give them (`ccfm.config`), e.g. `train(..., latent_pca=8,
latent_first_prob=0.2)`.
"""

from __future__ import annotations

import dataclasses
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd

from ccfm.config import EvaluateConfig, ExtractConfig, SamplerConfig, ScreenConfig, TrainConfig
from ccfm.data.conditions import parse_condition
from ccfm.data.loading import from_anndata
from ccfm.data.panel import panel_columns
from ccfm.errors import CCFMError
from ccfm.eval.predictions import predictions_anndata
from pipeline import evaluate as evaluate_stage
from pipeline import extract as extract_stage
from pipeline import screen as screen_stage
from pipeline import train as train_stage
from pipeline.generate import sample_cells
from pipeline.run_folder import TrainedRun, load_real_data
from pipeline.run_folder import load_run as load_trained_run
from pipeline.runtime import provenance, resolve_device


def extract(data: ad.AnnData | str | Path, scgpt: str | Path, out: str | Path, **settings: Any) -> Path:
    """`ccfm extract`: the frozen scGPT's features of every cell into the latent store `out`; returns its path.

    An in-memory AnnData is first written beside the store (`OUT.data.h5ad`): the store records its data file,
    which `train` reads. `settings`: ExtractConfig fields (n_genes, batch_size, device, resume, overwrite, ...).

    >>> store = ccfm.extract("norman.h5ad", scgpt="models/scGPT_human", out="cache/norman.zarr", n_genes=1000)
    """
    out = Path(out)
    if isinstance(data, ad.AnnData):
        path = out.with_name(out.name + ".data.h5ad")
        path.parent.mkdir(parents=True, exist_ok=True)
        data.write_h5ad(path)
        data = path
    return extract_stage.run(ExtractConfig(data=Path(data), scgpt=Path(scgpt), out=out, **settings))


def train(store: str | Path, out: str | Path, **settings: Any) -> Run:
    """`ccfm train`: the cascaded model from the store's data and latents; returns the trained Run.

    `settings`: any TrainConfig setting by name, wherever it lives (preset, latent, latent_pca, steps, lr,
    batch_size, cfg_dropout, ...; see `TrainConfig.replace`).

    >>> run = ccfm.train("cache/norman.zarr", out="runs/norman", preset="tiny", steps=300, lr=1e-3)
    """
    cfg = TrainConfig(cache=Path(store), out=Path(out)).replace(**settings)
    return Run(train_stage.run(cfg))


def load_run(folder: str | Path, checkpoint: str = "last", device: str = "auto") -> Run:
    """A trained run folder (from `train` or `ccfm train`), ready to predict, evaluate and screen."""
    return Run(Path(folder), checkpoint, device)


@dataclasses.dataclass
class Run:
    """A trained CCFM run; the model is loaded on first use."""

    folder: Path
    checkpoint: str = "last"
    device: str = "auto"
    _trained: TrainedRun | None = dataclasses.field(default=None, repr=False)

    @property
    def trained(self) -> TrainedRun:
        if self._trained is None:
            self._trained = load_trained_run(self.folder, self.checkpoint, resolve_device(self.device))
        return self._trained

    @property
    def held_out(self) -> list[str]:
        """The perturbations the run's split held out of training (what `ccfm generate` predicts by default)."""
        return list(self.trained.info.split.test)

    @property
    def panel(self) -> list[str]:
        """(G,) the gene symbols predictions cover, in order."""
        return self.trained.info.panel

    def predict(
        self,
        perturbations: Sequence[str],
        n_cells: int = 64,
        control: ad.AnnData | None = None,
        seed: int = 0,
        **sampler: Any,
    ) -> ad.AnnData:
        """Predicted cells for each perturbation (`A+B`, `A+ctrl`, `A`): an AnnData of cells × panel genes with
        the perturbation in `obs['target_gene']` (cell-eval's column), the control cells it started from
        appended (label `non-targeting`), log1p(normalize_total) values.

        `control`: the control cells to start from (an AnnData in the training data's layout; default: the
        training data's own control cells). `sampler`: SamplerConfig fields (method, steps, latent_steps).

        >>> pred = run.predict(["CBL+CNN1", "KLF1+ctrl"], n_cells=64)
        """
        run = self.trained
        if n_cells < 1:
            raise CCFMError(f"n_cells must be ≥ 1, got {n_cells}")
        labels = [parse_condition(str(p)).label for p in perturbations]
        if not labels or any(parse_condition(lab).is_control for lab in labels):
            raise CCFMError("predict needs at least one perturbation, and no control label among them")
        data = load_real_data(run.info) if control is None else from_anndata(control, run.info.schema, "control")
        rows = data.control_indices()
        if rows.size == 0:
            raise CCFMError(f"{data.source} holds no control cells to start from")
        cells = data.expression[rows][:, panel_columns(data, run.info.panel)].toarray().astype(np.float32)
        device = next(run.model.parameters()).device
        repeated = [lab for lab in labels for _ in range(n_cells)]
        cfg = SamplerConfig(**sampler)
        expression = sample_cells(run, repeated, cells, cfg, 256, seed, device, show_progress=False)
        record = {
            "method": run.info.method,
            "run": str(run.info.folder),
            "checkpoint": str(run.checkpoint),
            "step": run.step,
            "steps": cfg.steps,
            "solver": cfg.method,
            "perturbations": "api",
            "stand_in": run.info.stand_in,
            "data": str(run.info.data),
            **provenance(device, seed),
        }
        return predictions_anndata(
            expression, repeated, cells, run.info.panel, record, control_names=data.obs_names[rows].tolist()
        )

    def evaluate(
        self, predictions: ad.AnnData, baselines: Sequence[str] = ("control", "additive", "train_mean"), **settings: Any
    ) -> pd.DataFrame:
        """cell-eval's scores of `predictions` (from `predict`) against the real cells of those perturbations,
        beside the built-in baselines on the same control cells: the summary, one row per metric and method.

        `settings`: EvaluateConfig fields (profile, seed, num_threads); the report files go to a temporary
        folder (run `ccfm evaluate` to keep them).

        >>> scores = run.evaluate(pred)
        """
        settings = {"profile": "minimal", **settings}
        with tempfile.TemporaryDirectory(prefix="ccfm-evaluate-") as tmp:
            path = Path(tmp) / "predictions.h5ad"
            predictions.write_h5ad(path)
            cfg = EvaluateConfig(
                run=self.folder, predictions=path, baselines=tuple(baselines), out=Path(tmp) / "eval", **settings
            )
            report = evaluate_stage.run(cfg)
            return pd.read_csv(report / "summary.csv")

    def screen(
        self, pairs: str = "all", cells: int = 16, out: str | Path | None = None, **settings: Any
    ) -> pd.DataFrame:
        """`ccfm screen`: every unmeasured pair of training components (or those listed in the file `pairs`),
        predicted and ranked by departure from additivity; returns pairs.csv as a DataFrame (the folder, default
        RUN/screen, also holds screen.png). A killed screen continues when called again with the same settings.

        >>> top = run.screen(cells=16).head(20)
        """
        cfg = ScreenConfig(run=self.folder, pairs=pairs, cells=cells, out=None if out is None else Path(out),
                           checkpoint=self.checkpoint, device=self.device, **settings)  # fmt: skip
        return pd.read_csv(screen_stage.run(cfg) / screen_stage.RESULT)
