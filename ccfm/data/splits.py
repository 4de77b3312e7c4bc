"""Train/test splits over perturbation conditions, deterministic from a seed and saved as JSON.

- `additive`: all singles train; in fold i a seeded fraction (30%) of the doubles is held out.
- `holdout`: held-out doubles and their singles are both unseen (other doubles that contain one of
  those genes still train: the gene is never seen alone).
- `unseen-single`: held-out single perturbations and every double containing one of them.
- `combosciplex`: the fixed ComboSciPlex test set used by scDFM and CellFlow.
- `file`: a user file listing test conditions, one per line.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from ccfm.data.conditions import Perturbation, parse_condition
from ccfm.errors import CCFMError

SplitKind = Literal["additive", "holdout", "unseen-single", "combosciplex", "file"]
SPLIT_KINDS: tuple[str, ...] = ("additive", "holdout", "unseen-single", "combosciplex", "file")
MAX_FOLDS = 10  # a drawn split's fold i is the i-th of these independent seeded draws; fixed splits have fold 0

COMBOSCIPLEX_TEST = (
    "Panobinostat+Crizotinib",
    "Panobinostat+Curcumin",
    "Panobinostat+SRT1720",
    "Panobinostat+Sorafenib",
    "SRT2104+Alvespimycin",
    "control+Alvespimycin",
    "control+Dacinostat",
)


@dataclass(frozen=True)
class Split:
    """Which non-control conditions train and which are held out; controls always train."""

    kind: str  # one of SPLIT_KINDS
    seed: int  # seeds the held-out draw
    fold: int  # fold index (draws differ per fold)
    test_fraction: float  # fraction of the drawn pool held out
    train: tuple[str, ...]  # canonical labels, sorted
    test: tuple[str, ...]  # canonical labels, sorted

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_json(cls, text: str) -> Split:
        raw = json.loads(text)
        return cls(**{**raw, "train": tuple(raw["train"]), "test": tuple(raw["test"])})


def _draw(pool: list[str], fraction: float, seed: int, fold: int) -> set[str]:
    """A seeded `fraction` of `pool` (at least one), different for each fold."""
    if not pool:
        return set()
    rng = np.random.default_rng([seed, fold])
    n = max(1, round(fraction * len(pool)))
    return set(rng.choice(sorted(pool), size=min(n, len(pool)), replace=False).tolist())


def _test_set(
    kind: str, perts: dict[str, Perturbation], fraction: float, seed: int, fold: int, test_file: Path | None
) -> set[str]:
    doubles = [lab for lab, p in perts.items() if p.is_double]
    singles = {p.tokens[0]: lab for lab, p in perts.items() if len(p.tokens) == 1}
    if kind in ("additive", "holdout") and not doubles:
        raise CCFMError(f"the {kind!r} split holds out doubles, but the data have none; use --split unseen-single")
    if kind == "additive":
        return _draw(doubles, fraction, seed, fold)
    if kind == "holdout":
        held = _draw(doubles, fraction, seed, fold)
        return held | {singles[t] for lab in held for t in perts[lab].tokens if t in singles}
    if kind == "unseen-single":
        genes = _draw(sorted(singles), fraction, seed, fold)
        return {lab for lab, p in perts.items() if genes & set(p.tokens)}
    if kind == "combosciplex":
        labels = COMBOSCIPLEX_TEST
    elif kind == "file":
        if test_file is None or not Path(test_file).is_file():
            raise CCFMError(f"split file {test_file} does not exist; pass --split-file with one condition per line")
        labels = [ln.strip() for ln in Path(test_file).read_text().splitlines() if ln.strip()]
    else:
        raise CCFMError(f"unknown split {kind!r}; choose one of {', '.join(SPLIT_KINDS)}")
    wanted = {parse_condition(lab).label for lab in labels}
    unknown = sorted(wanted - set(perts))
    if unknown:
        raise CCFMError(
            f"the {kind} split names {len(unknown)} conditions not in the data ({', '.join(unknown[:5])}); "
            "fix the list or use a data set that has them"
        )
    return wanted


def make_split(
    perturbations: dict[str, Perturbation],
    kind: str = "additive",
    seed: int = 0,
    fold: int = 0,
    test_fraction: float = 0.3,
    test_file: Path | None = None,
) -> Split:
    """Split the non-control conditions of a data set (canonical label -> Perturbation)."""
    if not 0 < test_fraction < 1:
        raise CCFMError(f"test fraction must be in (0, 1), got {test_fraction}")
    if fold < 0:
        raise CCFMError(f"--fold must be ≥ 0, got {fold}")
    perts = {lab: p for lab, p in perturbations.items() if not p.is_control}
    test = _test_set(kind, perts, test_fraction, seed, fold, test_file)
    train = sorted(set(perts) - test)
    if not train or not test:
        raise CCFMError(
            f"the {kind!r} split leaves {len(train)} training and {len(test)} test conditions; both need at least one"
        )
    return Split(
        kind=kind,
        seed=seed,
        fold=fold,
        test_fraction=test_fraction,
        train=tuple(train),
        test=tuple(sorted(test)),
    )
