"""Running the frozen scGPT: its checkpoint, the vocabulary stand-in, the toy stand-in and its pretraining,
expression binning, and the feature extractor.

Importing this package never imports `scgpt` (slow, and it needs the `torchtext` stand-in first); the
modules that need its classes call `ccfm.scgpt.upstream.scgpt_classes()` inside their functions, which loads
scGPT's model and tokenizer files without the scgpt package's training stack.
"""
