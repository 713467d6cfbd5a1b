"""Handlers of the publisher; ports in, outcomes out."""
