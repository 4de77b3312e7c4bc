"""Imported at start-up when this folder is on PYTHONPATH (tests/test_gpu_bench.py): from then on the interpreter
refuses every third-party module the GPU machine lacks and the GPU kit does not carry (bench/gpu_kit.py)."""

from bench.gpu_kit import block_imports

block_imports()
