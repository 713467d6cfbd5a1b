"""Moving the local stack to other ports is ONE setting, ODC_PORT_BASE, that `make run`, `make status` and every
`odc` command follow; `make status` reports the stack where it actually runs, and `odc status` beside it agrees."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from deploy.local.__main__ import _broker, _cluster, _services, odc_env
from deploy.local.ports import port_open
from services.cli.settings import CliSettings
from services.contract.local_ports import DEFAULT_PORTS, local_ports
from services.ingest.settings import IngestSettings

ROOT = Path(__file__).resolve().parents[2]


def _quiet_base() -> int:
    """A base whose six ports nobody listens on: the tests read which addresses the commands use."""
    for base in range(41200, 42400, 6):
        if not any(port_open(base + i) for i in range(6)):
            return base
    raise AssertionError("no six quiet ports between 41200 and 42400")


BASE = _quiet_base()


def test_unset_the_ports_are_the_historical_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ODC_PORT_BASE", raising=False)
    assert local_ports(None) == DEFAULT_PORTS
    cli, ingest = CliSettings(), IngestSettings()
    assert (cli.ingest_url, cli.normalise_url, cli.publish_url) == (
        "http://127.0.0.1:6065",
        "http://127.0.0.1:6066",
        "http://127.0.0.1:6067",
    )
    assert cli.database_url.get_secret_value().endswith("@127.0.0.1:15432/odc")
    assert (ingest.kafka_bootstrap, ingest.web_port) == ("127.0.0.1:19092", 6065)


def test_one_base_moves_every_address_odc_uses(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ODC_PORT_BASE", str(BASE))
    cli, ingest = CliSettings(), IngestSettings()
    assert ingest.kafka_bootstrap == f"127.0.0.1:{BASE}"  # odc send, odc connector
    assert ingest.database_url.get_secret_value() == f"postgresql://odc:odc@127.0.0.1:{BASE + 2}/odc"  # odc key
    assert cli.database_url.get_secret_value() == f"postgresql://odc:odc@127.0.0.1:{BASE + 2}/odc"  # odc report
    assert (cli.ingest_url, cli.normalise_url, cli.publish_url) == tuple(
        f"http://127.0.0.1:{BASE + i}" for i in (3, 4, 5)
    )  # odc status, odc subscribe
    monkeypatch.setenv("ODC_PUBLISH_URL", "http://publish.example:8080")  # an explicit setting still wins
    assert CliSettings().publish_url == "http://publish.example:8080"


def test_a_base_that_leaves_no_room_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ODC_PORT_BASE", "65533")
    with pytest.raises(ValueError, match="ODC_PORT_BASE"):
        CliSettings()


def test_make_run_starts_the_stack_on_the_base(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("ODC_PORT_BASE", str(BASE))
    assert (_broker(tmp_path).port, _broker(tmp_path).controller_port) == (BASE, BASE + 1)
    assert _cluster(tmp_path).port == BASE + 2
    assert [s.port for s in _services(tmp_path)] == [BASE + 3, BASE + 4, BASE + 5]
    env = odc_env(tmp_path)  # what make run hands to the odc commands it runs
    assert env["ODC_INGEST_KAFKA_BOOTSTRAP"] == f"127.0.0.1:{BASE}"
    assert env["ODC_PUBLISH_URL"] == f"http://127.0.0.1:{BASE + 5}"


def test_a_running_service_is_found_on_the_port_it_was_started_on(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("ODC_PORT_BASE", str(BASE))
    (tmp_path / "publish.pid").write_text(f"{os.getpid()}\n{json.dumps({'port': 6067})}\n")  # a live pid
    by_name = {s.name: s.port for s in _services(tmp_path)}
    assert by_name == {"ingest": BASE + 3, "normalise": BASE + 4, "publish": 6067}


def _run(args: list[str], tmp_path: Path) -> str:
    env = {**os.environ, "ODC_PORT_BASE": str(BASE), "COLUMNS": "200"}
    for name in ("ODC_DATABASE_URL", "ODC_INGEST_URL", "ODC_NORMALISE_URL", "ODC_PUBLISH_URL"):
        env.pop(name, None)
    out = subprocess.run(args, env=env, cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
    return out.stdout


def test_odc_status_and_make_status_report_the_same_addresses(tmp_path: Path) -> None:
    odc = json.loads(_run([sys.executable, "-m", "services.cli.main", "status", "--json"], tmp_path))
    assert [s["metrics_url"] for s in odc["services"]] == [f"http://127.0.0.1:{BASE + i}/metrics" for i in (3, 4, 5)]
    assert f"port {BASE + 2}" in odc["database"]["error"]  # it looked for PostgreSQL on the base's port
    text = _run([sys.executable, "-m", "deploy.local", "status", "--with-odc", "--root", str(tmp_path)], tmp_path)
    stack = json.loads(text.splitlines()[0])
    assert stack["kafka"]["bootstrap"] == f"127.0.0.1:{BASE}"
    assert stack["postgres"]["dsn"].endswith(f":{BASE + 2}/odc")
    assert [stack["services"][n]["url"] + "/metrics" for n in ("ingest", "normalise", "publish")] == [
        s["metrics_url"] for s in odc["services"]
    ]
    for port in (BASE + 3, BASE + 4, BASE + 5):  # the odc status printed after it names the same ports
        assert f"127.0.0.1:{port}/metrics" in text
