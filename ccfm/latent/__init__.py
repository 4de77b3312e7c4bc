"""The scGPT latent: the frozen checkpoint, its vocabulary, and the per-gene features CCFM generates first.

Importing this package never imports `scgpt` (slow, and it needs the `torchtext` stand-in first); the
modules that need it call `ccfm.latent.torchtext_vocab.import_scgpt()` inside their functions.
"""
