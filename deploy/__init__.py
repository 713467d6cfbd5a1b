"""Deployment helpers for odc (local services without Docker, ...)."""
