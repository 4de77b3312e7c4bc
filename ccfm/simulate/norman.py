"""A SIMULATED stand-in for the GEARS Norman 2019 file (`perturb_processed.h5ad`).

Shaped by the real metadata bundled in `ccfm/resources/norman` (5,045 genes in order, the 284
condition labels with their cell counts, each single target's real top-10 up/down genes and effect
size) and real K562 negative-binomial gene parameters (`ccfm/resources/k562`). Every cell is drawn
from a model; none is a measurement. Planted ground truth goes to `uns['simulation']`.

Effect model of a single CRISPRa target t (natural-log fold change of relative abundance):
- its real top-10 up genes get +m_r and top-10 down genes -m_r, m_r = top_t * (1 - 0.05 r) by rank r,
  where top_t = 0.5 + 2.0 * f_t and f_t in [0, 1] is the target's real `effect_rms` on a log scale
  over the 105 targets (weakest target: top gene +0.5, strongest, CEBPA: +2.5);
- the target gene itself: +U(2.5, 4.0), raised when needed so even a silent gene reaches the 98th
  percentile of baseline expression (CRISPRa switches genes on), capped at +8;
- a diffuse part: weights N(0, (0.2 + f_t)^2) on 3 shared programs of 150 random genes (loadings sd 0.15).
These sizes were calibrated on the real effect sizes: at scale 1 the simulated per-target RMS of the
mean log1p change vs control has median ~0.057 (real `effect_rms`: 0.046) and correlates ~0.55 with
the real one. Cells respond unevenly (strength ~ Gamma, mean 1, CV 0.3).
A target missing from the summaries would get 10 up and 10 down genes drawn among the genes
expressed above the median, with f_t = 0.5 (today all 105 targets have real summaries).
A double A+B is A + B for 70% of pairs; 30% carry a planted interaction (synergy, suppression,
dominance or a neomorphic program, see `simulate_common.plan_interactions`). The direct CRISPRa
effect on A and B themselves is kept as in the singles: guides act whatever the genetic interaction.
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
    GeneBaseline,
    Interaction,
    LibrarySizeModel,
    Modules,
    assemble_anndata,
    cell_barcodes,
    check_size_arguments,
    combine_pair,
    draw_modules,
    k562_baseline,
    module_interactions,
    plan_interactions,
    rank_magnitudes,
    read_resource_csv,
    scaled_cell_count,
    simulate_condition,
    simulation_record,
    sparse_programs,
)

NORMAN_FILES = (
    "norman/var_genes.csv",
    "norman/perturbation_counts.csv",
    "norman/single_perturbation_summaries.csv",
    "norman/target_genes.csv",
)
#: Real GEARS Norman `layers['counts']` row sums over the 5,045 genes: median 2,999, range 322-11,831.
NORMAN_LIBRARY = LibrarySizeModel(median=2999.0, sigma=0.45, low=322.0, high=11831.0)
INTERACTION_FRACTION = 0.3  # share of doubles with a planted non-additive interaction
TOP_LFC_RANGE = (0.5, 2.5)  # top DE gene's LFC for the weakest / strongest real target
TARGET_LFC_RANGE = (2.5, 4.0)  # CRISPRa on the target gene itself
TARGET_LFC_CAP = 8.0
TARGET_FLOOR_QUANTILE = 0.98  # CRISPRa lifts a silent target at least to this baseline quantile
N_EFFECT_PROGRAMS, EFFECT_PROGRAM_GENES, EFFECT_PROGRAM_SD = 3, 150, 0.15
N_STATE_PROGRAMS, STATE_PROGRAM_GENES, STATE_PROGRAM_SD = 3, 200, 0.3
RESPONSE_CV = 0.3  # cell-to-cell variation of perturbation strength
DESCRIPTION = (
    "SIMULATED stand-in, NOT Norman et al. 2019 data: negative-binomial counts from real K562 gene "
    "parameters (perturbplan Gasperini/10x), shaped by the real GEARS Norman metadata (5,045 genes, 284 "
    "conditions and cell counts scaled, real top DE genes per target); effects and double interactions "
    "are planted and recorded in uns['simulation']."
)


@dataclass(frozen=True)
class NormanMetadata:
    """The real GEARS Norman metadata the simulation follows."""

    var: pd.DataFrame  # (G, 1) index gene_id (Ensembl), column gene_name, real file order
    conditions: pd.DataFrame  # (284, 2) condition label as spelled in the real file, n_cells
    summaries: pd.DataFrame  # per single target (index symbol): effect_rms, top10_up_genes, top10_down_genes
    targets: list[str]  # the 105 CRISPRa target symbols

    @property
    def position(self) -> dict[str, int]:
        """Gene symbol -> column index."""
        return {name: i for i, name in enumerate(self.var["gene_name"])}


def load_norman_metadata() -> NormanMetadata:
    var = read_resource_csv(NORMAN_FILES[0], dtype=str).set_index("gene_id")[["gene_name"]]
    conditions = read_resource_csv(NORMAN_FILES[1])[["condition", "n_cells"]]
    summaries = read_resource_csv(NORMAN_FILES[2]).set_index("canonical_perturbation")
    targets = read_resource_csv(NORMAN_FILES[3])["target_gene"].astype(str).tolist()
    return NormanMetadata(var=var, conditions=conditions, summaries=summaries, targets=targets)


@dataclass(frozen=True)
class PlantedEffects:
    """Ground-truth effects: one (G,) log-fold-change row per canonical perturbation label."""

    lfc: dict[str, np.ndarray]  # canonical label -> (G,) natural-log fold change
    up: dict[str, list[str]]  # single target -> planted up genes (var_names)
    down: dict[str, list[str]]  # single target -> planted down genes (var_names)
    plan: dict[str, Interaction]  # double label -> planted interaction
    modules: Modules | None = None  # "modules" rule: each target's hidden module and the modules' programs


def _strength(summaries: pd.DataFrame, targets: list[str]) -> dict[str, float]:
    """f_t in [0, 1]: the target's real effect_rms, log scale, over the targets with a summary."""
    log_rms = np.log(summaries["effect_rms"].astype(float))
    lo, hi = log_rms.min(), log_rms.max()
    known = ((log_rms - lo) / (hi - lo)).to_dict()
    return {t: float(known.get(t, 0.5)) for t in targets}


def _de_genes(
    target: str,
    meta: NormanMetadata,
    position: dict[str, int],
    baseline: GeneBaseline,
    rng: np.random.Generator,
) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """(rank, gene index) of the target's up and down genes: real ones, or drawn when it has none."""
    if target in meta.summaries.index:
        row = meta.summaries.loc[target]

        def mapped(column: str) -> list[tuple[int, int]]:
            symbols = str(row[column]).split("|")
            return [(r, position[s]) for r, s in enumerate(symbols) if s in position]  # drop unknown symbols

        return mapped("top10_up_genes"), mapped("top10_down_genes")
    expressed = np.flatnonzero(baseline.relative_expression > np.median(baseline.relative_expression))
    drawn = rng.choice(expressed, size=20, replace=False)
    return list(enumerate(drawn[:10].tolist())), list(enumerate(drawn[10:].tolist()))


def _target_lfc(p_target: float, floor: float, rng: np.random.Generator) -> float:
    """CRISPRa on the target gene: strong, and enough to switch a silent gene on."""
    drawn = rng.uniform(*TARGET_LFC_RANGE)
    return float(min(TARGET_LFC_CAP, max(drawn, np.log(floor / p_target))))


def single_effects(
    meta: NormanMetadata, baseline: GeneBaseline, rng: np.random.Generator
) -> tuple[dict[str, np.ndarray], dict[str, list[str]], dict[str, list[str]]]:
    """Per target: its (G,) LFC, planted up genes and planted down genes (as var_names)."""
    n_genes = len(meta.var)
    gene_ids = meta.var.index.to_numpy()
    position = meta.position
    programs = sparse_programs(n_genes, N_EFFECT_PROGRAMS, EFFECT_PROGRAM_GENES, EFFECT_PROGRAM_SD, rng)
    floor = np.quantile(baseline.relative_expression, TARGET_FLOOR_QUANTILE)
    strength = _strength(meta.summaries, meta.targets)
    lfc, up, down = {}, {}, {}
    for target in meta.targets:
        f = strength[target]
        weights = rng.standard_normal(N_EFFECT_PROGRAMS) * (0.2 + 1.0 * f)  # (K,)
        vector = weights @ programs  # (G,) diffuse part
        top = TOP_LFC_RANGE[0] + (TOP_LFC_RANGE[1] - TOP_LFC_RANGE[0]) * f
        magnitudes = rank_magnitudes(top, 10)  # (10,)
        up_genes, down_genes = _de_genes(target, meta, position, baseline, rng)
        for rank, gene in up_genes:
            vector[gene] = magnitudes[rank]
        for rank, gene in down_genes:
            vector[gene] = -magnitudes[rank]
        own = position[target]
        vector[own] = _target_lfc(baseline.relative_expression[own], floor, rng)
        lfc[target] = vector
        up[target] = [gene_ids[g] for _, g in up_genes if g != own]
        down[target] = [gene_ids[g] for _, g in down_genes if g != own]
    return lfc, up, down


def _responders(meta: NormanMetadata) -> np.ndarray:
    """Indices of the genes the real screen shows responding (any target's top DE genes), targets excluded:
    where a shared program's genes are drawn from."""
    position = meta.position
    columns = ("top10_up_genes", "top10_down_genes")
    symbols = {s for column in columns for entry in meta.summaries[column] for s in str(entry).split("|")}
    return np.asarray(sorted(position[s] for s in symbols - set(meta.targets) if s in position))


def planted_effects(
    meta: NormanMetadata, baseline: GeneBaseline, rng: np.random.Generator, interactions: str = "random"
) -> PlantedEffects:
    """Singles from the real summaries; doubles as planned combinations of their singles: a random 30 % of
    pairs non-additive (`random`, unpredictable for an unmeasured pair), or by hidden modules (`modules`)."""
    singles, up, down = single_effects(meta, baseline, rng)
    position = meta.position
    doubles = sorted({parse_condition(c).label for c in meta.conditions["condition"]} - set(singles) - {"ctrl"})
    pairs = [(label, *parse_condition(label).tokens) for label in doubles]
    modules = None
    if interactions == "modules":
        modules = draw_modules(meta.targets, _responders(meta), len(meta.var), rng)
        for target in meta.targets:  # every member's single moves its module's shared program
            own = position[target]
            own_lfc = singles[target][own]
            singles[target] = singles[target] + modules.programs[modules.member[target]]
            singles[target][own] = own_lfc
        plan = module_interactions(pairs, modules)
    else:
        plan = plan_interactions(pairs, INTERACTION_FRACTION, rng)
    lfc = dict(singles)
    programs = modules.programs if modules is not None else None
    for label, a, b in pairs:
        combined = combine_pair(singles[a], singles[b], a, plan[label], programs)  # (G,)
        for token in (a, b):  # the guides' own CRISPRa effect is not subject to the interaction
            combined[position[token]] = singles[token][position[token]]
        lfc[label] = combined
    return PlantedEffects(lfc=lfc, up=up, down=down, plan=plan, modules=modules)


def _norman_obs(labels: np.ndarray, barcodes: np.ndarray) -> pd.DataFrame:
    """obs in the real GEARS layout; `labels` (N,) are the real condition spellings."""
    dose = np.where(labels == "ctrl", "1", "1+1")
    # 'A549' for every cell reproduces an artefact of the real file (CPA pipeline copy-paste); cells are K562.
    obs = pd.DataFrame(
        {
            "condition": pd.Categorical(labels),
            "cell_type": pd.Categorical(np.full(labels.size, "A549")),
            "dose_val": pd.Categorical(dose),
            "control": (labels == "ctrl").astype(np.int64),
            "condition_name": pd.Categorical(np.char.add(np.char.add("A549_", labels.astype(str)), "_" + dose)),
        },
        index=pd.Index(barcodes, name="cell_barcode"),
    )
    return obs


def simulate_norman(scale: float, seed: int, min_cells: int, interactions: str = "random") -> ad.AnnData:
    """A GEARS-format Norman-shaped stand-in: (N, 5,045) log1p X, raw `layers['counts']`, ground truth in uns.

    N = sum over the 284 real conditions of max(min_cells, round(real cells * scale)). The planted
    effects depend on `seed` only, not on `scale`.
    """
    check_size_arguments(scale, min_cells)
    effects_rng, cells_rng, names_rng = np.random.default_rng(seed).spawn(3)
    meta = load_norman_metadata()
    symbols = set(meta.targets)  # genes the real data shows expressed: targets and their DE genes
    for column in ("top10_up_genes", "top10_down_genes"):
        symbols |= {s for entry in meta.summaries[column] for s in str(entry).split("|")}
    detected = set(meta.var.index[meta.var["gene_name"].isin(symbols)])
    baseline = k562_baseline(meta.var.index.tolist(), effects_rng, detected)
    model = ExpressionModel(
        baseline=baseline,
        state_loadings=sparse_programs(
            len(meta.var), N_STATE_PROGRAMS, STATE_PROGRAM_GENES, STATE_PROGRAM_SD, effects_rng
        ),
        library=NORMAN_LIBRARY,
        response_cv=RESPONSE_CV,
    )
    effects = planted_effects(meta, baseline, effects_rng, interactions)
    no_effect = np.zeros(len(meta.var))
    blocks, labels = [], []
    for condition, n_real in meta.conditions.itertuples(index=False):
        n = scaled_cell_count(int(n_real), scale, min_cells)
        canonical = parse_condition(condition).label
        blocks.append(simulate_condition(model, effects.lfc.get(canonical, no_effect), n, cells_rng))
        labels.extend([condition] * n)
    labels_array = np.asarray(labels)
    obs = _norman_obs(labels_array, cell_barcodes(labels_array.size, names_rng))
    adata = assemble_anndata(blocks, obs, meta.var, cells_rng)
    rows = sorted(effects.lfc)
    adata.uns["simulation"] = simulation_record(
        description=DESCRIPTION,
        seed=seed,
        scale=scale,
        min_cells=min_cells,
        sources=[f"ccfm/resources/{f}" for f in NORMAN_FILES + K562_FILES],
        plan=effects.plan,
        lfc_labels=rows,
        lfc=np.stack([effects.lfc[label] for label in rows]),
        planted_up=effects.up,
        planted_down=effects.down,
        modules=effects.modules,
    )
    adata.uns["stand_in"] = True
    return adata
