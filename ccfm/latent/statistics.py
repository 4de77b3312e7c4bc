"""Per-dimension feature statistics: frozen normalization and Welford running moments."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ccfm.errors import CCFMError

#: Added to the std so a constant dimension does not divide by zero (as Latent Forcing does).
STD_EPS = 1e-6


@dataclass(frozen=True)
class FrozenStats:
    """Mean and std per feature dimension, fixed before anything is written."""

    mean: np.ndarray  # (D,) float64
    std: np.ndarray  # (D,) float64
    target_std: float  # normalized features have this std on covered positions
    n_positions: int  # covered (cell, gene) positions the statistics came from

    def normalize(self, features: np.ndarray, covered: np.ndarray) -> np.ndarray:
        """z = (f − mean)/(std + eps)·target_std on covered positions; uncovered stay exactly 0.

        features: (B, G, D) float32; covered: (B, G) bool. Returns (B, G, D) float32.
        """
        z = np.zeros(features.shape, dtype=np.float32)
        z[covered] = self.normalize_rows(features[covered])
        return z

    def float32_shift_scale(self) -> tuple[np.ndarray, np.ndarray]:
        """(mean, scale) as float32 (D,): a normalized feature is (f − mean) · scale in float32."""
        return self.mean.astype(np.float32), (self.target_std / (self.std + STD_EPS)).astype(np.float32)

    def normalize_rows(self, rows: np.ndarray) -> np.ndarray:
        """(n, D) float32 features of covered positions, normalized as `normalize` does (the same float32 ops)."""
        mean, scale = self.float32_shift_scale()
        return (rows - mean) * scale

    def to_json(self) -> dict:
        return {
            "mean": self.mean.tolist(),
            "std": self.std.tolist(),
            "target_std": self.target_std,
            "n_positions": self.n_positions,
        }

    @classmethod
    def from_json(cls, raw: dict) -> FrozenStats:
        return cls(np.asarray(raw["mean"]), np.asarray(raw["std"]), float(raw["target_std"]), int(raw["n_positions"]))


@dataclass(frozen=True)
class RunningMoments:
    """Count, mean and sum of squared deviations per dimension; merges exactly (Chan et al.)."""

    count: int
    mean: np.ndarray  # (D,) float64
    m2: np.ndarray  # (D,) float64

    @classmethod
    def empty(cls, dim: int) -> RunningMoments:
        return cls(0, np.zeros(dim), np.zeros(dim))

    @classmethod
    def of(cls, rows: np.ndarray) -> RunningMoments:
        """Moments of rows (K, D)."""
        rows = np.asarray(rows, dtype=np.float64)
        if rows.shape[0] == 0:
            return cls.empty(rows.shape[1])
        mean = rows.mean(axis=0)
        return cls(rows.shape[0], mean, ((rows - mean) ** 2).sum(axis=0))

    @classmethod
    def of_tensor(cls, rows: torch.Tensor) -> RunningMoments:
        """Moments of rows (K, D) on their device, in float64 as `of` (extraction's fp16 rows before they leave
        a GPU; on a CPU, in the thread that runs the model: torch kernels in a second thread make the model's
        OpenMP threads wait, which slowed extraction 2× here)."""
        if rows.shape[0] == 0:
            return cls.empty(rows.shape[1])
        x = rows.double()  # (K, D)
        mean = x.mean(dim=0)
        return cls(rows.shape[0], mean.cpu().numpy(), x.sub_(mean).square_().sum(dim=0).cpu().numpy())

    def merge(self, other: RunningMoments) -> RunningMoments:
        if other.count == 0:
            return self
        if self.count == 0:
            return other
        n = self.count + other.count
        delta = other.mean - self.mean
        mean = self.mean + delta * other.count / n
        m2 = self.m2 + other.m2 + delta**2 * self.count * other.count / n
        return RunningMoments(n, mean, m2)

    @property
    def std(self) -> np.ndarray:
        return np.sqrt(self.m2 / max(1, self.count))

    def to_json(self) -> dict:
        return {"count": self.count, "mean": self.mean.tolist(), "m2": self.m2.tolist()}

    @classmethod
    def from_json(cls, raw: dict) -> RunningMoments:
        return cls(int(raw["count"]), np.asarray(raw["mean"]), np.asarray(raw["m2"]))


def frozen_stats_from(moments: RunningMoments, target_std: float = 1.0) -> FrozenStats:
    """Freeze the moments of the normalization sample's covered positions."""
    if moments.count < 2:
        raise CCFMError(
            f"the normalization sample has {moments.count} covered (expressed, in-vocab) positions; "
            "at least 2 are needed — are the panel genes expressed and in the scGPT vocabulary?"
        )
    return FrozenStats(moments.mean, moments.std, target_std, moments.count)
