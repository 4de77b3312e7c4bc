"""The perturbation vocabulary: token ids of genes (sharing the model's gene table) and drugs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ccfm.data.conditions import Perturbation
from ccfm.data.loading import PerturbationData
from ccfm.errors import CCFMError

EMPTY_SLOT = -1
SLOTS = 2


@dataclass(frozen=True)
class PerturbationVocab:
    """Token ids for perturbations: genes share the model's gene table, drugs have their own."""

    genes: tuple[str, ...]  # model gene vocabulary: the panel in order, then perturbed genes outside it
    drugs: tuple[str, ...]  # drug names, sorted

    def ids(self, pert: Perturbation) -> np.ndarray:
        """(P,) token ids: genes in [0, n_genes), drugs in [n_genes, n_genes + n_drugs), -1 empty."""
        gene_id = {g: i for i, g in enumerate(self.genes)}
        drug_id = {d: len(self.genes) + i for i, d in enumerate(self.drugs)}
        out = np.full(SLOTS, EMPTY_SLOT, dtype=np.int64)
        for slot, token in enumerate(pert.tokens):
            if token in gene_id:
                out[slot] = gene_id[token]
            elif token in drug_id:
                out[slot] = drug_id[token]
            else:
                raise CCFMError(
                    f"perturbation token {token!r} is unknown to this model; it was not in the "
                    "training data's perturbations"
                )
        return out

    def to_json(self) -> dict[str, list[str]]:
        return {"genes": list(self.genes), "drugs": list(self.drugs)}

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> PerturbationVocab:
        return cls(tuple(raw["genes"]), tuple(raw["drugs"]))


def build_vocab(panel_genes: list[str], data: PerturbationData) -> PerturbationVocab:
    """Panel genes first; drug data (ComboSciPlex) put every token in the drug table."""
    tokens = sorted({t for p in data.perturbations.values() for t in p.tokens})
    if data.schema.kind == "combosciplex":
        return PerturbationVocab(tuple(panel_genes), tuple(tokens))
    extra = [t for t in tokens if t not in set(panel_genes)]
    return PerturbationVocab(tuple(panel_genes) + tuple(extra), ())
