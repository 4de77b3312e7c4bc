"""Where a stage writes: what may be replaced, what never may, and replacing without a window of loss.

`--overwrite` means "replace the earlier result of this command", never "empty this path". A path is replaced
only when it is recognisably the same command's artifact (a run folder with its run.json and nothing else, a
latent store with its attributes, a predictions file CCFM wrote, ...) and it neither is nor holds an input of
the command; anything else is refused with one line saying what is there. A replaced folder is rebuilt in a
staging sibling (`OUT.staging`) and swapped in at the end, so a run that fails leaves the old result intact.

Every stage writes the same way: `plan = plan_output(...)` before any work, then `with plan.writing(...) as
work:` around the work (`work` is where to write; the result is published when the block ends).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import h5py

from ccfm.errors import CCFMError, Interrupted
from ccfm.scgpt.checkpoint import CHECKPOINT_FILES
from pipeline.runtime import DistContext

# Files CCFM itself leaves beside what it writes: write-then-rename temporaries and writer locks.
_OWN_TEMPORARY = re.compile(r"^\..+\.tmp(\.h5ad)?$|.+\.lock$|^\.ccfm-staging$")
_SHOWN = 4  # foreign entries named in a refusal


@dataclass(frozen=True)
class Artifact:
    """One command's kind of output and how to recognise it on disk."""

    noun: str  # what it is called in messages: "run folder", "latent store", ...
    command: str  # the command that writes it: "ccfm train"
    folder: bool  # a folder (True) or a single file
    recognise: Callable[[Path], str | None]  # None when `path` is one; else what is there instead


def _foreign(folder: Path, allowed: Callable[[Path], bool]) -> str | None:
    others = sorted(p.name for p in folder.iterdir() if not (allowed(p) or _OWN_TEMPORARY.match(p.name)))
    if not others:
        return None
    more = f" and {len(others) - _SHOWN} more" if len(others) > _SHOWN else ""
    return f"it holds files CCFM did not write there ({', '.join(others[:_SHOWN])}{more})"


def _json_object(path: Path) -> dict:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def _h5ad_uns(path: Path) -> set[str]:
    try:
        with h5py.File(path, "r") as handle:
            return set(handle["uns"].keys()) if "uns" in handle else set()
    except (OSError, ValueError):
        return set()


def _is_predictions(path: Path) -> str | None:
    if not path.is_file():
        return "it is not a file"
    return None if "ccfm" in _h5ad_uns(path) else "it is not a predictions file CCFM wrote (no uns['ccfm'])"


def _is_simulation(path: Path) -> str | None:
    if not path.is_file():
        return "it is not a file"
    uns = _h5ad_uns(path)
    return None if {"simulation", "stand_in"} <= uns else "it is not a data set `ccfm simulate` wrote"


REPORT_FILES = {"report.md", "summary.csv", "metrics.csv", "metrics.png", "pca.png", "evaluate_config.json"}


def _is_report(path: Path) -> str | None:
    if not (path / "evaluate_config.json").is_file():
        return "it has no evaluate_config.json"
    return _foreign(path, lambda p: p.name in REPORT_FILES or p.is_dir())  # one sub-folder per scored method


SCREEN_FILES = {"screen.json", "pairs.csv", "screen.png", "chunks"}


def _is_screen(path: Path) -> str | None:
    if "screen" not in _json_object(path / "screen.json"):
        return "it has no screen.json of `ccfm screen`"
    return _foreign(path, lambda p: p.name in SCREEN_FILES)


RUN_FILES = {"run.json", "split.json", "loss.csv", "loss.png", "checkpoints"}


def _is_run(path: Path) -> str | None:
    if "train_config" not in _json_object(path / "run.json"):
        return "it has no run.json of `ccfm train`"
    downstream = (PREDICTIONS.recognise, REPORT.recognise, SCREEN.recognise)  # what later stages write into a run
    return _foreign(path, lambda p: p.name in RUN_FILES or any(r(p) is None for r in downstream))


STORE_ENTRIES = {"zarr.json", "features", "covered", "obs_names", "cell_labels", "genes", "cell_hashes"}
STORE_ENTRIES |= {"vocab_ids", "progress"}


def _is_store(path: Path) -> str | None:
    attrs = _json_object(path / "zarr.json").get("attributes")
    if not isinstance(attrs, dict) or not {"fingerprint", "frozen_stats"} <= set(attrs):
        return "it has no zarr.json with a CCFM store's attributes"
    return _foreign(path, lambda p: p.name in STORE_ENTRIES)


def _is_checkpoint(path: Path) -> str | None:
    if not any((path / name).is_file() for name in CHECKPOINT_FILES):
        return f"it has none of {', '.join(CHECKPOINT_FILES)}"
    return _foreign(path, lambda p: p.name in CHECKPOINT_FILES)


SIMULATION = Artifact("simulated data set", "ccfm simulate", False, _is_simulation)
CHECKPOINT = Artifact("scGPT checkpoint folder", "ccfm toy-scgpt / fetch-scgpt", True, _is_checkpoint)
STORE = Artifact("latent store", "ccfm extract", True, _is_store)
RUN = Artifact("run folder", "ccfm train", True, _is_run)
PREDICTIONS = Artifact("predictions file", "ccfm generate", False, _is_predictions)
REPORT = Artifact("report folder", "ccfm evaluate", True, _is_report)
SCREEN = Artifact("screen folder", "ccfm screen", True, _is_screen)


def _holds(outer: Path, inner: Path) -> bool:
    return outer == inner or outer in inner.parents


def _refuse_protected(out: Path, inputs: Iterable[Path | None]) -> None:
    """Never replace the current folder, one above it, a file-system root or home, or a path holding an input."""
    resolved = out.resolve()
    if resolved == Path(resolved.anchor) or resolved == Path.home().resolve():
        raise CCFMError(f"--out {out} is {resolved}; CCFM never replaces that: name a new folder for the output")
    if _holds(resolved, Path.cwd().resolve()):
        raise CCFMError(f"--out {out} holds the current folder; CCFM never replaces that: name a new folder")
    for given in inputs:
        if given is not None and _holds(resolved, Path(given).resolve()):
            raise CCFMError(
                f"--out {out} holds this command's input {given}; CCFM never replaces an input: choose another --out"
            )


def _check_replaceable(out: Path, artifact: Artifact) -> None:
    if out.is_dir() != artifact.folder:
        shape = "a folder" if out.is_dir() else "a file"
        raise CCFMError(
            f"{out} is {shape}, not a {artifact.noun} of `{artifact.command}`; CCFM replaces only its own "
            "outputs: choose another --out"
        )
    why = artifact.recognise(out)
    if why is not None:
        raise CCFMError(
            f"{out} exists and is not a {artifact.noun} of `{artifact.command}` ({why}); CCFM replaces only its "
            "own outputs: choose another --out, or move those files away"
        )


def _is_empty_folder(path: Path) -> bool:
    return path.is_dir() and not any(path.iterdir())


STAGING_MARK = ".ccfm-staging"  # inside a staging folder until it is swapped in: marks it as ours to remove


@dataclass(frozen=True)
class OutputPlan:
    """Where a stage writes (`work`) and where the result ends up (`out`)."""

    out: Path  # the path the user named
    work: Path  # where the stage writes: `out` itself, or a staging sibling renamed to `out` at the end
    artifact: Artifact

    @property
    def replacing(self) -> bool:
        """True when an earlier result stays in `out` until `publish`."""
        return self.work != self.out and self.out.exists() and not _is_empty_folder(self.out)

    def begin(self) -> None:
        """Make the staging folder (rank 0 only, before any work); a leftover one is removed only when it is
        marked as ours or is itself this artifact."""
        if self.work == self.out:
            return
        if self.work.exists():
            ours = (self.work / STAGING_MARK).is_file() or self.artifact.recognise(self.work) is None
            if not (ours or _is_empty_folder(self.work)):
                raise CCFMError(
                    f"{self.work} is in the way of staging the new {self.artifact.noun}; move it away and rerun"
                )
            shutil.rmtree(self.work)
        self.work.mkdir(parents=True)
        (self.work / STAGING_MARK).touch()

    def publish(self) -> Path:
        """Move the staged result to `out` (rank 0 only); an earlier result is removed only after the swap."""
        if self.work == self.out:
            return self.out
        (self.work / STAGING_MARK).unlink(missing_ok=True)
        if _is_empty_folder(self.out):
            self.out.rmdir()
        if not self.out.exists():
            os.replace(self.work, self.out)
            return self.out
        _check_replaceable(self.out, self.artifact)  # it may have changed while the stage ran
        retired = self.out.with_name(f".{self.out.name}.retired-{uuid.uuid4().hex[:12]}")
        os.replace(self.out, retired)
        os.replace(self.work, self.out)
        shutil.rmtree(retired)
        return self.out

    def interrupted(self, resume: str) -> Interrupted:
        """What a Ctrl-C leaves: the untouched earlier output when replacing, else `resume` (how to continue)."""
        if self.replacing:
            return Interrupted(
                f"interrupted; the earlier {self.artifact.noun} {self.out} is untouched (the partial new one is in "
                f"{self.work}, and the next --overwrite starts it over)"
            )
        return Interrupted(f"interrupted; {resume}")

    def discard(self) -> None:
        """Remove what is left of the staging folder after a failure (nothing after `publish`)."""
        if self.work != self.out:
            shutil.rmtree(self.work, ignore_errors=True)

    @contextmanager
    def writing(self, resume: str | None = None, ctx: DistContext | None = None) -> Iterator[Path]:
        """Stage (rank 0), yield where to write, publish (rank 0) when the block ends without an error.

        A resumable stage names how to continue (`resume`): its partial work is kept when it fails, and Ctrl-C
        becomes that advice (or, when replacing, that the earlier output is untouched). Any other stage's partial
        output is removed. With `ctx`, the other ranks wait for rank 0's staging and never publish."""
        main = ctx is None or ctx.is_main
        if ctx is None:
            self.begin()
        else:
            ctx.main_first(self.begin)
        try:
            yield self.work
        except KeyboardInterrupt:
            if resume is None:
                self.discard()
                raise
            raise self.interrupted(resume) from None
        except BaseException:
            if resume is None and main:
                self.discard()
            raise
        if main:
            self.publish()


def staging_path(out: Path) -> Path:
    return out.with_name(f"{out.name}.staging")


def plan_output(
    out: Path,
    artifact: Artifact,
    *,
    overwrite: bool,
    inputs: Iterable[Path | None] = (),
    resume: bool = False,
    staged: bool = False,
    hint: str = "",
) -> OutputPlan:
    """Check `out` before any work and say where to write; touches nothing (call `begin`, then `publish`).

    Refuses (CCFMError) an existing `out` unless it is resumed, or `overwrite` is set and it is `artifact` holding
    no input. A folder that replaces an earlier one, and any folder when `staged`, is written in a staging sibling
    and renamed at `publish`; a file is written beside and renamed over (`write_*_atomic`). `hint` is added to
    the "already exists" refusal (e.g. "--resume to continue it").
    """
    out = Path(out)
    if not artifact.folder and out.is_dir():
        raise CCFMError(f"--out {out} is a folder; name the {artifact.noun} to write, e.g. {out / 'out.h5ad'}")
    exists = out.exists() and not _is_empty_folder(out)
    if exists and not resume:
        if not overwrite:
            options = f"{hint} or " if hint else ""
            raise CCFMError(f"{out} already exists; pass {options}--overwrite to replace it, or choose another --out")
        _refuse_protected(out, inputs)
        _check_replaceable(out, artifact)
    if artifact.folder and ((exists and not resume) or staged):
        return OutputPlan(out, staging_path(out), artifact)
    return OutputPlan(out, out, artifact)
