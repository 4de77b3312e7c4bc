"""The latent cache: the zarr store of normalized scGPT features, its statistics, fingerprint and record, and
the source that serves latents for any cell (from the store, or computed on the fly)."""
