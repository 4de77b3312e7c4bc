"""Self-describing training checkpoints, written atomically, with a `last` pointer.

`checkpoints/step-NNNNNNNN.pt` is written to a temporary name, fsynced and renamed; only then is
`checkpoints/last.json` (itself written by write-then-rename) moved to point at it, so a run killed
mid-write never leaves a half-written checkpoint behind as `last`.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import torch

from ccfm.atomic import write_bytes_atomic, write_json_atomic
from ccfm.errors import CCFMError

CHECKPOINT_FORMAT = 1


def checkpoint_dir(run: Path) -> Path:
    return Path(run) / "checkpoints"


def save_checkpoint(run: Path, step: int, payload: dict[str, Any]) -> Path:
    folder = checkpoint_dir(run)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"step-{step:08d}.pt"
    buffer = io.BytesIO()
    torch.save({**payload, "format": CHECKPOINT_FORMAT, "step": step}, buffer)
    write_bytes_atomic(path, buffer.getvalue())
    write_json_atomic(folder / "last.json", {"step": step, "file": path.name})
    return path


def last_checkpoint(run: Path) -> Path | None:
    pointer = checkpoint_dir(run) / "last.json"
    if not pointer.is_file():
        return None
    return checkpoint_dir(run) / json.loads(pointer.read_text())["file"]


def resolve_checkpoint(run: Path, which: str = "last") -> Path:
    """`last` or a path; refuses a run folder without a checkpoint."""
    if which != "last":
        path = Path(which)
        if not path.is_file():
            raise CCFMError(f"checkpoint {path} does not exist; pass --checkpoint last or an existing .pt file")
        return path
    path = last_checkpoint(run)
    if path is None or not path.is_file():
        raise CCFMError(f"run folder {run} has no checkpoint yet; train it with `ccfm train ... --out {run}`")
    return path


def load_checkpoint(path: Path) -> dict[str, Any]:
    try:
        payload = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # truncated or foreign files raise many types
        raise CCFMError(
            f"cannot read checkpoint {path} ({type(err).__name__}); it is damaged or not a CCFM "
            "checkpoint — use another one or retrain"
        ) from err
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise CCFMError(f"{path} is not a CCFM checkpoint of format {CHECKPOINT_FORMAT}")
    return payload
