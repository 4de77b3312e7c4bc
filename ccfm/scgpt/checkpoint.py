"""Load a frozen scGPT checkpoint folder (released whole-human layout) and map a gene panel onto its vocab.

The folder holds `best_model.pt` (a state dict saved with flash-attention key names, `self_attn.Wqkv.*`),
`vocab.json` ({token: id}, specials last) and `args.json` (the training config). The model is built the way
scGPT's embedding tutorials build it, without the flash path, and loaded as `scgpt.utils.load_pretrained` loads it
(`ccfm.scgpt.upstream.load_matching`). That silently drops tensors whose name or shape differ, so every tensor on
the embedding path (`encoder.*`, `value_encoder.*`, `transformer_encoder.*`) is verified afterwards.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ccfm.errors import CCFMError
from ccfm.scgpt.upstream import load_matching, scgpt_classes

CHECKPOINT_FILES = ("best_model.pt", "vocab.json", "args.json")
# The tensors that produce `_encode`'s per-gene features; the decoders are never used by CCFM.
ENCODER_PREFIXES = ("encoder.", "value_encoder.", "transformer_encoder.")
REQUIRED_ARGS = ("embsize", "nheads", "d_hid", "nlayers", "dropout", "pad_token", "pad_value", "n_bins")
INPUT_EMB_STYLES = ("continuous", "category", "scaling")
CLS_TOKEN = "<cls>"
_REFETCH = "re-download the released whole-human folder unmodified (or rebuild a toy with `ccfm toy-scgpt`)"


@dataclass(frozen=True, eq=False)
class ScgptModel:
    """A frozen scGPT: the TransformerModel (eval, no grad) with everything needed to tokenize for it."""

    model: torch.nn.Module  # scgpt.model.TransformerModel, eval() and requires_grad_(False)
    vocab: Any  # scgpt.tokenizer.GeneVocab (token -> id)
    args: dict[str, Any]  # the parsed args.json
    d_model: int  # D, width of the per-gene features (embsize)
    pad_id: int  # vocab id of the pad token
    cls_id: int  # vocab id of `<cls>`, prepended to every cell
    pad_value: float  # input value of `<cls>` and of padded positions (released: -2)
    n_bins: int  # value bins incl. bin 0 (released: 51 -> non-zero values go to bins 1..50)
    fingerprint: str  # sha256 of the weights (key order, dtype, shape, bytes), args.json and vocab.json
    folder: Path  # where it was loaded from


@dataclass(frozen=True)
class VocabMapping:
    """Where each panel gene sits in the scGPT vocabulary."""

    vocab_ids: np.ndarray  # (G,) int64 vocab id per panel gene, -1 where the gene is not in the vocab
    n_covered: int  # panel genes found in the vocab
    coverage: float  # n_covered / G
    absent: tuple[str, ...]  # panel genes not in the vocab, in panel order


def _refuse(path: Path, problem: str, fix: str) -> CCFMError:
    return CCFMError(f"{path}: {problem}; {fix}")


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _refuse(path, f"not valid JSON ({exc})", _REFETCH) from exc


def _read_args(path: Path) -> dict[str, Any]:
    args = _read_json(path)
    if not isinstance(args, dict):
        raise _refuse(path, f"expected a JSON object, found {type(args).__name__}", _REFETCH)
    missing = [key for key in REQUIRED_ARGS if key not in args]
    if missing:
        raise _refuse(path, f"missing keys {missing}", _REFETCH)
    style = args.get("input_emb_style", "continuous")
    if style not in INPUT_EMB_STYLES:
        raise _refuse(path, f"input_emb_style {style!r} is not one of {INPUT_EMB_STYLES}", _REFETCH)
    if args.get("pre_norm", False):
        # scGPT's non-flash path always builds post-norm layers, so a pre-norm model would run wrongly.
        raise _refuse(path, "pre_norm=true checkpoints are not supported", "use a post-norm scGPT checkpoint")
    return args


def _read_vocab(path: Path, pad_token: str) -> dict[str, int]:
    token2idx = _read_json(path)
    if not isinstance(token2idx, dict) or not all(isinstance(i, int) for i in token2idx.values()):
        raise _refuse(path, "expected a JSON object {token: integer id}", _REFETCH)
    if sorted(token2idx.values()) != list(range(len(token2idx))):
        raise _refuse(path, f"ids are not exactly 0..{len(token2idx) - 1}", _REFETCH)
    for special in (pad_token, CLS_TOKEN):
        if special not in token2idx:
            raise _refuse(path, f"the vocabulary has no {special!r} token", _REFETCH)
    return token2idx


def _read_state(path: Path) -> dict[str, torch.Tensor]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch.load raises RuntimeError, EOFError, UnpicklingError, ...
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise _refuse(path, f"unreadable or truncated checkpoint ({reason})", _REFETCH) from exc
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise _refuse(path, "expected a state dict {name: tensor}", _REFETCH)
    embedding = state.get("encoder.embedding.weight")
    if embedding is None or embedding.ndim != 2:
        raise _refuse(path, "no 2-d `encoder.embedding.weight`: not a scGPT model state dict", _REFETCH)
    return dict(state)


def _check_args_against_weights(
    args: dict[str, Any], state: Mapping[str, torch.Tensor], n_vocab: int, folder: Path
) -> None:
    """Compare the config with the tensor shapes so a mismatch names the file to fix, not a tensor."""
    rows, width = state["encoder.embedding.weight"].shape
    layers = {k.split(".")[2] for k in state if k.startswith("transformer_encoder.layers.")}
    linear1 = state.get("transformer_encoder.layers.0.linear1.weight")
    found = {
        "embsize": width,
        "nlayers": len(layers),
        "d_hid": None if linear1 is None else linear1.shape[0],
    }
    for key, in_weights in found.items():
        if in_weights is not None and args[key] != in_weights:
            raise _refuse(
                folder / "args.json",
                f"{key}={args[key]} but best_model.pt has {key}={in_weights}",
                "args.json and best_model.pt must come from the same checkpoint folder",
            )
    if rows != n_vocab:
        raise _refuse(
            folder / "vocab.json",
            f"{n_vocab} tokens but best_model.pt's encoder.embedding.weight has {rows} rows",
            "vocab.json and best_model.pt must come from the same checkpoint folder",
        )
    if args["embsize"] % args["nheads"] != 0:
        raise _refuse(folder / "args.json", f"embsize={args['embsize']} not divisible by nheads", _REFETCH)


def build_scgpt_model(args: Mapping[str, Any], vocab: Any, seed: int = 0) -> torch.nn.Module:
    """A randomly initialized TransformerModel as scGPT's embedding tutorials build it (PyTorch attention).

    `vocab` is a GeneVocab or a {token: id} mapping; `seed` fixes the initial weights. The loader and the toy
    checkpoint share this function, so the toy has exactly the architecture the loader expects.
    """
    model_class = scgpt_classes().TransformerModel

    # Module init draws from the global RNG; fork it so that building never changes a caller's stream.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return model_class(
            ntoken=len(vocab),
            d_model=args["embsize"],
            nhead=args["nheads"],
            d_hid=args["d_hid"],
            nlayers=args["nlayers"],
            nlayers_cls=args.get("n_layers_cls", 3),
            n_cls=1,
            vocab=vocab,
            dropout=args["dropout"],
            pad_token=args["pad_token"],
            pad_value=args["pad_value"],
            do_mvc=bool(args.get("MVC", False)),
            do_dab=False,
            use_batch_labels=False,
            domain_spec_batchnorm=False,
            input_emb_style=args.get("input_emb_style", "continuous"),
            n_input_bins=args["n_bins"],
            cell_emb_style="cls",
            explicit_zero_prob=False,
            use_fast_transformer=False,  # flash-attn is CUDA-only; load_matching renames Wqkv -> in_proj_
            pre_norm=False,
        )


def _verify_transfer(model: torch.nn.Module, state: Mapping[str, torch.Tensor], path: Path) -> None:
    """Refuse unless every embedding-path tensor of `model` equals the checkpoint's (after the rename)."""
    renamed = {key.replace("Wqkv.", "in_proj_"): tensor for key, tensor in state.items()}
    problems: list[str] = []
    for key, tensor in model.state_dict().items():
        if not key.startswith(ENCODER_PREFIXES):
            continue
        found = renamed.get(key)
        if found is None:
            problems.append(f"{key} missing (expected shape {tuple(tensor.shape)})")
        elif found.shape != tensor.shape:
            problems.append(f"{key} has shape {tuple(found.shape)}, expected {tuple(tensor.shape)}")
        elif not torch.equal(tensor, found.to(tensor.dtype)):
            problems.append(f"{key} was not copied")
    if problems:
        shown = "; ".join(problems[:3]) + (f"; and {len(problems) - 3} more" if len(problems) > 3 else "")
        raise _refuse(
            path,
            f"{len(problems)} scGPT encoder tensor(s) would not load: {shown}",
            f"the weights do not match args.json or come from another model class; {_REFETCH}",
        )


def checkpoint_fingerprint(
    state: Mapping[str, torch.Tensor], args: Mapping[str, Any], token2idx: Mapping[str, int]
) -> str:
    """sha256 of the weights and the config: identical checkpoints give identical latents."""
    digest = hashlib.sha256()
    for key in sorted(state):  # sorted: re-saving the same tensors in another order is the same checkpoint
        tensor = state[key].detach().cpu().contiguous()
        digest.update(f"{key}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy())
    # Canonical JSON, so whitespace or key order in the files does not change the fingerprint.
    digest.update(json.dumps(dict(args), sort_keys=True).encode())
    digest.update(json.dumps(dict(token2idx), sort_keys=True).encode())
    return digest.hexdigest()


def load_scgpt(folder: Path, device: torch.device | str = "cpu") -> ScgptModel:
    """Load a scGPT checkpoint folder as a frozen model, refusing anything that would load incompletely."""
    folder = Path(folder)
    if not folder.is_dir():
        raise _refuse(folder, "no such scGPT checkpoint folder", f"pass a folder holding {CHECKPOINT_FILES}")
    for name in CHECKPOINT_FILES:
        if not (folder / name).is_file():
            raise _refuse(folder / name, "missing", f"a scGPT checkpoint folder holds {CHECKPOINT_FILES}")
    args = _read_args(folder / "args.json")
    token2idx = _read_vocab(folder / "vocab.json", args["pad_token"])
    state = _read_state(folder / "best_model.pt")
    _check_args_against_weights(args, state, len(token2idx), folder)

    vocab = scgpt_classes().GeneVocab.from_dict(token2idx, default_token=args["pad_token"])
    model = build_scgpt_model(args, vocab)
    load_matching(model, state)
    _verify_transfer(model, state, folder / "best_model.pt")
    model.eval()
    model.requires_grad_(False)
    return ScgptModel(
        model=model.to(device),
        vocab=vocab,
        args=args,
        d_model=int(args["embsize"]),
        pad_id=token2idx[args["pad_token"]],
        cls_id=token2idx[CLS_TOKEN],
        pad_value=float(args["pad_value"]),
        n_bins=int(args["n_bins"]),
        fingerprint=checkpoint_fingerprint(state, args, token2idx),
        folder=folder,
    )


def _is_special(token: str) -> bool:
    return token.startswith("<") and token.endswith(">")


MIN_VOCAB_COVERAGE = 0.5  # below this share of panel genes in the vocab, scGPT sees too little of each cell


def map_panel_to_vocab(symbols: Sequence[str], vocab: Any, min_coverage: float = MIN_VOCAB_COVERAGE) -> VocabMapping:
    """Vocab id of each panel gene (-1 if absent). `vocab` is a GeneVocab or a {token: id} mapping.

    Refuses a panel of which less than `min_coverage` is in the vocabulary (symbols in another letter case or
    namespace, ...): data in HGNC symbols are ≥ 90 % covered by the whole-human vocabulary."""
    stoi: Mapping[str, int] = vocab.get_stoi() if hasattr(vocab, "get_stoi") else vocab
    if len(symbols) == 0:
        raise CCFMError("the gene panel is empty; select at least one gene")
    ids = np.array([-1 if _is_special(s) else stoi.get(s, -1) for s in map(str, symbols)], dtype=np.int64)  # (G,)
    n_covered = int((ids >= 0).sum())
    absent = tuple(str(s) for s, i in zip(symbols, ids, strict=True) if i < 0)
    mapping = VocabMapping(vocab_ids=ids, n_covered=n_covered, coverage=n_covered / len(symbols), absent=absent)
    if n_covered == 0 or mapping.coverage < min_coverage:
        upper = {token.upper() for token in stoi}
        recased = sum(symbol.upper() in upper for symbol in absent)
        hint = (
            f"{recased} of the absent genes match in another letter case: write symbols as HGNC does "
            f"(e.g. {absent[0].upper()!r})"
            if recased > len(absent) // 2
            else "are the gene names Ensembl ids or another species'? pass --gene-col with the HGNC symbol column"
        )
        raise CCFMError(
            f"only {n_covered} of {len(symbols)} panel genes ({100 * mapping.coverage:.1f}%) are in the scGPT "
            f"vocabulary (at least {100 * min_coverage:.0f}% needed; absent e.g. {', '.join(absent[:3])}); {hint}"
        )
    return mapping
