"""``make run`` as a user runs it (``python -m deploy.local run``), on its own Kafka, PostGIS and service
ports: a commune's edit of a sample feature survives the next ``make run``; a service killed with -9 comes
back without a hand, and the restart shows in the supervisor's log, status and metrics; ``status`` (ours and
``odc status``) exits non-zero while a service is down."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import psycopg
import pytest

from deploy.local import REPO_ROOT
from deploy.local._proc import pid_alive
from deploy.local.ports import free_port_base
from services.contract.local_ports import PORTS_USED, local_ports
from tests.conftest import postgres_data_dir

pytestmark = pytest.mark.integration
T = TypeVar("T")

SERVICES = ("ingest", "normalise", "publish")
TOILET = {"gid": "7", "commune": "69029"}  # the first feature of samples/grandlyon/toilettes.geojson


@dataclass
class Stack:
    root: Path
    env: dict[str, str]
    dsn: str

    def run(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "deploy.local", *args, "--root", str(self.root)],
            cwd=REPO_ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def odc(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "services.cli.main", *args],
            cwd=REPO_ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    def port(self, service: str) -> int:
        return local_ports(int(self.env["ODC_PORT_BASE"])).web(service)

    def pid(self, name: str) -> int | None:
        try:
            pid = int((self.root / f"{name}.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None
        return pid if pid_alive(pid) else None

    def ready(self, service: str) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port(service)}/readyz", timeout=2) as r:
                return bool(r.status == 200)
        except OSError:
            return False

    def metrics(self, url: str, name: str, **labels: str) -> float:
        with urllib.request.urlopen(url, timeout=5) as r:
            text = r.read().decode()
        total = 0.0
        for line in text.splitlines():
            if line.startswith((name + "{", name + " ")):
                head, value = line.rsplit(" ", 1)
                if all(f'{k}="{v}"' in head for k, v in labels.items()):
                    total += float(value)
        return total

    def supervisor_metric(self, name: str, **labels: str) -> float:
        return self.metrics(
            f"http://127.0.0.1:{local_ports(int(self.env['ODC_PORT_BASE'])).supervisor}/metrics", name, **labels
        )

    def toilet(self) -> tuple[Any, ...] | None:
        with psycopg.connect(self.dsn) as conn:
            return conn.execute(
                "SELECT attributes->>'adresse', sequence, last_event_id FROM canonical_feature "
                "WHERE dataset = 'public_toilets' AND commune = %s AND feature_id = %s",
                (TOILET["commune"], TOILET["gid"]),
            ).fetchone()


def wait_for(what: str, probe: Callable[[], T | None], timeout: float = 120) -> T:
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(0.25)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})")


def _sent(output: str) -> int:
    return sum(int(n) for n in re.findall(r"sent (\d+) events", output))


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    root = postgres_data_dir("make-run")  # PostgreSQL's own user must traverse it
    # the one setting that moves the whole local stack (services/contract/local_ports.py); every odc command
    # follows it too, so the test sets nothing else
    base = free_port_base(PORTS_USED)
    env = {k: v for k, v in os.environ.items() if not k.startswith("ODC_")}
    env["ODC_PORT_BASE"] = str(base)
    dsn = local_ports(base).database_url
    s = Stack(root, env, dsn)
    try:
        first = s.run("run")
        assert first.returncode == 0, first.stderr[-4000:] + first.stdout[-2000:]
        # `odc send` needs a commune's Kafka credentials, as the README says: eval "$(python -m deploy.local env)"
        exports = s.run("env")
        assert exports.returncode == 0, exports.stderr
        for line in exports.stdout.splitlines():
            key, _, value = line.removeprefix("export ").partition("=")
            env[key] = shlex.split(value)[0]
        yield s
    finally:
        s.run("down", timeout=120)
        shutil.rmtree(root, ignore_errors=True)


def test_status_is_zero_when_everything_runs(stack: Stack) -> None:
    st = stack.run("status")
    assert st.returncode == 0, st.stdout
    doc = json.loads(st.stdout)
    assert doc["supervisor"]["up"]
    assert {n: (v["up"], v["state"]) for n, v in doc["services"].items()} == {n: (True, "running") for n in SERVICES}
    odc = stack.odc("status", "--json")
    assert odc.returncode == 0, odc.stdout + odc.stderr
    assert all(s["up"] for s in json.loads(odc.stdout)["services"])


def test_a_communes_edit_of_a_sample_survives_the_next_make_run(stack: Stack, tmp_path: Path) -> None:
    loaded = wait_for("the sample toilet in PostGIS", stack.toilet)
    original = loaded[0]
    key = tmp_path / "key.json"
    made = stack.odc("key", "create", "--commune", TOILET["commune"], "--out", str(key))
    assert made.returncode == 0, made.stderr
    samples = json.loads((REPO_ROOT / "samples/grandlyon/toilettes.geojson").read_text())
    feature = next(f for f in samples["features"] if str(f["properties"]["gid"]) == TOILET["gid"])
    feature["properties"]["adresse"] = "2 Place de la Mairie (corrected by the commune)"
    edit = tmp_path / "edit.geojson"
    edit.write_text(json.dumps({**samples, "features": [feature]}))
    sent = stack.odc("send", str(edit), "--dataset", "public_toilets", "--key-file", str(key))
    assert sent.returncode == 0, sent.stderr
    edited = wait_for("the commune's edit", lambda: (r := stack.toilet()) and r[0] != original and r)
    assert edited[0] == "2 Place de la Mairie (corrected by the commune)"

    normalise_metrics = f"http://127.0.0.1:{stack.port('normalise')}/metrics"
    received = stack.metrics(normalise_metrics, "odc_events_received_total")
    stale = stack.metrics(normalise_metrics, "odc_events_stale_total", dataset="public_toilets")
    again = stack.run("run")  # the second `make run`: re-sends the bundled samples
    assert again.returncode == 0, again.stderr[-4000:]
    resent = _sent(again.stdout + again.stderr)
    assert resent >= 900, again.stdout  # both sample files went out again
    wait_for(
        "the normaliser to read the re-sent samples",
        lambda: stack.metrics(normalise_metrics, "odc_events_received_total") >= received + resent,
    )
    assert stack.toilet() == edited  # the edit, its sequence and its event: untouched
    assert stack.metrics(normalise_metrics, "odc_events_stale_total", dataset="public_toilets") > stale


@pytest.mark.parametrize("service", SERVICES)
def test_a_killed_service_comes_back_by_itself(stack: Stack, service: str) -> None:
    before = stack.supervisor_metric("odc_service_restarts_total", service=service)
    pid = stack.pid(service)
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    wait_for(f"{service} restarted under a new pid", lambda: (p := stack.pid(service)) is not None and p != pid)
    wait_for(f"{service} ready again", lambda: stack.ready(service))
    assert stack.supervisor_metric("odc_service_restarts_total", service=service) == before + 1
    assert stack.supervisor_metric("odc_service_up", service=service) == 1
    log = (stack.root / "logs" / "supervisor.log").read_text()
    assert f"{service} killed by SIGKILL" in log
    st = wait_for("status 0 again", lambda: (r := stack.run("status")).returncode == 0 and r)
    shown = json.loads(st.stdout)["services"][service]
    assert shown["restarts"] >= 1 and shown["last_exit"].startswith("killed by SIGKILL")


def test_status_exits_non_zero_while_a_service_is_down(stack: Stack) -> None:
    supervisor = int((stack.root / "supervisor.pid").read_text().split()[0])
    os.kill(supervisor, signal.SIGKILL)  # nothing brings the service back now
    wait_for("the supervisor gone", lambda: not pid_alive(supervisor))
    pid = stack.pid("publish")
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    wait_for("publish gone", lambda: not stack.ready("publish"))
    st = stack.run("status")
    assert st.returncode == 3, st.stdout
    doc = json.loads(st.stdout)
    assert not doc["services"]["publish"]["up"] and not doc["supervisor"]["up"]
    odc = stack.odc("status", "--json")
    assert odc.returncode == 3, odc.stdout + odc.stderr
    assert [s["up"] for s in json.loads(odc.stdout)["services"]] == [True, True, False]
    make = subprocess.run(  # `make status` passes both exit statuses on
        ["make", "-s", "status", f"RUN_ROOT={stack.root}"],
        cwd=REPO_ROOT,
        env=stack.env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert make.returncode != 0, make.stdout

    again = stack.run("run")  # `make run` starts the supervisor, which starts what is down
    assert again.returncode == 0, again.stderr[-4000:]
    assert stack.run("status").returncode == 0
