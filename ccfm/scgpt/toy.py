"""A toy scGPT checkpoint in the released whole-human layout, for tests, the demo and the study.

The released weights cannot be downloaded on these machines. The toy has the same three files, the same tensor
names (flash-attention `self_attn.Wqkv.*`, the extra `flag_encoder.weight`), real gene symbols from the scgpt
wheel's census vocabulary with `<pad>`, `<cls>`, `<eoc>` last, and the released args.json with only the sizes
changed. It is labelled as a stand-in inside args.json ("stand_in": true), so nothing built on it can pass for
real scGPT features. Its weights are random, or (`pretrain`) trained for a few CPU minutes with scGPT's own
masked-expression objective (ccfm.scgpt.pretrain), which args.json then records.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ccfm.atomic import fsync_tree
from ccfm.errors import CCFMError
from ccfm.scgpt.checkpoint import build_scgpt_model
from ccfm.scgpt.upstream import scgpt_classes

SPECIAL_TOKENS = ("<pad>", "<cls>", "<eoc>")  # appended after the genes, as in the release
OTHER_CENSUS_GENES = 2_000  # census genes sampled beside the requested ones: a realistic vocab subset
FLAG_ENCODER_ROWS = 2  # the release carries flag_encoder = nn.Embedding(2, embsize), unused by TransformerModel
FLAG_ENCODER_STD = 0.02


def census_gene_symbols() -> list[str]:
    """The 60,694 gene symbols of the scgpt wheel's census vocab, in id order (= the release's first ids)."""
    tokenizer_dir = scgpt_classes().tokenizer_dir
    token2idx: dict[str, int] = json.loads((tokenizer_dir / "default_census_vocab.json").read_text())
    return sorted(token2idx, key=token2idx.__getitem__)


def released_args() -> dict[str, Any]:
    """The released whole-human args.json bundled in ccfm.resources."""
    text = resources.files("ccfm.resources").joinpath("scgpt", "args.json").read_text()
    return json.loads(text)


def _select_genes(census: list[str], genes: Sequence[str] | None, seed: int) -> list[str]:
    """All census genes, or the requested ones found there plus a seeded sample of others, in census order."""
    if genes is None:
        return list(census)
    wanted = {str(g) for g in genes}
    found = [g for g in census if g in wanted]
    if not found:
        raise CCFMError(
            f"none of the {len(wanted)} requested genes (first: {sorted(wanted)[:3]}) is in the scGPT census "
            "vocabulary; are they Ensembl ids? give gene symbols (e.g. var['gene_name'])"
        )
    others = [g for g in census if g not in wanted]
    picked = np.random.default_rng(seed).choice(len(others), min(OTHER_CENSUS_GENES, len(others)), replace=False)
    chosen = set(found) | {others[i] for i in picked}
    return [g for g in census if g in chosen]


def _toy_args(d_model: int, layers: int, heads: int, seed: int) -> dict[str, Any]:
    args = released_args()
    args.update(embsize=d_model, d_hid=d_model, nlayers=layers, nheads=heads)  # released: d_hid == embsize
    args["stand_in"] = True
    args["seed"] = seed
    args["description"] = (
        f"Randomly initialised toy scGPT (seed {seed}) in the released whole-human layout, built by "
        "ccfm.scgpt.toy. NOT the released weights: its features carry no biology."
    )
    return args


#: pretrain(model, token2idx) trains the freshly built model in place and returns what to record in args.json
Pretrainer = Callable[[torch.nn.Module, dict[str, int]], dict[str, Any]]


def _toy_state_dict(model: torch.nn.Module, args: dict[str, Any], seed: int) -> dict[str, torch.Tensor]:
    """The model's state dict under the release's tensor names."""
    state: dict[str, torch.Tensor] = {}
    for key, tensor in model.state_dict().items():
        # The release was trained with flash-attn, whose fused projection is named Wqkv.
        state[key.replace("self_attn.in_proj_", "self_attn.Wqkv.")] = tensor.detach().clone()
    generator = torch.Generator().manual_seed(seed)
    flag = torch.randn(FLAG_ENCODER_ROWS, args["embsize"], generator=generator) * FLAG_ENCODER_STD
    state["flag_encoder.weight"] = flag
    return state


def build_toy_checkpoint(
    out: Path,
    d_model: int,
    layers: int,
    heads: int,
    genes: Sequence[str] | None,
    seed: int,
    pretrain: Pretrainer | None = None,
) -> Path:
    """Write a toy scGPT checkpoint (best_model.pt, vocab.json, args.json) into the folder `out` (made if
    absent; `ccfm toy-scgpt` stages it beside its final place and renames it there).

    `genes`: symbols that must be in the vocab (those found in the census vocab are kept, plus a seeded sample
    of ~2,000 others); None keeps the whole census vocab. Without `pretrain` the weights are the seeded random
    initialization and the same arguments give byte-identical files; with it they are what it trained, and its
    record goes to args.json["pretraining"].
    """
    out = Path(out)
    for name, value in (("d_model", d_model), ("layers", layers), ("heads", heads)):
        if value < 1:
            raise CCFMError(f"{name} must be a positive integer, got {value}")
    if d_model % heads:
        raise CCFMError(f"d_model={d_model} must be divisible by heads={heads}; e.g. d_model={heads * 16}")

    symbols = _select_genes(census_gene_symbols(), genes, seed)
    token2idx = {token: i for i, token in enumerate([*symbols, *SPECIAL_TOKENS])}
    args = _toy_args(d_model, layers, heads, seed)
    model = build_scgpt_model(args, token2idx, seed=seed)
    if pretrain is not None:
        args["pretraining"] = pretrain(model, token2idx)
        args["description"] = (
            f"Toy scGPT (seed {seed}) in the released whole-human layout, pretrained for a few CPU minutes with "
            "scGPT's masked-expression objective on the cells args.json['pretraining'] names, by ccfm. NOT the "
            "released weights: what its features know comes from that one data set."
        )
    state = _toy_state_dict(model, args, seed)

    out.mkdir(parents=True, exist_ok=True)
    torch.save(state, out / "best_model.pt")
    (out / "vocab.json").write_text(json.dumps(token2idx, indent=2) + "\n")
    (out / "args.json").write_text(json.dumps(args, indent=2) + "\n")
    fsync_tree(out)
    return out
