"""Honest stand-ins: simulated Norman- and ComboSciPlex-shaped data sets built from real metadata."""
