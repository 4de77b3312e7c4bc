"""scGPT's own classes, and its weights loaded into them.

CCFM runs two classes of the scgpt release: `TransformerModel` (model/model.py) and `GeneVocab`
(tokenizer/gene_tokenizer.py). They are imported from the installed package's files without the package's
`__init__` (`ccfm.scgpt._scgpt`), so CCFM needs torch, numpy, pandas and tqdm beside them, not scgpt's training
stack (datasets, pyarrow, scanpy, IPython): what a GPU machine without a package registry can carry.
"""

from __future__ import annotations

import importlib
import logging
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch

from ccfm.errors import CCFMError
from ccfm.scgpt.torchtext_vocab import register_torchtext_stand_in

PACKAGE = "ccfm.scgpt._scgpt"


@dataclass(frozen=True)
class ScgptClasses:
    """What CCFM uses of the scgpt release."""

    TransformerModel: type  # scgpt.model.model.TransformerModel
    GeneVocab: type  # scgpt.tokenizer.gene_tokenizer.GeneVocab
    tokenizer_dir: Path  # the release's tokenizer folder (default_census_vocab.json)


def scgpt_classes() -> ScgptClasses:
    """scGPT's model and vocabulary classes, with the torchtext stand-in registered first."""
    register_torchtext_stand_in()
    try:
        with warnings.catch_warnings():
            # model.py warns at import when flash-attn is absent; CCFM never uses the flash path.
            warnings.filterwarnings("ignore", message="flash_attn is not installed")
            model = importlib.import_module(PACKAGE + ".model.model")
            tokenizer = importlib.import_module(PACKAGE + ".tokenizer.gene_tokenizer")
    except ImportError as exc:
        raise CCFMError(
            f"cannot import scgpt's model ({exc}); install it with `pip install --no-deps scgpt==0.2.4` "
            "plus the project's dependencies (`make install`)"
        ) from exc
    logging.getLogger("scGPT").setLevel(logging.WARNING)  # keep scgpt's INFO chatter out of CCFM's output
    return ScgptClasses(model.TransformerModel, tokenizer.GeneVocab, Path(tokenizer.__file__).parent)


def load_matching(model: torch.nn.Module, state: Mapping[str, torch.Tensor]) -> None:
    """Copy into `model` the tensors of a released state dict whose name and shape it has.

    The release was saved with flash-attention names (`self_attn.Wqkv.*`); the PyTorch-attention model calls
    them `self_attn.in_proj_*`. Other tensors (decoders of another configuration) are left as built — what
    scgpt's own `load_pretrained(strict=False)` does; the caller verifies what must have loaded.
    """
    own = model.state_dict()
    renamed = {key.replace("Wqkv.", "in_proj_"): tensor for key, tensor in state.items()}
    own.update({k: v for k, v in renamed.items() if k in own and tuple(v.shape) == tuple(own[k].shape)})
    model.load_state_dict(own)
