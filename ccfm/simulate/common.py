"""Pieces both stand-in simulators share: real K562 gene parameters, NB counts, planted interactions.

A simulated cell c of a condition with log-fold-change vector L (G,) gets expected counts
    mu_c = lib_c * q_c / sum(q_c),   q_cg = p_g * exp(s_c * L_g + z_c . W_g - |W_g|^2 / 2)
with p the baseline relative expression, lib_c a log-normal library size, s_c the cell's response
strength (mean 1) and z_c ~ N(0, I) latent cell-state factors with sparse loadings W (K, G) that give
genes a real co-expression structure. Counts ~ NB(mu_c, theta_g), drawn as gamma-Poisson.
Everything random comes from a `np.random.Generator` passed in; nothing touches global RNG.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any, Literal

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from ccfm.errors import CCFMError

InteractionKind = Literal["additive", "synergy", "suppression", "dominance", "neomorphic"]
NON_ADDITIVE: tuple[InteractionKind, ...] = ("synergy", "suppression", "dominance", "neomorphic")
K562_FILES = (
    "k562/K562_Gasperini_baseline_expression_stats.csv.gz",
    "k562/K562_10x_baseline_expression_stats.csv.gz",
)
#: Gasperini/10x size estimates below this come from rarely detected genes and are unreliable;
#: clipping avoids absurd all-zero-or-huge gamma draws.
MIN_NB_SIZE = 0.1
#: Quantile band of known genes that genes without K562 parameters are drawn from. Genes missing
#: from both K562 tables are mostly rarely detected lncRNAs; with the lowest quartile the simulated
#: Norman X is ~8% non-zero, as the real GEARS file (8.11%).
MISSING_GENE_QUANTILES = (0.0, 0.25)
NEOMORPHIC_GENES = 20  # genes a neomorphic pair newly moves
QC_ROUNDS = 5  # redraws of cells outside the real total-count range
CELL_CHUNK = 2048  # cells per dense block: bounds memory at ~0.1 GB per array for 5,045 genes


def read_resource_csv(relative_path: str, **kwargs: Any) -> pd.DataFrame:
    """A CSV bundled in `ccfm.resources` (gzip when the name ends in .gz)."""
    source = resources.files("ccfm.resources").joinpath(relative_path)
    with source.open("rb") as handle:
        compression = "gzip" if relative_path.endswith(".gz") else None
        return pd.read_csv(handle, compression=compression, **kwargs)


def check_size_arguments(scale: float, min_cells: int) -> None:
    """Refuse a scale or cell floor that cannot give a data set."""
    if not (isinstance(scale, (int, float)) and 0 < scale <= 1):
        raise CCFMError(f"scale must be in (0, 1] (a fraction of the real cell counts), got {scale!r}")
    if not (isinstance(min_cells, (int, np.integer)) and min_cells >= 1):
        raise CCFMError(f"min_cells must be an integer >= 1, got {min_cells!r}")


def scaled_cell_count(n_real: int, scale: float, min_cells: int) -> int:
    return max(int(min_cells), int(round(n_real * scale)))


@dataclass(frozen=True)
class LibrarySizeModel:
    """Log-normal UMI totals per cell over the simulated genes, clipped to an observed range."""

    median: float  # median UMIs per cell
    sigma: float  # sd of log library size
    low: float  # clip: smallest total
    high: float  # clip: largest total

    def sample(self, n_cells: int, rng: np.random.Generator) -> np.ndarray:
        lib = self.median * np.exp(self.sigma * rng.standard_normal(n_cells))  # (n,)
        return np.clip(lib, self.low, self.high)


@dataclass(frozen=True)
class GeneBaseline:
    """Per-gene K562 negative-binomial parameters for a chosen gene list."""

    relative_expression: np.ndarray  # (G,) fraction of a cell's UMIs, sums to 1 over these genes
    size: np.ndarray  # (G,) NB size theta
    source: np.ndarray  # (G,) 'K562_Gasperini', 'K562_10x' or 'imputed'


def k562_parameters() -> pd.DataFrame:
    """Both real K562 tables indexed by Ensembl id; Gasperini wins where both have a gene (it covers more)."""
    tables = []
    for path in K562_FILES:
        table = read_resource_csv(path).set_index("response_id")
        table["source"] = path.split("/")[1].removesuffix("_baseline_expression_stats.csv.gz")
        tables.append(table)
    first, second = tables
    return pd.concat([first, second.loc[~second.index.isin(first.index)]])


def k562_baseline(gene_ids: Sequence[str], rng: np.random.Generator, detected: set[str]) -> GeneBaseline:
    """K562 parameters for `gene_ids`; genes in neither table are imputed reproducibly.

    `detected` genes (targets, real top DE genes) are known to be expressed in the real data, so
    when imputed they get the median expression of the known detected genes, not a low draw.
    """
    params = k562_parameters().reindex(list(gene_ids))  # (G, 3), NaN where unknown
    rel = params["relative_expression"].to_numpy(dtype=np.float64)
    size = params["expression_size"].to_numpy(dtype=np.float64)
    known = ~np.isnan(rel)
    source = np.where(known, params["source"].astype(str).to_numpy(), "imputed")
    lo, hi = np.quantile(rel[known], MISSING_GENE_QUANTILES)
    pool = np.sort(rel[known][(rel[known] >= lo) & (rel[known] <= hi)])
    missing = np.flatnonzero(~known)
    rel[missing] = rng.choice(pool, size=missing.size)
    is_detected = np.isin(np.asarray(gene_ids), list(detected))
    if np.any(known & is_detected):
        rel[missing[is_detected[missing]]] = np.median(rel[known & is_detected])
    size[missing] = np.median(size[known])
    return GeneBaseline(rel / rel.sum(), np.clip(size, MIN_NB_SIZE, None), source)


def sparse_programs(
    n_genes: int, n_programs: int, genes_per_program: int, sd: float, rng: np.random.Generator
) -> np.ndarray:
    """(K, G) loadings: each program touches a random gene set with N(0, sd) weights, zero elsewhere."""
    loadings = np.zeros((n_programs, n_genes), dtype=np.float64)  # (K, G)
    for k in range(n_programs):
        genes = rng.choice(n_genes, size=genes_per_program, replace=False)
        loadings[k, genes] = sd * rng.standard_normal(genes_per_program)
    return loadings


@dataclass(frozen=True)
class ExpressionModel:
    """What every condition of one simulated data set shares."""

    baseline: GeneBaseline
    state_loadings: np.ndarray  # (K, G) latent cell-state programs (cell cycle-like co-expression)
    library: LibrarySizeModel
    response_cv: float  # coefficient of variation of a perturbation's strength across cells


def sample_nb(mean: np.ndarray, size: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """NB(mean, size) as gamma-Poisson; mean (n, G), size (G,) -> float32 counts (n, G)."""
    rate = rng.gamma(shape=size[None, :], scale=mean / size[None, :])  # (n, G)
    return rng.poisson(rate).astype(np.float32)  # (n, G)


def _draw_cells(model: ExpressionModel, lfc: np.ndarray, n_cells: int, rng: np.random.Generator) -> np.ndarray:
    """Raw counts (n_cells, G) float32 of cells with log-fold-change `lfc` (G,)."""
    w = model.state_loadings  # (K, G)
    centering = 0.5 * np.sum(w**2, axis=0)  # (G,) keeps E[exp(z.W)] = 1 so p stays the mean profile
    shape = 1.0 / model.response_cv**2
    strength = rng.gamma(shape, 1.0 / shape, size=n_cells)  # (n,) mean 1: cells respond unevenly
    state = rng.standard_normal((n_cells, w.shape[0]))  # (n, K)
    log_p = np.log(model.baseline.relative_expression)  # (G,)
    log_q = log_p[None, :] + strength[:, None] * lfc[None, :] + state @ w - centering  # (n, G)
    q = np.exp(log_q - log_q.max(axis=1, keepdims=True))  # (n, G) shifted for stability; normalized next
    mean = q / q.sum(axis=1, keepdims=True) * model.library.sample(n_cells, rng)[:, None]  # (n, G)
    return sample_nb(mean, model.baseline.size, rng)


def simulate_condition(
    model: ExpressionModel, lfc: np.ndarray, n_cells: int, rng: np.random.Generator
) -> sp.csr_matrix:
    """Raw counts (n_cells, G) float32 CSR for one condition with log-fold-change `lfc` (G,).

    Cells whose drawn total falls outside the library range are redrawn, as QC filtering removed
    such cells from the real files (a few rounds; the rare survivor is kept).
    """
    blocks = []
    for start in range(0, n_cells, CELL_CHUNK):
        counts = _draw_cells(model, lfc, min(CELL_CHUNK, n_cells - start), rng)  # (n, G)
        for _ in range(QC_ROUNDS):
            totals = counts.sum(axis=1)  # (n,)
            outside = np.flatnonzero((totals < model.library.low) | (totals > model.library.high))
            if outside.size == 0:
                break
            counts[outside] = _draw_cells(model, lfc, outside.size, rng)
        blocks.append(sp.csr_matrix(counts))
    return sp.vstack(blocks, format="csr")


def log1p_normalize(counts: sp.csr_matrix) -> sp.csr_matrix:
    """log1p(normalize_total(counts)) with scanpy's default target: the median cell total (as GEARS)."""
    totals = np.asarray(counts.sum(axis=1)).ravel()  # (N,)
    target = np.median(totals[totals > 0])
    factors = np.divide(target, totals, out=np.zeros_like(totals), where=totals > 0)  # (N,)
    x = counts.astype(np.float32, copy=True)
    x.data *= np.repeat(factors, np.diff(x.indptr)).astype(np.float32)
    np.log1p(x.data, out=x.data)
    return x


def cell_barcodes(n_cells: int, rng: np.random.Generator, lanes: int = 8) -> np.ndarray:
    """Unique 10x-like barcodes `ACGT…(16)-lane`, deterministic from `rng`."""
    codes = rng.integers(0, 4**16, size=n_cells, dtype=np.int64) * lanes + rng.integers(0, lanes, n_cells)
    while np.unique(codes).size < n_cells:  # ~1 collision expected at 91k cells: redraw the repeats
        _, first = np.unique(codes, return_index=True)
        repeat = np.setdiff1d(np.arange(n_cells), first)
        codes[repeat] = rng.integers(0, 4**16, size=repeat.size) * lanes + rng.integers(0, lanes, repeat.size)
    digits = (codes[:, None] // lanes >> (2 * np.arange(16)[::-1])) & 3  # (N, 16) base-4 digits
    letters = np.frombuffer(b"ACGT", dtype=np.uint8)[digits].astype(np.uint8)  # (N, 16)
    bases = letters.view("S16").ravel().astype(str)
    return np.char.add(np.char.add(bases, "-"), (codes % lanes + 1).astype(str))


def rank_magnitudes(top: float, n: int) -> np.ndarray:
    """(n,) effect sizes decaying linearly with DE rank: the 10th gene keeps 55% of the top one."""
    return top * (1.0 - 0.05 * np.arange(n))


@dataclass(frozen=True)
class Interaction:
    """How a planted pair combines its two single effects A and B."""

    kind: InteractionKind
    factor: float = 1.0  # synergy / suppression: multiplier on A + B
    dominant: str = ""  # dominance: the token whose effect dominates (0.9 x it + 0.1 x the other)
    program_seed: int = 0  # neomorphic: seeds the new program's genes and sizes
    module: int = -1  # "modules" rule: the factor applies to this module's shared program only

    @property
    def detail(self) -> str:
        """The drawn parameters in words, for the ground-truth record."""
        if self.module >= 0:
            return f"A + B, module {self.module}'s shared program x {self.factor:.3f}"
        if self.kind in ("synergy", "suppression"):
            return f"(A + B) x {self.factor:.3f}"
        if self.kind == "dominance":
            return f"0.9 x {self.dominant} + 0.1 x the other"
        if self.kind == "neomorphic":
            return f"A + B + a new {NEOMORPHIC_GENES}-gene program (seed {self.program_seed})"
        return "A + B"


def plan_interactions(
    pairs: Sequence[tuple[str, str, str]], fraction: float, rng: np.random.Generator
) -> dict[str, Interaction]:
    """{pair label: Interaction}; a `fraction` of pairs (rounded) is non-additive, kinds drawn evenly.

    `pairs` holds (label, token a, token b). Parameters are drawn here, before any cell, so the
    ground truth is fixed by the seed alone.
    """
    n_special = int(round(fraction * len(pairs)))
    special = set(rng.choice(len(pairs), size=n_special, replace=False).tolist())
    plan: dict[str, Interaction] = {}
    for i, (label, a, b) in enumerate(pairs):
        kind = NON_ADDITIVE[int(rng.integers(len(NON_ADDITIVE)))] if i in special else "additive"
        if kind == "synergy":
            plan[label] = Interaction(kind, factor=float(rng.uniform(1.5, 2.0)))
        elif kind == "suppression":
            plan[label] = Interaction(kind, factor=float(rng.uniform(0.3, 0.5)))
        elif kind == "dominance":
            plan[label] = Interaction(kind, dominant=a if rng.random() < 0.5 else b)
        elif kind == "neomorphic":
            plan[label] = Interaction(kind, program_seed=int(rng.integers(2**31)))
        else:
            plan[label] = Interaction("additive")
    return plan


#: The "modules" rule: each perturbed token joins one of N_MODULES hidden modules, and every member's single also
#: moves its module's shared program (MODULE_PROGRAM_GENES genes). A pair of two members moves the shared program
#: by `factor` × (A + B)'s share of it instead of adding it (suppression 0.5: the program moves once, as for one
#: member — saturation; synergy 1.5: three times); every other gene, and every pair across modules, adds.
#: Learnable: two members' singles visibly share the program genes, and a training double of a module shows its
#: factor, which then holds for every unmeasured pair of members.
N_MODULES = 4
MODULE_PROGRAM_GENES = 15
MODULE_PROGRAM_LFC = (0.6, 1.2)  # |LFC| of a shared program gene, drawn per gene, either sign
MODULE_RULES: tuple[tuple[InteractionKind, float], ...] = (
    ("suppression", 0.5),
    ("synergy", 1.5),
    ("suppression", 0.5),
    ("synergy", 1.5),
)


@dataclass(frozen=True)
class Modules:
    """The "modules" rule's ground truth: each token's module and each module's shared program."""

    member: dict[str, int]  # token -> module
    programs: np.ndarray  # (N_MODULES, G) the LFC every member's single adds


def draw_modules(tokens: Sequence[str], candidates: np.ndarray, n_genes: int, rng: np.random.Generator) -> Modules:
    """Modules for `tokens`; each program's genes are drawn from `candidates` (expressed gene indices)."""
    member = {token: int(m) for token, m in zip(sorted(tokens), rng.integers(N_MODULES, size=len(tokens)), strict=True)}
    programs = np.zeros((N_MODULES, n_genes))
    for program in programs:
        genes = rng.choice(candidates, size=MODULE_PROGRAM_GENES, replace=False)
        sizes = rng.uniform(*MODULE_PROGRAM_LFC, MODULE_PROGRAM_GENES)
        program[genes] = sizes * rng.choice([-1.0, 1.0], MODULE_PROGRAM_GENES)
    return Modules(member, programs)


def module_interactions(pairs: Sequence[tuple[str, str, str]], modules: Modules) -> dict[str, Interaction]:
    """{pair label: Interaction}: a pair of two members of one module follows its module's rule on the shared
    program, any other pair is additive."""
    plan: dict[str, Interaction] = {}
    for label, a, b in pairs:
        m = modules.member[a]
        if m == modules.member[b]:
            kind, factor = MODULE_RULES[m]
            plan[label] = Interaction(kind, factor=factor, module=m)
        else:
            plan[label] = Interaction("additive")
    return plan


def combine_pair(
    lfc_a: np.ndarray, lfc_b: np.ndarray, a: str, interaction: Interaction, programs: np.ndarray | None = None
) -> np.ndarray:
    """(G,) log-fold change of pair (a, b) from its singles' (G,) vectors, following `interaction`;
    `programs` (N_MODULES, G): the modules' shared programs, for a pair of one module."""
    if interaction.module >= 0:
        if programs is None:
            raise ValueError("a pair of one module needs the modules' shared programs")
        shared = programs[interaction.module] != 0  # (G,)
        total = lfc_a + lfc_b
        return np.where(shared, interaction.factor * total, total)
    if interaction.kind in ("synergy", "suppression"):
        return interaction.factor * (lfc_a + lfc_b)
    if interaction.kind == "dominance":
        first, second = (lfc_a, lfc_b) if interaction.dominant == a else (lfc_b, lfc_a)
        return 0.9 * first + 0.1 * second
    if interaction.kind == "neomorphic":
        # A program of random genes that the pair, not either single, moves: 0.8-1.5 log units, either way.
        program_rng = np.random.default_rng(interaction.program_seed)
        genes = program_rng.choice(lfc_a.size, size=NEOMORPHIC_GENES, replace=False)
        extra = np.zeros(lfc_a.size)  # (G,)
        extra[genes] = program_rng.uniform(0.8, 1.5, NEOMORPHIC_GENES) * program_rng.choice(
            [-1.0, 1.0], NEOMORPHIC_GENES
        )
        return lfc_a + lfc_b + extra
    return lfc_a + lfc_b


def assemble_anndata(
    blocks: Sequence[sp.csr_matrix], obs: pd.DataFrame, var: pd.DataFrame, rng: np.random.Generator
) -> ad.AnnData:
    """Stack per-condition count blocks (rows in `obs` order), shuffle cells, add log1p X."""
    counts = sp.vstack(list(blocks), format="csr")  # (N, G)
    order = rng.permutation(counts.shape[0])  # real files are not grouped by condition
    counts = counts[order]
    counts.sort_indices()
    adata = ad.AnnData(X=log1p_normalize(counts), obs=obs.iloc[order], var=var)
    adata.layers["counts"] = counts
    return adata


def simulation_record(
    description: str,
    seed: int,
    scale: float,
    min_cells: int,
    sources: Sequence[str],
    plan: dict[str, Interaction],
    lfc_labels: Sequence[str],
    lfc: np.ndarray,
    planted_up: dict[str, list[str]],
    planted_down: dict[str, list[str]],
    modules: Modules | None = None,
) -> dict[str, Any]:
    """The ground truth written to `uns['simulation']`, in types h5ad can store; `modules` for the "modules"
    interaction rule (None: interactions drawn at random per pair)."""
    rule: dict[str, Any] = {"interaction_rule": "random"}
    if modules is not None:
        rule = {
            "interaction_rule": "modules",
            "modules": modules.member,
            "module_programs": modules.programs.astype(np.float32),  # (N_MODULES, G), columns = var
        }
    return {
        **rule,
        "simulated": True,
        "description": description,
        "seed": int(seed),
        "scale": float(scale),
        "min_cells": int(min_cells),
        "source_files": np.asarray(sources, dtype=str),
        "interactions": {label: i.kind for label, i in plan.items()},
        "interaction_details": {label: i.detail for label, i in plan.items()},
        "lfc": lfc.astype(np.float32),  # (P, G) natural-log fold changes of relative abundance, columns = var
        "lfc_labels": np.asarray(lfc_labels, dtype=str),  # (P,) canonical perturbation labels
        "planted_up": {k: np.asarray(v, dtype=str) for k, v in planted_up.items() if v},
        "planted_down": {k: np.asarray(v, dtype=str) for k, v in planted_down.items() if v},
    }
