"""The layer rule: `ccfm/` (the library) imports neither `pipeline/` nor `cli`; `pipeline/` does not import `cli`.

One module stands above the pipeline: the Python API façade `ccfm/api.py` (re-exported lazily by `ccfm`), which
nothing below it imports."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
FORBIDDEN = {"ccfm": ("pipeline", "cli", "bench"), "pipeline": ("cli", "bench", "ccfm.api")}
FACADE = Path("ccfm/api.py")


def imported_modules(source: str) -> set[str]:
    """Every module an import statement in `source` names (function-level imports included)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def violations(package: str) -> list[str]:
    found = []
    for path in sorted((REPO / package).rglob("*.py")):
        if path.relative_to(REPO) == FACADE:
            continue
        for module in imported_modules(path.read_text()):
            if any(module == f or module.startswith(f + ".") for f in FORBIDDEN[package]):
                found.append(f"{path.relative_to(REPO)} imports {module}")
    return found


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_no_layer_imports_a_layer_above_it(package: str) -> None:
    assert violations(package) == []


def test_the_rule_sees_function_level_imports() -> None:
    source = "import os\nfrom ccfm.config import X\ndef f():\n    from pipeline import train\n    import cli\n"
    assert imported_modules(source) == {"os", "ccfm.config", "pipeline", "cli"}


def test_only_the_facade_and_the_package_root_import_the_facade() -> None:
    users = [
        path.relative_to(REPO)
        for package in ("ccfm", "pipeline")
        for path in sorted((REPO / package).rglob("*.py"))
        if "ccfm.api" in imported_modules(path.read_text()) or "from ccfm import api" in path.read_text()
    ]
    assert users == [Path("ccfm/__init__.py")]
