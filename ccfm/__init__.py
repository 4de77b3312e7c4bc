"""CCFM: cascaded conditional flow matching for single-cell perturbation response."""

__version__ = "0.1.0"
