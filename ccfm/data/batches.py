"""Training batches: one perturbation's target cells, as many random control cells, and their latents.

A batch is a pure function of (seed, step, rank): a map-style dataset indexed by step, so worker
processes, restarts and resumed runs all see exactly the same batches.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

from ccfm.data.loading import PerturbationData
from ccfm.data.vocab import PerturbationVocab
from ccfm.errors import CCFMError


@dataclass(frozen=True)
class TrainingCells:
    """The cells a run trains on, with panel expression."""

    expression: sp.csr_matrix  # (N, G) panel expression of every cell of the data set
    obs_names: np.ndarray  # (N,)
    by_condition: dict[str, np.ndarray]  # training condition -> cell rows
    controls: np.ndarray  # control cell rows
    tokens: dict[str, np.ndarray]  # training condition -> (P,) token ids

    @classmethod
    def from_data(
        cls, data: PerturbationData, panel_columns: np.ndarray, train: list[str], vocab: PerturbationVocab
    ) -> TrainingCells:
        return cls(
            expression=data.expression[:, panel_columns].tocsr(),
            obs_names=data.obs_names,
            by_condition={lab: data.cell_indices(lab) for lab in train},
            controls=data.control_indices(),
            tokens={lab: vocab.ids(data.perturbations[lab]) for lab in train},
        )


@dataclass
class TrainBatch:
    """One step's tensors (no batch dimension added by a DataLoader: it is already B)."""

    target: torch.Tensor  # (B, G) target cells' expression
    control: torch.Tensor  # (B, G) random control cells' expression
    genes: torch.Tensor  # (G,) long, ids into the model's gene vocabulary
    pert: torch.Tensor  # (B, P) long perturbation tokens
    latent: torch.Tensor | None  # (B, G, D) normalized latent of the target cells
    latent_covered: torch.Tensor | None  # (B, G) bool
    step: int
    groups: torch.Tensor | None = None  # (B,) long: which of the batch's perturbations each cell is

    def to(self, device: torch.device) -> TrainBatch:
        move = lambda t: None if t is None else t.to(device, non_blocking=True)  # noqa: E731
        return TrainBatch(
            move(self.target),
            move(self.control),
            move(self.genes),
            move(self.pert),
            move(self.latent),
            move(self.latent_covered),
            self.step,
            move(self.groups),
        )


@dataclass(frozen=True)
class BatchFailure:
    """A batch that could not be built, and why (one line for the user)."""

    message: str


class BatchStream(torch.utils.data.Dataset):
    """Map-style dataset: item `step` is that step's batch. The latent source opens lazily per process.

    A batch mixes batch_size // pert_cells training perturbations (at least one, distinct while there are
    enough), each with an equal share of the batch's target cells, and as many random control cells.
    """

    def __init__(
        self,
        cells: TrainingCells,
        source_spec: Any | None,
        batch_size: int,
        gene_subset: int | None,
        seed: int,
        rank: int = 0,
        steps: int = 0,
        pert_cells: int | None = None,
    ) -> None:
        self.cells = cells
        self.source_spec = source_spec  # an object with .open() -> LatentSource, or None (latent "none")
        self.batch_size = batch_size
        self.n_groups = max(1, batch_size // pert_cells) if pert_cells else 1
        self.gene_subset = gene_subset
        self.seed = seed
        self.rank = rank
        self.steps = steps
        self.conditions = sorted(cells.by_condition)
        self._source = None

    def __len__(self) -> int:
        return self.steps

    @staticmethod
    def _pick(rng: np.random.Generator, pool: np.ndarray, size: int) -> np.ndarray:
        return rng.choice(pool, size=size, replace=pool.size < size)

    def __getitem__(self, step: int) -> TrainBatch | BatchFailure:
        """That step's batch; a user-facing problem (a damaged store, ...) comes back as a BatchFailure, which
        the training loop raises in the main process: raised in a worker, torch would wrap it in a traceback."""
        try:
            return self._batch(step)
        except CCFMError as err:
            return BatchFailure(str(err))

    def _batch(self, step: int) -> TrainBatch:
        rng = np.random.default_rng([self.seed, step, self.rank])
        n_groups = min(self.n_groups, len(self.conditions))
        picked = rng.choice(len(self.conditions), size=n_groups, replace=False)
        sizes = [len(part) for part in np.array_split(np.arange(self.batch_size), n_groups)]
        conditions = [self.conditions[int(i)] for i in picked]
        target_rows = np.concatenate(
            [np.sort(self._pick(rng, self.cells.by_condition[c], n)) for c, n in zip(conditions, sizes, strict=True)]
        )  # (B,) grouped by perturbation
        groups = np.repeat(np.arange(n_groups), sizes)  # (B,)
        control_rows = self._pick(rng, self.cells.controls, self.batch_size)
        n_genes = self.cells.expression.shape[1]
        genes = np.arange(n_genes)
        if self.gene_subset is not None and self.gene_subset < n_genes:
            genes = np.sort(rng.choice(n_genes, size=self.gene_subset, replace=False))
        target = self.cells.expression[target_rows].toarray()  # (B, G)
        control = self.cells.expression[control_rows].toarray()  # (B, G)
        latent = covered = None
        if self.source_spec is not None:
            if self._source is None:
                self._source = self.source_spec.open()
            got = self._source.get(self.cells.obs_names[target_rows].tolist(), target)
            latent = torch.from_numpy(got.features[:, genes])  # (B, G', D)
            covered = torch.from_numpy(got.covered[:, genes])  # (B, G')
        pert = np.stack([self.cells.tokens[conditions[g]] for g in groups])  # (B, P)
        return TrainBatch(
            target=torch.from_numpy(target[:, genes]),
            control=torch.from_numpy(control[:, genes]),
            genes=torch.from_numpy(genes),
            pert=torch.from_numpy(pert),
            latent=latent,
            latent_covered=covered,
            step=step,
            groups=torch.from_numpy(groups),
        )
