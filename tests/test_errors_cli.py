"""The bad-input catalog (docs/errors.md), through the real CLI: exit code 1, one `error:` line naming the problem
and the fix, no traceback, and nothing half-written left behind. Test names follow the catalog's rows."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import anndata as ad
import pytest
import torch
from clitools import ok, refused, tiny_extract_args
from factories import tiny_gears_adata, write_h5ad


@pytest.fixture(scope="module")
def env(cli_env: dict[str, Path]) -> dict[str, Path]:
    return cli_env


# --- scGPT checkpoint ----------------------------------------------------------------------------------------


def test_panel_with_no_gene_in_the_vocab(env: dict, tmp_path: Path) -> None:
    data = write_h5ad(tiny_gears_adata(), tmp_path / "g.h5ad")  # symbols G000..G039: not human genes
    refused(
        "extract",
        data,
        "--scgpt",
        env["scgpt"],
        "--out",
        tmp_path / "s.zarr",
        "--genes",
        "10",
        "--device",
        "cpu",
        match="only 0 of 10 panel genes (0.0%) are in the scGPT vocabulary",
    )
    assert not (tmp_path / "s.zarr").exists()


def test_panel_mostly_outside_the_vocab(env: dict, tmp_path: Path) -> None:
    adata = ad.read_h5ad(env["data"])
    adata.var["gene_name"] = adata.var["gene_name"].str.lower()  # 'actb': another case than the vocabulary's
    data = write_h5ad(adata, tmp_path / "lower.h5ad")
    refused(*tiny_extract_args(data, env["scgpt"], tmp_path / "s.zarr", 32),
            match="match in another letter case")  # fmt: skip
    assert not (tmp_path / "s.zarr").exists()


def _broken_checkpoint(env: dict, tmp_path: Path) -> Path:
    folder = tmp_path / "scgpt"
    shutil.copytree(env["scgpt"], folder)
    return folder


def _extract_with(env: dict, tmp_path: Path, folder: Path, match: str) -> None:
    refused(
        "extract",
        env["data"],
        "--scgpt",
        folder,
        "--out",
        tmp_path / "s.zarr",
        "--genes",
        "24",
        "--device",
        "cpu",
        match=match,
    )
    assert not (tmp_path / "s.zarr").exists()


def test_scgpt_folder_missing_a_file(env: dict, tmp_path: Path) -> None:
    folder = _broken_checkpoint(env, tmp_path)
    (folder / "vocab.json").unlink()
    _extract_with(env, tmp_path, folder, "vocab.json")


def _edit_state(folder: Path, edit) -> None:
    state = torch.load(folder / "best_model.pt", weights_only=True)
    edit(state)
    torch.save(state, folder / "best_model.pt")


def test_state_dict_with_a_dropped_tensor(env: dict, tmp_path: Path) -> None:
    folder = _broken_checkpoint(env, tmp_path)
    key = next(k for k in torch.load(folder / "best_model.pt", weights_only=True) if "linear1.weight" in k)
    _edit_state(folder, lambda s: s.__setitem__(key.replace("linear1", "linear_renamed"), s.pop(key)))
    _extract_with(env, tmp_path, folder, "would not load")


def test_state_dict_with_a_reshaped_tensor(env: dict, tmp_path: Path) -> None:
    folder = _broken_checkpoint(env, tmp_path)
    key = next(k for k in torch.load(folder / "best_model.pt", weights_only=True) if "linear1.weight" in k)
    _edit_state(folder, lambda s: s.__setitem__(key, s[key][:-1]))
    _extract_with(env, tmp_path, folder, "would not load")


def test_args_json_disagrees_with_the_weights(env: dict, tmp_path: Path) -> None:
    folder = _broken_checkpoint(env, tmp_path)
    args = json.loads((folder / "args.json").read_text())
    args["nlayers"] += 2
    (folder / "args.json").write_text(json.dumps(args))
    _extract_with(env, tmp_path, folder, "nlayers")


def test_truncated_best_model(env: dict, tmp_path: Path) -> None:
    folder = _broken_checkpoint(env, tmp_path)
    payload = (folder / "best_model.pt").read_bytes()
    (folder / "best_model.pt").write_bytes(payload[: len(payload) // 2])
    _extract_with(env, tmp_path, folder, "best_model.pt")


# --- latent store ---------------------------------------------------------------------------------------------


def _train(env: dict, tmp_path: Path, *extra: object, match: str, data: Path | None = None) -> None:
    refused(
        "train",
        env["store"],
        "--data",
        data or env["data"],
        "--out",
        tmp_path / "run",
        "--preset",
        "tiny",
        "--steps",
        "2",
        "--batch-size",
        "4",
        "--workers",
        "1",
        "--device",
        "cpu",
        *extra,
        match=match,
    )
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_store_from_another_checkpoint(env: dict, tmp_path: Path) -> None:
    _train(env, tmp_path, "--scgpt", env["other_scgpt"], match="another scGPT checkpoint")


def test_store_from_another_panel_or_settings(env: dict, tmp_path: Path) -> None:
    out = tmp_path / "store.zarr"
    shutil.copytree(env["store"], out)
    refused(
        "extract",
        env["data"],
        "--scgpt",
        env["scgpt"],
        "--out",
        out,
        "--genes",
        "20",
        "--resume",
        "--shard-cells",
        "32",
        "--device",
        "cpu",
        match="cannot resume",
    )


def test_store_from_other_data(env: dict, tmp_path: Path) -> None:
    other = write_h5ad(tiny_gears_adata(cells_per_condition=12, genes=json_genes(env), seed=9), tmp_path / "other.h5ad")
    _train(env, tmp_path, match="with different expression", data=other)


def json_genes(env: dict) -> list[str]:
    return ad.read_h5ad(env["data"], backed="r").var["gene_name"].astype(str).tolist()


def _damaged_store(env: dict, tmp_path: Path) -> tuple[dict, Path]:
    store = tmp_path / "store.zarr"
    shutil.copytree(env["store"], store)
    return {**env, "store": store}, store / "features" / "c" / "1" / "0"


def test_store_with_a_missing_shard(env: dict, tmp_path: Path) -> None:
    env, shard = _damaged_store(env, tmp_path)
    shard.unlink()
    _train(env, tmp_path, match="missing or truncated shard")


def test_store_with_a_corrupted_shard(env: dict, tmp_path: Path) -> None:
    env, shard = _damaged_store(env, tmp_path)
    shard.write_bytes(os.urandom(shard.stat().st_size))  # same size: only reading (or a checksum) can tell
    _train(env, tmp_path, match="is damaged")
    ok(
        "extract",
        env["data"],
        "--scgpt",
        env["scgpt"],
        "--out",
        env["store"],
        "--genes",
        "24",
        "--norm-cells",
        "64",
        "--shard-cells",
        "32",
        "--device",
        "cpu",
        "--resume",
    )  # resume checks checksums and rebuilds the shard
    assert shard.read_bytes() == (env["root"] / "store.zarr" / "features" / "c" / "1" / "0").read_bytes()


def test_store_without_its_features_array(env: dict, tmp_path: Path) -> None:
    env, _ = _damaged_store(env, tmp_path)
    shutil.rmtree(env["store"] / "features")
    _train(env, tmp_path, match=f"rebuild it: `ccfm extract {env['data']} --scgpt {env['scgpt']} --out")


def test_store_of_an_older_format(env: dict, tmp_path: Path) -> None:
    env, _ = _damaged_store(env, tmp_path)
    meta = json.loads((env["store"] / "zarr.json").read_text())
    meta["attributes"]["format_version"] = 1  # the dense (N, G, D) layout
    (env["store"] / "zarr.json").write_text(json.dumps(meta))
    _train(env, tmp_path, match="has format version 1, this CCFM reads 2 (only the covered positions")


def test_incomplete_store(env: dict, tmp_path: Path) -> None:
    env, _ = _damaged_store(env, tmp_path)
    (env["store"] / "progress" / "complete.json").unlink()
    _train(env, tmp_path, match="is incomplete")


# --- runs, checkpoints, splits, generation ---------------------------------------------------------------------


def test_checkpoint_from_another_panel(env: dict, tmp_path: Path) -> None:
    other = next((env["run20"] / "checkpoints").glob("step-*.pt"))
    refused(
        "generate",
        env["run"],
        "--checkpoint",
        other,
        "--out",
        tmp_path / "p.h5ad",
        "--device",
        "cpu",
        match="another gene panel",
    )
    assert not (tmp_path / "p.h5ad").exists()


def test_run_folder_without_a_checkpoint(env: dict, tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    for name in ("run.json", "split.json"):
        shutil.copy(env["run"] / name, run / name)
    refused("generate", run, "--device", "cpu", match="has no checkpoint yet")
    refused("generate", tmp_path / "nothing", "--device", "cpu", match="is not a run folder")


def test_requested_perturbation_not_in_the_data(env: dict, tmp_path: Path) -> None:
    (tmp_path / "want.txt").write_text("G001+G999\n")
    refused(
        "generate",
        env["run"],
        "--perturbations",
        tmp_path / "want.txt",
        "--out",
        tmp_path / "p.h5ad",
        "--device",
        "cpu",
        match="not in",
    )
    assert not (tmp_path / "p.h5ad").exists()


def test_split_file_naming_unknown_conditions(env: dict, tmp_path: Path) -> None:
    (tmp_path / "test.txt").write_text("ACTB+XYZ1\n")
    _train(env, tmp_path, "--split", "file", "--split-file", tmp_path / "test.txt", match="not in the data")
