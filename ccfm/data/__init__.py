"""Loading perturbation data sets, parsing conditions, choosing the gene panel, splitting, simulating."""
