"""The catalogue of canonical datasets: one JSON definition per dataset under ``definitions/``."""
