"""Handlers of the ingest service: push a batch, run a connector. They take their ports as arguments."""
