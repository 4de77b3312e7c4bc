"""A pure-Python stand-in for `torchtext.vocab`, so that `scgpt` imports beside torch >= 2.4.

`scgpt.tokenizer.gene_tokenizer` does `import torchtext.vocab` and subclasses `torchtext.vocab.Vocab`
(GeneVocab). torchtext's compiled extension no longer loads next to current torch, and torchtext is no longer
developed, so when no working torchtext is importable we register this module's `Vocab` and `vocab()` under
`torchtext.vocab`. Only the API that scgpt (and code built on it, e.g. its tutorials) calls is provided, with
torchtext's semantics and error types.
"""

from __future__ import annotations

import importlib.util
import sys
import types
import warnings
from collections import OrderedDict
from collections.abc import Iterable

# Marks the modules this file puts into sys.modules, so registration is idempotent and recognisable.
_STAND_IN_MARK = "__ccfm_torchtext_stand_in__"


class _TokenTable:
    """The token <-> index table; plays the role of torchtext's compiled `VocabPybind` (`Vocab.vocab`)."""

    def __init__(self, tokens: Iterable[str], default_index: int | None = None) -> None:
        self.itos: list[str] = []
        self.stoi: dict[str, int] = {}
        self.default_index = default_index
        for token in tokens:
            self.insert(token, len(self.itos))

    def __len__(self) -> int:
        return len(self.itos)

    def insert(self, token: str, index: int) -> None:
        if token in self.stoi:
            raise RuntimeError(f"Token {token} already exists in the Vocab with index: {self.stoi[token]}")
        if not 0 <= index <= len(self.itos):
            raise RuntimeError(
                f"Specified index {index} is out of bounds of the size of stoi dictionary: {len(self.itos)}"
            )
        if index == len(self.itos):
            # The common case (GeneVocab.from_dict inserts 60k tokens in index order): O(1).
            self.itos.append(token)
            self.stoi[token] = index
            return
        self.itos.insert(index, token)
        for shifted in range(index, len(self.itos)):
            self.stoi[self.itos[shifted]] = shifted

    def index_of(self, token: str) -> int:
        found = self.stoi.get(token)
        if found is not None:
            return found
        if self.default_index is None:
            raise RuntimeError(f"Token {token} not found and default index is not set")
        return self.default_index

    def token_at(self, index: int) -> str:
        if not 0 <= index < len(self.itos):
            raise RuntimeError(
                f"Specified index {index} is out of bounds of the size of itos dictionary: {len(self.itos)}."
            )
        return self.itos[index]


class Vocab:
    """torchtext's `Vocab` API over a `_TokenTable` (torchtext wraps its C++ table the same way)."""

    def __init__(self, vocab: _TokenTable) -> None:
        # GeneVocab.__init__ calls `super().__init__(other_vocab.vocab)`: the table is shared, not copied.
        self.vocab = vocab

    @property
    def is_jitable(self) -> bool:
        return False

    def __call__(self, tokens: list[str]) -> list[int]:
        return self.lookup_indices(tokens)

    def forward(self, tokens: list[str]) -> list[int]:
        return self.lookup_indices(tokens)

    def __len__(self) -> int:
        return len(self.vocab)

    def __contains__(self, token: object) -> bool:
        return token in self.vocab.stoi

    def __getitem__(self, token: str) -> int:
        return self.vocab.index_of(token)

    def set_default_index(self, index: int | None) -> None:
        self.vocab.default_index = index

    def get_default_index(self) -> int | None:
        return self.vocab.default_index

    def insert_token(self, token: str, index: int) -> None:
        self.vocab.insert(token, index)

    def append_token(self, token: str) -> None:
        self.vocab.insert(token, len(self.vocab))

    def lookup_token(self, index: int) -> str:
        return self.vocab.token_at(index)

    def lookup_tokens(self, indices: list[int]) -> list[str]:
        return [self.vocab.token_at(i) for i in indices]

    def lookup_indices(self, tokens: list[str]) -> list[int]:
        return [self.vocab.index_of(t) for t in tokens]

    def get_stoi(self) -> dict[str, int]:
        return dict(self.vocab.stoi)

    def get_itos(self) -> list[str]:
        return list(self.vocab.itos)


def vocab(
    ordered_dict: dict[str, int],
    min_freq: int = 1,
    specials: list[str] | None = None,
    special_first: bool = True,
) -> Vocab:
    """torchtext's factory: tokens of `ordered_dict` (token -> frequency) seen at least `min_freq` times."""
    specials = list(specials or [])
    counts = OrderedDict(ordered_dict)
    for token in specials:
        counts.pop(token, None)
    tokens = [token for token, freq in counts.items() if freq >= min_freq]
    tokens = specials + tokens if special_first else tokens + specials
    return Vocab(_TokenTable(tokens))


def _working_torchtext_vocab() -> bool:
    """True when a real `torchtext.vocab` imports and works (then scgpt should use it)."""
    loaded = sys.modules.get("torchtext.vocab")
    if loaded is not None:
        return not getattr(loaded, _STAND_IN_MARK, False)
    try:
        if importlib.util.find_spec("torchtext") is None:
            return False
    except (ImportError, ValueError):
        return False
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torchtext >= 0.18 warns that it is deprecated
            import torchtext.vocab as real_vocab

            return real_vocab.vocab(OrderedDict([("probe", 1)]))["probe"] == 0
    except Exception:  # noqa: BLE001 - a broken binary raises OSError, RuntimeError, ImportError, ...
        # Drop the half-imported package so that our stand-in can take its place.
        for name in [n for n in sys.modules if n == "torchtext" or n.startswith("torchtext.")]:
            del sys.modules[name]
        return False


def register_torchtext_stand_in() -> bool:
    """Install the stand-in as `torchtext` / `torchtext.vocab` unless a working torchtext is importable.

    Idempotent. Returns True when the stand-in is in place, False when the real torchtext is used.
    """
    if _working_torchtext_vocab():
        return False
    if getattr(sys.modules.get("torchtext.vocab"), _STAND_IN_MARK, False):
        return True
    package = types.ModuleType("torchtext", "Stand-in for torchtext (ccfm.scgpt.torchtext_vocab).")
    package.__path__ = []  # a package, so that `import torchtext.vocab` resolves the submodule
    submodule = types.ModuleType("torchtext.vocab", __doc__)
    submodule.Vocab = Vocab
    submodule.vocab = vocab
    package.vocab = submodule
    for module in (package, submodule):
        setattr(module, _STAND_IN_MARK, True)
    sys.modules["torchtext"] = package
    sys.modules["torchtext.vocab"] = submodule
    return True
