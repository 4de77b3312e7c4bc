"""The scGPT adapter: torchtext stand-in, toy checkpoint in the released layout, checked loading, refusals."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import torch

from ccfm.config import ToyScgptConfig
from ccfm.errors import CCFMError
from ccfm.scgpt.checkpoint import (
    ENCODER_PREFIXES,
    build_scgpt_model,
    checkpoint_fingerprint,
    load_scgpt,
    map_panel_to_vocab,
)
from ccfm.scgpt.torchtext_vocab import Vocab, register_torchtext_stand_in, vocab
from ccfm.scgpt.toy import SPECIAL_TOKENS, build_toy_checkpoint, census_gene_symbols
from ccfm.scgpt.upstream import load_matching, scgpt_classes
from pipeline import toy_scgpt

D_MODEL, LAYERS = 32, 2  # the toy_scgpt_dir fixture's sizes


def _state(folder: Path) -> dict[str, torch.Tensor]:
    return torch.load(folder / "best_model.pt", map_location="cpu", weights_only=True)


def _json(path: Path) -> dict:
    return json.loads(path.read_text())


# --- shapes and layout ---------------------------------------------------------------------------------


def test_toy_has_the_released_key_names_and_vocab_layout(toy_scgpt_dir: Path, toy_scgpt_panel: list[str]) -> None:
    state = _state(toy_scgpt_dir)
    for layer in range(LAYERS):
        assert state[f"transformer_encoder.layers.{layer}.self_attn.Wqkv.weight"].shape == (
            3 * D_MODEL,
            D_MODEL,
        )
        assert state[f"transformer_encoder.layers.{layer}.self_attn.Wqkv.bias"].shape == (3 * D_MODEL,)
    assert not [k for k in state if "in_proj_" in k]
    assert state["flag_encoder.weight"].shape == (2, D_MODEL)
    assert any(k.startswith("mvc_decoder.") for k in state)  # released args: MVC=true

    token2idx = _json(toy_scgpt_dir / "vocab.json")
    n = len(token2idx)
    assert [token2idx[s] for s in SPECIAL_TOKENS] == [n - 3, n - 2, n - 1]
    assert sorted(token2idx.values()) == list(range(n))
    assert state["encoder.embedding.weight"].shape == (n, D_MODEL)
    census = set(census_gene_symbols())
    genes = [t for t in token2idx if t not in SPECIAL_TOKENS]
    assert set(genes) <= census
    assert {g for g in toy_scgpt_panel if g in census} <= set(genes)
    assert len(genes) == len({g for g in toy_scgpt_panel if g in census}) + 2_000

    args = _json(toy_scgpt_dir / "args.json")
    assert args["stand_in"] is True and "NOT the released weights" in args["description"]
    assert (args["embsize"], args["d_hid"], args["nlayers"], args["nheads"]) == (D_MODEL, D_MODEL, LAYERS, 4)
    assert (args["n_bins"], args["pad_value"], args["MVC"], args["input_emb_style"]) == (
        51,
        -2,
        True,
        "continuous",
    )


def test_toy_loads_completely_and_as_scgpts_own_load_pretrained_loads_it(toy_scgpt_dir: Path) -> None:
    state = _state(toy_scgpt_dir)
    renamed = {k.replace("Wqkv.", "in_proj_"): v for k, v in state.items()}
    build = lambda: build_scgpt_model(_json(toy_scgpt_dir / "args.json"), _json(toy_scgpt_dir / "vocab.json"), 123)  # noqa: E731
    model = build()
    load_matching(model, state)
    checked = [k for k in model.state_dict() if k.startswith(ENCODER_PREFIXES)]
    assert len(checked) == 3 + 6 + 12 * LAYERS  # encoder, value encoder, 12 tensors per layer
    for key in checked:
        assert torch.equal(model.state_dict()[key], renamed[key]), key
    scgpt = pytest.importorskip("scgpt")  # the whole package (its training stack installed): the same tensors
    upstream = build()
    scgpt.utils.load_pretrained(upstream, state, strict=False, verbose=False)
    ours, theirs = model.state_dict(), upstream.state_dict()
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)


def test_load_scgpt_returns_a_frozen_model(toy_scgpt_dir: Path) -> None:
    rng_before = torch.get_rng_state()
    loaded = load_scgpt(toy_scgpt_dir)
    assert torch.equal(rng_before, torch.get_rng_state())  # the library never moves the global RNG
    token2idx = _json(toy_scgpt_dir / "vocab.json")
    assert (loaded.d_model, loaded.n_bins, loaded.pad_value) == (D_MODEL, 51, -2.0)
    assert (loaded.pad_id, loaded.cls_id) == (token2idx["<pad>"], token2idx["<cls>"])
    assert len(loaded.vocab) == len(token2idx) and loaded.vocab["<pad>"] == loaded.pad_id
    assert not loaded.model.training
    assert not any(p.requires_grad for p in loaded.model.parameters())
    assert loaded.fingerprint == load_scgpt(toy_scgpt_dir).fingerprint


@pytest.mark.filterwarnings("ignore:The PyTorch API of nested tensors:UserWarning")
def test_encode_gives_per_gene_features_and_zero_padding(toy_scgpt_dir: Path) -> None:
    loaded = load_scgpt(toy_scgpt_dir)
    genes = [loaded.vocab[g] for g in loaded.vocab.get_itos()[:5]]
    pad, cls = loaded.pad_id, loaded.cls_id
    src = torch.tensor([[cls, *genes[:3], pad, pad], [cls, *genes]])  # (B, L) = (2, 6)
    values = torch.tensor([[-2.0, 1, 7, 50, -2, -2], [-2.0, 3, 3, 9, 20, 1]])  # bins; <cls>/pad get pad_value
    padding = src == pad  # (B, L)
    with torch.inference_mode():
        out = loaded.model._encode(src, values, padding)  # (B, L, D)
        unpadded = loaded.model._encode(src[:1, :4], values[:1, :4], padding[:1, :4])  # (1, 4, D)
    assert out.shape == (2, 6, D_MODEL) and out.dtype == torch.float32
    # Measured: eval + no-grad takes PyTorch's nested-tensor fast path, which returns exact zeros at pads.
    assert torch.count_nonzero(out[padding]) == 0
    assert bool((out[~padding].abs().sum(-1) > 0).all())
    torch.testing.assert_close(out[0, :4], unpadded[0])  # padding does not change a cell's features


# --- the torchtext stand-in --------------------------------------------------------------------------------


def test_stand_in_vocab_semantics() -> None:
    v = vocab(OrderedDict([("b", 3), ("a", 3), ("rare", 1)]), min_freq=2, specials=["<pad>"])
    assert v.get_itos() == ["<pad>", "b", "a"]
    v.append_token("c")
    v.insert_token("z", 1)  # in the middle: later tokens shift by one
    assert v.get_itos() == ["<pad>", "z", "b", "a", "c"]
    assert v.get_stoi() == {"<pad>": 0, "z": 1, "b": 2, "a": 3, "c": 4}
    assert v["a"] == 3 and "a" in v and "nope" not in v and len(v) == 5
    assert v.lookup_token(1) == "z" and v.lookup_tokens([4, 0]) == ["c", "<pad>"]
    with pytest.raises(RuntimeError, match="not found and default index is not set"):
        v["nope"]
    v.set_default_index(0)
    assert v.get_default_index() == 0 and v(["a", "nope"]) == [3, 0] == v.lookup_indices(["a", "nope"])
    with pytest.raises(RuntimeError, match="already exists"):
        v.insert_token("a", 5)
    with pytest.raises(RuntimeError, match="out of bounds"):
        v.insert_token("new", 7)
    with pytest.raises(RuntimeError, match="out of bounds"):
        v.lookup_token(5)
    assert vocab(OrderedDict(x=1), specials=["<eoc>"], special_first=False).get_itos() == ["x", "<eoc>"]


def test_stand_in_is_registered_once_and_scgpt_uses_it() -> None:
    first, second = register_torchtext_stand_in(), register_torchtext_stand_in()
    assert first == second
    if first:  # no working torchtext in this environment (the expected case beside torch >= 2.4)
        assert sys.modules["torchtext.vocab"].Vocab is Vocab
    gene_vocab_cls = scgpt_classes().GeneVocab
    assert issubclass(gene_vocab_cls, sys.modules["torchtext.vocab"].Vocab)


def test_a_broken_torchtext_binary_is_replaced_by_the_stand_in(tmp_path: Path) -> None:
    broken = tmp_path / "site" / "torchtext"
    broken.mkdir(parents=True)
    (broken / "__init__.py").write_text("")  # the package imports; its compiled part does not
    (broken / "vocab.py").write_text("raise OSError('libtorchtext.so: undefined symbol')\n")
    code = (
        "from ccfm.scgpt.torchtext_vocab import register_torchtext_stand_in as reg;"
        "assert reg() and reg();"
        "import torchtext.vocab as tv;"
        "assert tv.vocab({'g': 1}, specials=['<pad>'])['g'] == 1 and tv.Vocab.__module__.startswith('ccfm')"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path / "site"), os.getcwd()])}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr


def test_gene_vocab_from_file_on_the_60k_census_vocab() -> None:
    path = scgpt_classes().tokenizer_dir / "default_census_vocab.json"
    gene_vocab = scgpt_classes().GeneVocab.from_file(path)
    token2idx = _json(path)
    assert len(gene_vocab) == len(token2idx) == 60_694
    assert gene_vocab.get_stoi() == token2idx
    for special in SPECIAL_TOKENS:  # what scgpt's embed_data does with a vocab lacking specials
        gene_vocab.append_token(special)
    assert gene_vocab["<cls>"] == 60_695 and gene_vocab.lookup_token(60_696) == "<eoc>"


def test_importing_ccfm_does_not_import_scgpt_and_its_classes_come_without_its_training_stack() -> None:
    code = (
        "import sys, ccfm, ccfm.latent, ccfm.scgpt.checkpoint, ccfm.scgpt.toy;"
        "assert 'scgpt' not in sys.modules and 'torchtext' not in sys.modules, 'eager import';"
        "from ccfm.scgpt.upstream import scgpt_classes; c = scgpt_classes();"
        "assert c.TransformerModel.__name__ == 'TransformerModel' and c.GeneVocab.__name__ == 'GeneVocab';"
        "heavy = {'scgpt', 'datasets', 'scanpy', 'IPython', 'anndata'} & set(sys.modules);"
        "assert not heavy, heavy"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


# --- panel mapping -----------------------------------------------------------------------------------------


def test_map_panel_to_vocab_counts_coverage(toy_scgpt_dir: Path) -> None:
    token2idx = _json(toy_scgpt_dir / "vocab.json")
    known = list(token2idx)[:4]
    panel = [known[0], "NOT_A_GENE", known[1], "<cls>", known[2], known[3], "ENSG00000187634"]
    mapping = map_panel_to_vocab(panel, load_scgpt(toy_scgpt_dir).vocab)
    assert mapping.vocab_ids.dtype == np.int64
    np.testing.assert_array_equal(mapping.vocab_ids, [0, -1, 1, -1, 2, 3, -1])
    assert (mapping.n_covered, mapping.coverage) == (4, pytest.approx(4 / 7))
    assert mapping.absent == ("NOT_A_GENE", "<cls>", "ENSG00000187634")


def test_map_panel_refuses_a_panel_outside_the_vocab(toy_scgpt_dir: Path) -> None:
    with pytest.raises(CCFMError, match=r"only 0 of 2 panel genes \(0.0%\) are in .* pass --gene-col"):
        map_panel_to_vocab(["ENSG00000187634", "ENSG00000188976"], _json(toy_scgpt_dir / "vocab.json"))


# --- round trips and determinism ---------------------------------------------------------------------------


def test_same_seed_gives_identical_files_and_global_rng_is_untouched(tmp_path: Path) -> None:
    genes = ["SAMD11", "NOC2L", "KLHL17", "GATA1", "MYC"]
    torch.manual_seed(7)
    expected_next = torch.rand(3)
    torch.manual_seed(7)
    first = build_toy_checkpoint(tmp_path / "a", d_model=16, layers=1, heads=2, genes=genes, seed=5)
    assert torch.equal(torch.rand(3), expected_next)
    second = build_toy_checkpoint(tmp_path / "b", d_model=16, layers=1, heads=2, genes=genes, seed=5)
    other = build_toy_checkpoint(tmp_path / "c", d_model=16, layers=1, heads=2, genes=genes, seed=6)
    for name in ("best_model.pt", "vocab.json", "args.json"):
        assert (first / name).read_bytes() == (second / name).read_bytes(), name
    fingerprint = checkpoint_fingerprint(_state(first), _json(first / "args.json"), _json(first / "vocab.json"))
    assert fingerprint == load_scgpt(second).fingerprint != load_scgpt(other).fingerprint
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]  # no partial folders left


def test_pipeline_takes_symbols_from_gene_name_and_refuses_to_overwrite(tmp_path: Path) -> None:
    symbols = ["SAMD11", "NOC2L", "NOT_A_GENE"]
    var = pd.DataFrame({"gene_name": symbols}, index=["ENSG00000187634", "ENSG00000188976", "ENSG0"])
    ad.AnnData(X=np.ones((2, 3), dtype=np.float32), var=var).write_h5ad(tmp_path / "data.h5ad")
    cfg = ToyScgptConfig(out=tmp_path / "toy", d_model=16, layers=1, heads=2, genes_from=tmp_path / "data.h5ad")
    out = toy_scgpt.run(cfg)
    token2idx = _json(out / "vocab.json")
    assert {"SAMD11", "NOC2L"} <= set(token2idx) and "NOT_A_GENE" not in token2idx
    assert len(token2idx) == 2 + 2_000 + len(SPECIAL_TOKENS)
    with pytest.raises(CCFMError, match="already exists; pass --overwrite to replace it"):
        toy_scgpt.run(cfg)
    toy_scgpt.run(ToyScgptConfig(**{**cfg.__dict__, "overwrite": True, "seed": 1}))
    assert _json(out / "args.json")["seed"] == 1
    (out / "notes.txt").write_text("user data")
    with pytest.raises(CCFMError, match=r"not a scGPT checkpoint folder .* \(it holds files CCFM did not write"):
        toy_scgpt.run(ToyScgptConfig(**{**cfg.__dict__, "overwrite": True}))
    assert (out / "notes.txt").read_text() == "user data" and _json(out / "args.json")["seed"] == 1


# --- refusals ------------------------------------------------------------------------------------------


def _edit_state(edit: Callable[[dict[str, torch.Tensor]], None]) -> Callable[[Path], None]:
    def apply(folder: Path) -> None:
        state = _state(folder)
        edit(state)
        torch.save(state, folder / "best_model.pt")

    return apply


def _edit_json(name: str, edit: Callable[[dict], None]) -> Callable[[Path], None]:
    def apply(folder: Path) -> None:
        content = _json(folder / name)
        edit(content)
        (folder / name).write_text(json.dumps(content))

    return apply


def _truncate(folder: Path) -> None:
    data = (folder / "best_model.pt").read_bytes()
    (folder / "best_model.pt").write_bytes(data[: len(data) // 2])


def _rename_key(state: dict[str, torch.Tensor]) -> None:
    state["transformer_encoder.layers.0.linear1.weight_renamed"] = state.pop(
        "transformer_encoder.layers.0.linear1.weight"
    )


def _shrink(state: dict[str, torch.Tensor]) -> None:
    state["transformer_encoder.layers.1.norm1.weight"] = state["transformer_encoder.layers.1.norm1.weight"][:16]


def _rename_cls(token2idx: dict) -> None:
    token2idx["<CLS>"] = token2idx.pop("<cls>")


REFUSALS = {
    "missing vocab": (lambda f: (f / "vocab.json").unlink(), r"vocab\.json: missing"),
    "truncated weights": (_truncate, r"best_model\.pt: unreadable or truncated checkpoint"),
    "renamed tensor": (
        _edit_state(_rename_key),
        r"1 scGPT encoder tensor\(s\) would not load: "
        r"transformer_encoder\.layers\.0\.linear1\.weight missing \(expected shape \(32, 32\)\)",
    ),
    "reshaped tensor": (
        _edit_state(_shrink),
        r"transformer_encoder\.layers\.1\.norm1\.weight has shape \(16,\), expected \(32,\)",
    ),
    "nlayers disagrees": (
        _edit_json("args.json", lambda a: a.update(nlayers=3)),
        r"args\.json: nlayers=3 but best_model\.pt has nlayers=2",
    ),
    "embsize disagrees": (
        _edit_json("args.json", lambda a: a.update(embsize=64, nheads=4)),
        r"embsize=64 but best_model\.pt has embsize=32",
    ),
    "vocab size disagrees": (
        _edit_json("vocab.json", lambda v: v.update({"EXTRA": len(v)})),
        r"vocab\.json: \d+ tokens but best_model\.pt's encoder\.embedding\.weight has \d+ rows",
    ),
    "no <cls>": (_edit_json("vocab.json", _rename_cls), r"the vocabulary has no '<cls>' token"),
    "invalid json": (lambda f: (f / "args.json").write_text("{nlayers: 2"), r"args\.json: not valid JSON"),
}


@pytest.mark.parametrize("case", list(REFUSALS))
def test_load_scgpt_refuses_a_broken_folder(case: str, toy_scgpt_dir: Path, tmp_path: Path) -> None:
    corrupt, message = REFUSALS[case]
    folder = Path(shutil.copytree(toy_scgpt_dir, tmp_path / "checkpoint"))
    corrupt(folder)
    with pytest.raises(CCFMError, match=message):
        load_scgpt(folder)


def test_load_scgpt_refuses_a_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(CCFMError, match="no such scGPT checkpoint folder"):
        load_scgpt(tmp_path / "absent")


def test_toy_builder_refuses_bad_sizes_and_ensembl_genes(tmp_path: Path) -> None:
    with pytest.raises(CCFMError, match="d_model=30 must be divisible by heads=4"):
        build_toy_checkpoint(tmp_path / "x", d_model=30, layers=1, heads=4, genes=None, seed=0)
    with pytest.raises(CCFMError, match="none of the 1 requested genes .* Ensembl ids"):
        build_toy_checkpoint(tmp_path / "x", d_model=16, layers=1, heads=2, genes=["ENSG00000187634"], seed=0)
    assert not (tmp_path / "x").exists()
