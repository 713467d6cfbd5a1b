"""The normaliser's pure core: validation, geometry normalisation and dedup decisions. No I/O."""
