"""Evaluation: the prediction file format, built-in baselines, the cell-eval wrapper, the report and plots."""
