"""`--overwrite` replaces only the same command's own earlier result: never a folder of the user's, never a path
holding an input, never the current folder or `/`; a replacement is staged and swapped in, so a failed run leaves
the old result as it was. Every refusal is one `error:` line, and every file involved is unchanged after it."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
from clitools import ok, refused, tiny_train_args


def digest(root: Path) -> dict[str, str]:
    """Every file and folder under `root` with the sha256 of its bytes: equal digests, untouched trees."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "folder"
        for p in sorted(root.rglob("*"))
    }


@pytest.fixture
def project(cli_env: dict[str, Path], tmp_path: Path) -> Path:
    """A user's folder: the data set and their own files."""
    folder = tmp_path / "myproject"
    (folder / "figures").mkdir(parents=True)
    shutil.copy(cli_env["data"], folder / "data.h5ad")
    (folder / "notes.md").write_text("my notes")
    (folder / "figures" / "umap.png").write_bytes(b"\x89PNG user figure")
    return folder


def _train(data: Path, cache: Path, out: Path, *extra: object) -> list[object]:
    return [*tiny_train_args(data, cache, out, steps=3, checkpoint_every=3), "--workers", "0", *extra]


def test_train_overwrite_into_the_data_folder_is_refused_and_nothing_changes(
    cli_env: dict[str, Path], project: Path
) -> None:
    before = digest(project)
    refused(
        *_train(project / "data.h5ad", cli_env["store"], project, "--overwrite"), match="holds this command's input"
    )
    assert digest(project) == before


@pytest.mark.parametrize("where", ["unrelated", "data_folder", "current", "root"])
def test_train_overwrite_refuses_every_folder_it_did_not_write(
    cli_env: dict[str, Path], project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    unrelated, current = tmp_path / "unrelated", tmp_path / "analysis"
    for folder in (unrelated, current):
        folder.mkdir()
        (folder / "table.csv").write_text("a,b\n1,2\n")
    data = project / "data.h5ad"
    out, match = {
        "unrelated": (unrelated, "not a run folder of `ccfm train` (it has no run.json"),
        "data_folder": (data.parent, "holds this command's input"),
        "current": (Path("."), "holds the current folder"),
        "root": (Path("/"), "CCFM never replaces that"),
    }[where]
    monkeypatch.chdir(current)
    before = {folder: digest(folder) for folder in (project, unrelated, current)}
    refused(*_train(data, cli_env["store"], out, "--overwrite"), match=match)
    assert {folder: digest(folder) for folder in (project, unrelated, current)} == before


def test_every_command_refuses_to_overwrite_what_it_did_not_write(cli_env: dict[str, Path], tmp_path: Path) -> None:
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "results.txt").write_text("keep")
    user_h5ad = shutil.copy(cli_env["data"], tmp_path / "user.h5ad")  # a data set, not a CCFM output
    run = tmp_path / "run"
    shutil.copytree(cli_env["run"], run)
    before = {"mine": digest(mine), "user": digest(tmp_path)}
    for args, match in (
        (("simulate", "norman", "--out", user_h5ad, "--scale", "0.01"), "not a simulated data set"),
        (("toy-scgpt", "--out", mine), "not a scGPT checkpoint folder"),
        (("fetch-scgpt", "--out", mine), "not a scGPT checkpoint folder"),
        (("extract", cli_env["data"], "--scgpt", cli_env["scgpt"], "--out", mine), "not a latent store"),
        (("generate", run, "--out", user_h5ad, "--device", "cpu"), "not a predictions file"),
        (("evaluate", run, "--out", mine), "not a report folder"),
        (("evaluate", run, "--out", run), "holds this command's input"),
    ):
        refused(*args, "--overwrite", match=match)
    assert {"mine": digest(mine), "user": digest(tmp_path)} == before


def test_a_run_folder_holding_a_users_file_is_not_replaced(cli_env: dict[str, Path], tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(cli_env["run"], run)
    (run / "my_analysis.ipynb").write_text("{}")
    before = digest(run)
    refused(*_train(cli_env["data"], cli_env["store"], run, "--overwrite"), match="my_analysis.ipynb")
    assert digest(run) == before


def test_a_failed_overwrite_keeps_the_old_run_and_a_good_one_replaces_it(
    cli_env: dict[str, Path], tmp_path: Path
) -> None:
    run = tmp_path / "run"
    shutil.copytree(cli_env["run"], run)
    before = digest(run)
    refused(*_train(cli_env["data"], cli_env["store"], run, "--overwrite", "--batch-size", "100000"), match="larger")
    assert digest(run) == before
    ok(*_train(cli_env["data"], cli_env["store"], run, "--overwrite"))
    assert json.loads((run / "run.json").read_text())["train_config"]["steps"] == 3  # the old run had 2
    assert not list(tmp_path.glob("run.*")) and not list(tmp_path.glob(".run.*"))  # no staging left behind


def test_an_empty_folder_is_used_as_new(cli_env: dict[str, Path], tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    ok(*_train(cli_env["data"], cli_env["store"], tmp_path / "empty"))
    assert (tmp_path / "empty" / "run.json").is_file()
