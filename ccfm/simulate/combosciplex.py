"""A SIMULATED stand-in for ComboSciPlex (sci-Plex drug combinations on A549) in the scDFM/pertpy format.

Shaped by the real condition and drug tables in `ccfm/resources/combosciplex` (32 conditions with
the real per-condition cell counts, 17 drugs, their sci-Plex pathway annotations, the 7-condition
scDFM/CellFlow test set). There is no A549 gene-parameter file, so the 2,000 genes and their
negative-binomial parameters are the most expressed K562 genes (real perturbplan Gasperini/10x
parameters) among the Norman genes, named by symbol. Every cell is drawn from a model.

Effect model of drug d (natural-log fold change of relative abundance):
    lfc_d = potency_d * (u_d * mechanism program + 0.5 * pathway program + drug-specific genes)
- mechanism program: shared by drugs with the same molecular target class (`DRUG_MECHANISM`; the
  sci-Plex pathway annotation alone would split the HDAC inhibitors, putting Givinostat under
  "Cytoskeletal Signaling"); 40 genes, magnitudes 1.0 -> 0.3 by rank, 60% up; u_d ~ U(0.7, 1.0);
- pathway program: shared by drugs with the same sci-Plex pathway annotation; 30 genes, as above;
- drug-specific: 15 genes, |lfc| ~ U(0.5, 1.0), either sign;
- potency_d ~ U(range of its mechanism class): HDAC and HSP90 inhibitors act strongest in sci-Plex.
A pair is A + B for 70% of pairs; 30% carry a planted interaction (see `simulate_common`).
"""

from __future__ import annotations

from dataclasses import dataclass

import anndata as ad
import numpy as np
import pandas as pd

from ccfm.data.conditions import parse_condition
from ccfm.simulate.common import (
    K562_FILES,
    ExpressionModel,
    Interaction,
    LibrarySizeModel,
    assemble_anndata,
    cell_barcodes,
    check_size_arguments,
    combine_pair,
    k562_baseline,
    k562_parameters,
    plan_interactions,
    read_resource_csv,
    scaled_cell_count,
    simulate_condition,
    simulation_record,
    sparse_programs,
)

COMBO_FILES = ("combosciplex/conditions.csv", "combosciplex/drugs.csv", "norman/var_genes.csv")
N_GENES = 2000
#: sci-Plex libraries are shallower than 10x; the real n.umi distribution is not bundled, so this is
#: an assumption: median 1,500 UMIs over these 2,000 genes.
COMBO_LIBRARY = LibrarySizeModel(median=1500.0, sigma=0.5, low=200.0, high=10000.0)
INTERACTION_FRACTION = 0.3
#: Molecular target class of each drug (public pharmacology; not in the bundled tables).
DRUG_MECHANISM = {
    "Panobinostat": "HDAC", "Dacinostat": "HDAC", "Givinostat": "HDAC", "PCI-34051": "HDAC",
    "Alvespimycin": "HSP90", "Tanespimycin": "HSP90",
    "SRT1720": "SIRT1", "SRT2104": "SIRT1", "SRT3025": "SIRT1",
    "Cediranib": "kinase", "Crizotinib": "kinase", "Dasatinib": "kinase", "Sorafenib": "kinase",
    "Danusertib": "kinase",
    "Pirarubicin": "DNA", "Carmofur": "DNA",
    "Curcumin": "pleiotropic",
}  # fmt: skip
#: Potency range per class: top-gene LFC scale. HDAC/HSP90 inhibitors dominate sci-Plex responses.
MECHANISM_POTENCY = {
    "HDAC": (1.5, 2.5), "HSP90": (1.2, 2.0), "DNA": (0.8, 1.5),
    "kinase": (0.5, 1.2), "pleiotropic": (0.5, 1.0), "SIRT1": (0.3, 0.8),
}  # fmt: skip
MECHANISM_GENES, PATHWAY_GENES, SPECIFIC_GENES = 40, 30, 15
N_STATE_PROGRAMS, STATE_PROGRAM_GENES, STATE_PROGRAM_SD = 3, 80, 0.3
RESPONSE_CV = 0.3
N_PLANTED = 10  # planted up / down genes recorded per drug
DESCRIPTION = (
    "SIMULATED stand-in, NOT ComboSciPlex data: negative-binomial counts for 2,000 genes whose parameters "
    "are real K562 (not A549: no A549 parameter file exists here) perturbplan Gasperini/10x values, shaped "
    "by the real ComboSciPlex conditions, cell counts (scaled) and drug pathway annotations; drug effects "
    "and combination interactions are planted and recorded in uns['simulation']."
)


@dataclass(frozen=True)
class ComboMetadata:
    """The real ComboSciPlex tables the simulation follows."""

    conditions: pd.DataFrame  # (32, ...) condition, Drug1, Drug2, n_cells_cpa_hvg_file, test flag
    pathway: dict[str, str]  # drug (and 'control') -> sci-Plex pathway annotation
    genes: pd.DataFrame  # (2000, 1) index gene symbol, column gene_id (Ensembl)


def _top_k562_genes(n_genes: int) -> pd.DataFrame:
    """The `n_genes` most expressed K562 genes among the Norman genes, in Norman file order."""
    var = read_resource_csv(COMBO_FILES[2], dtype=str)
    expression = k562_parameters()["relative_expression"].reindex(var["gene_id"]).to_numpy()  # NaN = unknown
    keep = np.sort(np.argsort(np.nan_to_num(expression, nan=-1.0))[::-1][:n_genes])
    chosen = var.iloc[keep]
    return pd.DataFrame({"gene_id": chosen["gene_id"].to_numpy()}, index=pd.Index(chosen["gene_name"].to_numpy()))


def load_combo_metadata() -> ComboMetadata:
    conditions = read_resource_csv(COMBO_FILES[0])
    drugs = read_resource_csv(COMBO_FILES[1])
    pathway = dict(zip(drugs["drug"], drugs["sciplex_pathway_annotation"], strict=True))
    return ComboMetadata(conditions=conditions, pathway=pathway, genes=_top_k562_genes(N_GENES))


def _program(n_genes: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """(G,) a shared program: `size` random genes, magnitudes 1.0 -> 0.3 by rank, 60% up."""
    vector = np.zeros(n_genes)
    genes = rng.choice(n_genes, size=size, replace=False)
    vector[genes] = np.linspace(1.0, 0.3, size) * np.where(rng.random(size) < 0.6, 1.0, -1.0)
    return vector


def drug_effects(pathway: dict[str, str], n_genes: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Per drug: its (G,) LFC from a mechanism program, a pathway program and its own genes."""
    drugs = sorted(DRUG_MECHANISM)
    mechanism_programs = {m: _program(n_genes, MECHANISM_GENES, rng) for m in sorted(MECHANISM_POTENCY)}
    pathway_programs = {p: _program(n_genes, PATHWAY_GENES, rng) for p in sorted({pathway[d] for d in drugs})}
    effects = {}
    for drug in drugs:
        mechanism = DRUG_MECHANISM[drug]
        specific = np.zeros(n_genes)
        genes = rng.choice(n_genes, size=SPECIFIC_GENES, replace=False)
        specific[genes] = rng.uniform(0.5, 1.0, SPECIFIC_GENES) * rng.choice([-1.0, 1.0], SPECIFIC_GENES)
        shared = rng.uniform(0.7, 1.0) * mechanism_programs[mechanism] + 0.5 * pathway_programs[pathway[drug]]
        effects[drug] = rng.uniform(*MECHANISM_POTENCY[mechanism]) * (shared + specific)
    return effects


def _planted(lfc: np.ndarray, genes: np.ndarray) -> tuple[list[str], list[str]]:
    """The N_PLANTED most up and most down genes of a (G,) LFC (only genes that really move)."""
    order = np.argsort(lfc)  # ascending
    up = [str(genes[i]) for i in order[::-1][:N_PLANTED] if lfc[i] > 0]
    down = [str(genes[i]) for i in order[:N_PLANTED] if lfc[i] < 0]
    return up, down


def _combo_obs(meta: ComboMetadata, rows: list[int], barcodes: np.ndarray) -> pd.DataFrame:
    """obs in the pertpy/scDFM layout for cells of condition-table rows `rows` (N,)."""
    table = meta.conditions.iloc[rows].reset_index(drop=True)
    is_control = (table["condition"] == "control+control").to_numpy()
    split = np.where(table["cellflow_tutorial_and_scdfm_test"].astype(bool), "test", "train")
    obs = pd.DataFrame(
        {
            "condition": pd.Categorical(table["condition"]),
            "Drug1": pd.Categorical(table["Drug1"]),
            "Drug2": pd.Categorical(table["Drug2"]),
            "pathway1": pd.Categorical(table["Drug1"].map(meta.pathway)),
            "pathway2": pd.Categorical(table["Drug2"].map(meta.pathway)),
            "split": pd.Categorical(split),  # the 7-condition scDFM/CellFlow test set
            "control": is_control.astype(np.int64),
            "cell_type": pd.Categorical(np.full(len(table), "A549")),
        }
    )
    obs.index = pd.Index(barcodes, name="cell")
    return obs


def _condition_effects(
    meta: ComboMetadata, rng: np.random.Generator
) -> tuple[dict[str, np.ndarray], dict[str, Interaction]]:
    """{canonical label: (G,) LFC} for every drug and listed pair, and the planted pair interactions."""
    lfc = drug_effects(meta.pathway, len(meta.genes), rng)
    pairs = [(p.label, *p.tokens) for p in map(parse_condition, meta.conditions["condition"]) if p.is_double]
    plan = plan_interactions(pairs, INTERACTION_FRACTION, rng)
    for label, a, b in pairs:
        lfc[label] = combine_pair(lfc[a], lfc[b], a, plan[label])
    return lfc, plan


def simulate_combosciplex(scale: float, seed: int, min_cells: int) -> ad.AnnData:
    """A ComboSciPlex-shaped stand-in: (N, 2,000) log1p X, raw `layers['counts']`, ground truth in uns.

    N = sum over the 32 real conditions of max(min_cells, round(real cells * scale)). The planted
    effects depend on `seed` only, not on `scale`.
    """
    check_size_arguments(scale, min_cells)
    effects_rng, cells_rng, names_rng = np.random.default_rng(seed).spawn(3)
    meta = load_combo_metadata()
    model = ExpressionModel(
        baseline=k562_baseline(meta.genes["gene_id"].tolist(), effects_rng, detected=set()),
        state_loadings=sparse_programs(N_GENES, N_STATE_PROGRAMS, STATE_PROGRAM_GENES, STATE_PROGRAM_SD, effects_rng),
        library=COMBO_LIBRARY,
        response_cv=RESPONSE_CV,
    )
    lfc, plan = _condition_effects(meta, effects_rng)
    blocks, rows = [], []
    for row, (condition, n_real) in enumerate(
        meta.conditions[["condition", "n_cells_cpa_hvg_file"]].itertuples(index=False)
    ):
        n = scaled_cell_count(int(n_real), scale, min_cells)
        blocks.append(
            simulate_condition(model, lfc.get(parse_condition(condition).label, np.zeros(N_GENES)), n, cells_rng)
        )
        rows.extend([row] * n)
    obs = _combo_obs(meta, rows, cell_barcodes(len(rows), names_rng))
    adata = assemble_anndata(blocks, obs, meta.genes, cells_rng)
    labels = sorted(lfc)
    planted = {drug: _planted(lfc[drug], meta.genes.index.to_numpy()) for drug in DRUG_MECHANISM}
    adata.uns["simulation"] = simulation_record(
        description=DESCRIPTION,
        seed=seed,
        scale=scale,
        min_cells=min_cells,
        sources=[f"ccfm/resources/{f}" for f in COMBO_FILES + K562_FILES],
        plan=plan,
        lfc_labels=labels,
        lfc=np.stack([lfc[label] for label in labels]),
        planted_up={drug: up for drug, (up, _) in planted.items()},
        planted_down={drug: down for drug, (_, down) in planted.items()},
    )
    adata.uns["simulation"]["drug_mechanism"] = dict(DRUG_MECHANISM)
    adata.uns["stand_in"] = True
    return adata
