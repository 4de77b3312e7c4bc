"""Running the frozen scGPT: its checkpoint, the vocabulary stand-in, the toy stand-in and its pretraining,
expression binning, and the feature extractor.

Importing this package never imports `scgpt` (slow, and it needs the `torchtext` stand-in first); the
modules that need it call `ccfm.scgpt.torchtext_vocab.import_scgpt()` inside their functions.
"""
