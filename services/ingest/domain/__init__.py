"""Ingest core: read source files into records and records into change events. Pure."""
