"""What a latent store says about itself (its zarr attributes), as a typed record.

`ccfm extract` writes one; `ccfm train` reads the data file and schema from it, so a store is all a training
run needs to be pointed at. Paths are recorded absolute (stores written before that keep them as typed, and
are read as such).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from ccfm.config import SchemaOverrides
from ccfm.errors import CCFMError
from ccfm.latent.fingerprint import StoreFingerprint

SCHEMA_FIELDS = tuple(f.name for f in fields(SchemaOverrides))


@dataclass(frozen=True)
class StoreRecord:
    fingerprint: StoreFingerprint
    frozen_stats: dict[str, Any]  # FrozenStats.to_json()
    config: dict[str, Any]  # the ExtractConfig it was built with, as JSON
    data: Path  # the perturbation .h5ad it was extracted from
    scgpt: Path  # the scGPT checkpoint folder
    stand_in: dict[str, bool] = field(default_factory=dict)  # {"data": ..., "scgpt": ...}
    provenance: dict[str, Any] = field(default_factory=dict)
    panel_coverage: float = 0.0  # share of the panel in the scGPT vocabulary

    @property
    def schema(self) -> SchemaOverrides:
        """The schema overrides extraction was given (None fields: detected)."""
        raw = self.config.get("schema") or {}
        return SchemaOverrides(**{k: raw.get(k) for k in SCHEMA_FIELDS})

    @property
    def seed(self) -> int:
        return int(self.config.get("seed", 0))

    def to_attrs(self) -> dict[str, Any]:
        return {
            "config": self.config,
            "fingerprint": self.fingerprint.to_json(),
            "frozen_stats": self.frozen_stats,
            "provenance": self.provenance,
            "panel_coverage": self.panel_coverage,
            "stand_in": self.stand_in,
            "source": {"data": str(self.data), "scgpt": str(self.scgpt)},
        }

    @classmethod
    def from_attrs(cls, attrs: dict[str, Any], where: Path | str = "the store") -> StoreRecord:
        try:
            source = attrs.get("source") or {}
            config = attrs.get("config") or {}
            return cls(
                fingerprint=StoreFingerprint(**attrs["fingerprint"]),
                frozen_stats=attrs["frozen_stats"],
                config=config,
                data=Path(source.get("data") or config["data"]),
                scgpt=Path(source.get("scgpt") or config["scgpt"]),
                stand_in={k: bool(v) for k, v in (attrs.get("stand_in") or {}).items()},
                provenance=attrs.get("provenance") or {},
                panel_coverage=float(attrs.get("panel_coverage", 0.0)),
            )
        except (KeyError, TypeError, ValueError) as err:
            raise CCFMError(
                f"{where} has unreadable attributes ({type(err).__name__}: {err}); rebuild it with `ccfm extract`"
            ) from err
