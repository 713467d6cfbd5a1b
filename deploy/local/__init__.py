"""Run a real Apache Kafka broker (from Maven Central jars) and a project-local PostgreSQL 15 +
PostGIS cluster on this machine, without Docker.

    from deploy.local.kafka import KafkaBroker, ensure_kafka_jars
    from deploy.local.postgres import PostgresCluster, ensure_postgis_installed
    from deploy.local.ports import free_port

CLI: ``python -m deploy.local up|down|status [--root DIR]``.
"""

from __future__ import annotations

from pathlib import Path

REPO_ROOT: Path = Path(__file__).resolve().parents[2]
"""The repository root (``<repo>/deploy/local/__init__.py`` -> ``<repo>``)."""

__all__ = ["REPO_ROOT"]
