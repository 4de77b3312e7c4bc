"""Perturbation labels as unordered sets of at most two tokens.

`A+ctrl`, `ctrl+A` and `A` are the same perturbation; `control+DrugX` is DrugX alone; `ctrl`,
`control`, `control+control` and `non-targeting` are the control. A `Perturbation` is hashable and
order-invariant, and renders back to one canonical label.
"""

from __future__ import annotations

from dataclasses import dataclass

from ccfm.errors import CCFMError

MAX_TOKENS = 2
#: Control labels of the known layouts, in order of preference when a data set's control is detected
#: (ccfm/data/schema.py); their tokens, in any case, fill an empty slot, and a label made only of them is the control.
CONTROL_LABELS = ("ctrl", "control", "control+control", "non-targeting", "DMSO", "vehicle")
CONTROL_TOKENS = frozenset(token.lower() for label in CONTROL_LABELS for token in label.split("+"))
SEPARATOR = "+"


@dataclass(frozen=True, order=True)
class Perturbation:
    """An unordered set of ≤ 2 perturbation tokens (genes or drugs); empty means control."""

    tokens: tuple[str, ...]  # sorted, no control tokens, no duplicates

    @property
    def is_control(self) -> bool:
        return not self.tokens

    @property
    def is_double(self) -> bool:
        return len(self.tokens) == 2

    @property
    def label(self) -> str:
        """Canonical label: `ctrl`, `A`, or `A+B` with tokens sorted."""
        return SEPARATOR.join(self.tokens) if self.tokens else "ctrl"

    def __str__(self) -> str:
        return self.label


CONTROL = Perturbation(())


def parse_condition(label: str, control_label: str | None = None) -> Perturbation:
    """Parse one condition label (`A+B`, `A+ctrl`, `ctrl+A`, `control+DrugX`, `ctrl`, ...).

    `control_label` is the data set's own control label (e.g. `non-targeting`); it and the usual
    control words fill empty slots. A repeated token (`A+A`) counts once.
    """
    if not isinstance(label, str) or not label.strip():
        raise CCFMError(f"empty perturbation label {label!r}; every cell needs a condition label")
    raw = label.strip()
    own_control = control_label.strip() if control_label else None  # a padded label in the file still matches
    if own_control is not None and raw == own_control:
        return CONTROL
    control_words = CONTROL_TOKENS | ({own_control.lower()} if own_control else set())
    parts = [p.strip() for p in raw.split(SEPARATOR)]
    if any(not p for p in parts):
        raise CCFMError(
            f"malformed perturbation label {label!r}: empty token around '+'; "
            "expected forms are 'A', 'A+B', 'A+ctrl' or 'ctrl'"
        )
    tokens = sorted({p for p in parts if p.lower() not in control_words})
    if len(tokens) > MAX_TOKENS:
        raise CCFMError(
            f"perturbation label {label!r} has {len(tokens)} tokens; CCFM models at most {MAX_TOKENS} "
            "(one or two genes or drugs). Drop these cells or relabel them."
        )
    return Perturbation(tuple(tokens))


def parse_conditions(labels: list[str], control_label: str | None = None) -> dict[str, Perturbation]:
    """Parse each distinct label once: {raw label: Perturbation}."""
    return {lab: parse_condition(lab, control_label) for lab in dict.fromkeys(labels)}
