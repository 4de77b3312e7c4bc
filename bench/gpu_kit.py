"""What the GPU machine has, and what CCFM carries to it: one list for `scripts/gpu_wheels.sh`, `bench/gpu.sh`
and the rehearsal test.

The GPU machine runs Python 3.12 with CUDA torch, torchdiffeq, typer, scipy, pandas, h5py and matplotlib (and
what they depend on), reaches no package registry and takes at most 64 MiB of files per run. extract → train →
generate needs beside those the distributions in KIT, at the versions installed here (what the tests ran with);
scgpt is installed without its dependencies, as everywhere (DESIGN.md §4), and CCFM loads only its model and
tokenizer files (ccfm/scgpt/upstream.py).

    python -m bench.gpu_kit               # KIT pinned to this environment's versions, one requirement a line
    python -m bench.gpu_kit --allowed     # the top-level modules a run on the GPU machine can import

`block_imports()` makes this interpreter refuse every other third-party module, as the GPU machine would: the
rehearsal test runs `bench/gpu.sh --rehearse` under it (tests/gpu_machine/sitecustomize.py).
"""

from __future__ import annotations

import argparse
import importlib.abc
import importlib.metadata as md
import re
import sys

MACHINE = ("torch", "torchdiffeq", "typer", "scipy", "pandas", "h5py", "matplotlib")  # and their dependencies
KIT = (
    "anndata", "array-api-compat", "legacy-api-wrap", "natsort", "scverse-misc", "session-info2",
    "zarr", "donfig", "pyyaml", "google-crc32c", "numcodecs", "tqdm", "scgpt",
)  # fmt: skip
PROJECT = ("ccfm", "pipeline", "bench", "cli")


def _name(requirement: str) -> str:
    return re.split(r"[ ;<>=!~\[(]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def with_dependencies(names: tuple[str, ...]) -> set[str]:
    """The distributions named and everything they require (extras left out), as installed here."""
    seen: set[str] = set()
    todo = [n.lower() for n in names]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        try:
            requires = md.requires(name) or []
        except md.PackageNotFoundError:
            continue
        todo += [_name(r) for r in requires if "extra ==" not in r]
    return seen


def allowed_distributions() -> set[str]:
    """The machine's distributions with their dependencies, and the kit's (normalized names)."""
    return with_dependencies(MACHINE) | {k.lower() for k in KIT}


def allowed_modules() -> set[str]:
    """Top-level modules of the machine's distributions (with their dependencies), the kit's and the project's."""
    dists = allowed_distributions()
    modules = {m for m, owners in md.packages_distributions().items()
               if any(o.lower().replace("_", "-") in dists for o in owners)}  # fmt: skip
    return modules | set(PROJECT) | set(sys.stdlib_module_names)


class _MachineFinder(importlib.abc.MetaPathFinder):
    """One of the interpreter's finders that does not see the top-level modules the GPU machine lacks: importing
    one fails and `importlib.util.find_spec` answers None, as if it were not installed."""

    def __init__(self, inner: importlib.abc.MetaPathFinder, allowed: set[str], dists: set[str]) -> None:
        self.inner, self.allowed, self.dists = inner, allowed, dists

    def find_spec(self, fullname, path=None, target=None):  # noqa: ANN001, ANN201
        top = fullname.split(".")[0]
        if path is None and top not in self.allowed and not top.startswith("_"):
            return None
        return self.inner.find_spec(fullname, path, target)

    def find_distributions(self, *args, **kwargs):  # noqa: ANN002, ANN003, ANN201 - importlib.metadata's lookup
        found = getattr(self.inner, "find_distributions", None)
        for dist in found(*args, **kwargs) if found else ():
            if _name(dist.metadata["Name"] or "") in self.dists or dist.metadata["Name"] in ("ccfm",):
                yield dist

    def invalidate_caches(self) -> None:
        if hasattr(self.inner, "invalidate_caches"):
            self.inner.invalidate_caches()


def block_imports() -> None:
    """From now on, this interpreter finds no top-level third-party module the GPU machine would not have."""
    allowed, dists = allowed_modules(), allowed_distributions()
    sys.meta_path[:] = [_MachineFinder(finder, allowed, dists) for finder in sys.meta_path]


def pinned_kit() -> list[str]:
    return [f"{name}=={md.version(name)}" for name in KIT]


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--allowed", action="store_true", help="print the importable top-level modules instead")
    args = p.parse_args(argv)
    print("\n".join(sorted(allowed_modules()) if args.allowed else pinned_kit()))


if __name__ == "__main__":
    main()
