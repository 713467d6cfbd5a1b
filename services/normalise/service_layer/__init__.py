"""Handlers of the normaliser: take ports as arguments, call the pure core, no framework imports."""
