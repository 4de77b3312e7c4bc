"""The installed `scgpt` package's folder under this name, without running scgpt's own `__init__`.

`import scgpt` imports its data bank, trainer and tasks, and with them datasets, pyarrow, scanpy and IPython,
none of which CCFM calls. This package's path is scgpt's folder, so `ccfm.scgpt._scgpt.model.model` is scgpt's
`model/model.py` and `ccfm.scgpt._scgpt.tokenizer` its tokenizer, imported with only what they need (torch,
numpy, pandas, tqdm and the torchtext stand-in). scgpt's `model/__init__.py` is skipped too: it imports
`scgpt.utils` (IPython, matplotlib) for the generation model. Load it through `ccfm.scgpt.upstream`.
"""

import importlib.util
import logging
import os
import sys
import types

_spec = importlib.util.find_spec("scgpt")  # finds the folder; imports nothing
if _spec is None or not _spec.submodule_search_locations:
    raise ImportError("no module named 'scgpt'")
_root = list(_spec.submodule_search_locations)[0]
__path__ = [_root]
logger = logging.getLogger("scGPT")  # what scgpt's modules import from their package (`from .. import logger`)

model = types.ModuleType(__name__ + ".model", "scgpt's model folder, without its __init__ (see above).")
model.__path__ = [os.path.join(_root, "model")]
sys.modules[model.__name__] = model
