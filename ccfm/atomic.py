"""Write-then-rename helpers: a file is either complete and durable, or absent."""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import Any


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(path: Path) -> None:
    """fsync every file under `path` (and `path` itself if it is a file)."""
    path = Path(path)
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    for file in files:
        with open(file, "rb") as handle:
            os.fsync(handle.fileno())


def write_bytes_atomic(path: Path, payload: bytes) -> None:
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        with open(tmp, "wb") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:  # disk full, kill by signal handler, ...: leave nothing half-written
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def write_h5ad_atomic(adata: Any, out: Path) -> None:
    """Write an AnnData to a temporary file beside `out`, then rename: no reader sees a half-written file."""
    # A fresh unique name rather than mkstemp: mkstemp's 0600 mode would survive the rename.
    tmp = out.with_name(f".{out.name}.{uuid.uuid4().hex}.tmp.h5ad")
    try:
        adata.write_h5ad(tmp)
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_json_atomic(path: Path, obj: Any) -> None:
    write_bytes_atomic(path, json.dumps(obj, indent=2, sort_keys=True).encode())
