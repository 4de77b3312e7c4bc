"""The configs' shared value checks: one line naming the option, the rule and what arrived."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

from ccfm.errors import CCFMError

MAX_SEED = 2**32 - 1  # numpy and torch generators take seeds in [0, 2**32)


def need(ok: bool, option: str, rule: str, value: Any) -> None:
    """Refuse an option value outside its range: one line naming the option, the rule and what arrived."""
    if not ok:
        raise CCFMError(f"{option} must be {rule}, got {value!r}")


def int_in(value: int, option: str, low: int, high: int | None = None) -> None:
    rule = f"an integer in [{low}, {high}]" if high is not None else f"an integer ≥ {low}"
    ok = isinstance(value, int) and value >= low and (high is None or value <= high)
    need(ok, option, rule, value)


def real_in(value: float, option: str, low: float, high: float | None = None, *, open_low: bool = False) -> None:
    bracket = "(" if open_low else "["
    rule = f"a number in {bracket}{low}, {high}]" if high is not None else f"a number {'>' if open_low else '≥'} {low}"
    ok = isinstance(value, (int, float)) and math.isfinite(value)
    ok = ok and (value > low if open_low else value >= low) and (high is None or value <= high)
    need(ok, option, rule, value)


def one_of(value: str, option: str, choices: tuple[str, ...]) -> None:
    need(value in choices, option, f"one of {', '.join(choices)}", value)


def to_json_dict(cfg: Any) -> dict[str, Any]:
    """A config as plain JSON types (Paths become strings, tuples lists)."""

    def convert(value: Any) -> Any:
        if isinstance(value, Path):
            return str(value)
        if isinstance(value, (list, tuple)):
            return [convert(v) for v in value]
        if isinstance(value, dict):
            return {k: convert(v) for k, v in value.items()}
        return value

    return {k: convert(v) for k, v in dataclasses.asdict(cfg).items()}
