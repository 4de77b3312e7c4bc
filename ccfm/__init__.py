"""CCFM: cascaded conditional flow matching for single-cell perturbation response.

From Python (ccfm/api.py): `ccfm.extract`, `ccfm.train`, `ccfm.load_run`, then `run.predict`, `run.evaluate`
and `run.screen`. They are loaded on first use, so `import ccfm.config` (or any library module) stays light.
"""

__version__ = "0.1.0"

API = ("extract", "train", "load_run", "Run")


def __getattr__(name: str):  # noqa: ANN202  # PEP 562: the public API, imported when first asked for
    if name in API:
        from ccfm import api

        return getattr(api, name)
    raise AttributeError(f"module 'ccfm' has no attribute {name!r}")


__all__ = [*API, "__version__"]
