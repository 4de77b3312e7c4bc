"""`ccfm fetch-scgpt`: download the whole-human scGPT checkpoint into a folder that is complete or absent.

The three files are staged in `OUT.partial/` (a rerun resumes there: `<file>.part` plus a Range request), checked
against the checksums the user gave, loaded exactly as `ccfm extract` loads them, and only then renamed to OUT.
A wrong checksum or a checkpoint that does not load deletes the staging folder: those bytes are not worth resuming.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

from tqdm import tqdm

from ccfm.config import FetchScgptConfig
from ccfm.errors import CCFMError
from ccfm.latent.fingerprint import file_sha256
from ccfm.scgpt.checkpoint import CHECKPOINT_FILES, ScgptModel, load_scgpt
from ccfm.scgpt.toy import released_args
from pipeline.download import Downloader, parse_checksums, resolve_sources
from pipeline.lock import WriterLock
from pipeline.outputs import CHECKPOINT, OutputPlan, plan_output
from pipeline.progress import progress

log = logging.getLogger(__name__)

FETCH_ORDER = ("args.json", "vocab.json", "best_model.pt")  # small files first: a bad source fails fast


def staging_folder(out: Path) -> Path:
    """Where an unfinished download lives: `OUT.partial`, beside OUT."""
    return out.parent / f"{out.name}.partial"


def _progress_bar(name: str, total: int | None, initial: int) -> tqdm:
    return progress(total=total, initial=initial, desc=name, unit="B", unit_scale=True, unit_divisor=1024)


def _verify_checksums(staging: Path, checksums: dict[str, str]) -> dict[str, str]:
    """sha256 of every staged file; refuses one that differs from the checksum the user gave."""
    digests = {name: file_sha256(staging / name) for name in CHECKPOINT_FILES}
    for name, expected in checksums.items():
        if digests[name] != expected:
            raise CCFMError(
                f"{name} has sha256 {digests[name]}, but --sha256 expects {expected}; the download is corrupt or "
                "another file: check --source and the checksum, then rerun (the download was deleted)"
            )
    return digests


def _validate(staging: Path) -> ScgptModel:
    """The check `ccfm extract` makes: every key loads, every shape matches args.json."""
    try:
        return load_scgpt(staging)
    except CCFMError as err:
        raise CCFMError(f"the downloaded files are not a loadable scGPT checkpoint (deleted): {err}") from err


def _place(staging: Path, output: OutputPlan) -> None:
    """Move the three validated files into OUT through a staging sibling folder renamed into place."""
    with output.writing() as work:
        for name in CHECKPOINT_FILES:
            os.replace(staging / name, work / name)
    shutil.rmtree(staging)


def _report(out: Path, scgpt: ScgptModel, digests: dict[str, str]) -> None:
    log.info(
        "scGPT checkpoint in %s loads: d_model %d, %d layers, vocab %d tokens",
        out,
        scgpt.d_model,
        scgpt.args["nlayers"],
        len(scgpt.vocab),
    )
    released = released_args()
    differing = sorted(k for k in released.keys() | scgpt.args.keys() if released.get(k) != scgpt.args.get(k))
    if differing:
        log.warning("args.json differs from the released whole-human config in %s: is this another model?", differing)
    for name in CHECKPOINT_FILES:
        size = (out / name).stat().st_size
        log.info("%s: %d bytes, sha256 %s (pin it with --sha256 %s=...)", name, size, digests[name], name)


def run(cfg: FetchScgptConfig) -> Path:
    """Download, verify and validate the checkpoint files, then place them as the folder `cfg.out`."""
    out = Path(cfg.out)
    sources = resolve_sources(cfg.sources, cfg.drive_url)
    checksums = parse_checksums(cfg.sha256)
    output = plan_output(out, CHECKPOINT, overwrite=cfg.overwrite, staged=True)  # before any transfer
    staging = staging_folder(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    downloader = Downloader(out=out, timeout=cfg.timeout, progress=_progress_bar)
    with WriterLock(staging):
        staging.mkdir(exist_ok=True)
        try:
            for name in FETCH_ORDER:
                log.info("%s from %s", name, sources[name].url)
                if not downloader.fetch(sources[name], staging / name):
                    log.info("%s: already complete in %s", name, staging)
        except CCFMError:
            if not any(staging.iterdir()):  # nothing arrived: nothing to resume
                staging.rmdir()
            raise
        try:
            digests = _verify_checksums(staging, checksums)
            scgpt = _validate(staging)
        except CCFMError:
            shutil.rmtree(staging)
            raise
        _place(staging, output)
    _report(out, scgpt, digests)
    return out
