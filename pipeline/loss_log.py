"""`loss.csv` and `loss.png` in a run folder."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

COLUMNS = ("step", "loss", "expr_mse", "latent_mse", "mmd", "grad_norm", "lr", "data_wait_s")


class LossLog:
    """Rows per step, appended in memory and flushed at checkpoints; a resumed run drops rows past its start."""

    def __init__(self, path: Path, keep_until: int) -> None:
        self.path = Path(path)
        self.rows: list[dict[str, float]] = []
        if keep_until > 0 and self.path.is_file():
            with open(self.path, newline="") as handle:
                rows = [{**{k: float(v) for k, v in r.items()}, "step": int(r["step"])} for r in csv.DictReader(handle)]
            self.rows = [r for r in rows if r["step"] <= keep_until]  # steps stay integers when rewritten

    def append(self, step: int, values: dict[str, float]) -> None:
        self.rows.append({"step": step, **{k: values[k] for k in COLUMNS[1:]}})

    def flush(self) -> None:
        tmp = self.path.with_suffix(".csv.tmp")
        with open(tmp, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=COLUMNS)
            writer.writeheader()
            writer.writerows(self.rows)
        tmp.replace(self.path)

    def plot(self, out: Path, stand_in: bool) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        if not self.rows:
            return
        steps = np.array([r["step"] for r in self.rows])
        fig, axes = plt.subplots(1, 3, figsize=(12, 3.2))
        window = max(1, len(steps) // 50)
        for ax, key in zip(axes, ("expr_mse", "latent_mse", "mmd"), strict=True):
            values = np.array([r[key] for r in self.rows])
            ax.plot(steps, values, alpha=0.3, lw=0.8)
            if len(values) >= window:
                smooth = np.convolve(values, np.ones(window) / window, mode="valid")
                ax.plot(steps[window - 1 :], smooth, lw=1.5)
            ax.set_title(key)
            ax.set_xlabel("step")
        title = "training losses" + (" — STAND-IN data/scGPT" if stand_in else "")
        fig.suptitle(title)
        fig.tight_layout()
        fig.savefig(out, dpi=110)
        plt.close(fig)
