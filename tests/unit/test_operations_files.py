"""Operations files: alert rules pass promtool (syntax and rule unit tests), both Prometheus configs are
valid, and every metric the rules and the dashboard use is one the services actually export."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from deploy.local.prometheus import ensure_prometheus_installed
from services.ingest.metrics import IngestMetrics
from services.normalise.metrics import NormaliseMetrics
from services.publish.metrics import PublishMetrics

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
PROM = DEPLOY / "prometheus"


@pytest.fixture(scope="module")
def promtool() -> str:
    ensure_prometheus_installed()  # a fresh machine gets Debian's package; a failure fails the test
    return "promtool"


def run(*cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=PROM, capture_output=True, text=True, check=False)


def test_alert_rules_are_valid(promtool: str) -> None:
    done = run(promtool, "check", "rules", "alerts.yml")
    assert done.returncode == 0, done.stdout + done.stderr


def test_alert_rules_fire_as_their_unit_tests_expect(promtool: str) -> None:
    done = run(promtool, "test", "rules", "alerts_test.yml")
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("config", ["prometheus.yml", "prometheus-local.yml"])
def test_prometheus_configs_are_valid(promtool: str, config: str) -> None:
    done = run(promtool, "check", "config", config)
    assert done.returncode == 0, done.stdout + done.stderr


def exported_metric_names() -> set[str]:
    names: set[str] = set()
    for cls in (IngestMetrics, NormaliseMetrics, PublishMetrics):
        registry = CollectorRegistry()
        cls(registry)
        for family in registry.collect():
            names.add(family.name)
            names.update(f"{family.name}{suffix}" for suffix in ("_total", "_bucket", "_sum", "_count"))
    return names


def referenced_metrics(text: str) -> set[str]:
    return set(re.findall(r"\b(odc_[a-z0-9_]+)", text))


def test_every_metric_in_the_alert_rules_exists() -> None:
    missing = referenced_metrics((PROM / "alerts.yml").read_text()) - exported_metric_names()
    assert not missing, f"alerts.yml uses metrics no service exports: {sorted(missing)}"


def test_dashboard_is_valid_and_uses_only_exported_metrics() -> None:
    dash = json.loads((DEPLOY / "grafana" / "odc-dashboard.json").read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p["targets"]]
    assert len(exprs) >= 10 and dash["uid"] == "odc-pipeline"
    missing = referenced_metrics("\n".join(exprs)) - exported_metric_names()
    assert not missing, f"the dashboard uses metrics no service exports: {sorted(missing)}"
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
