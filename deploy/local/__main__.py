"""``python -m deploy.local up|run|down|status|supervise|env [--root DIR] [--as USER]``

``up`` starts Kafka and PostgreSQL+PostGIS; ``run`` also starts the three odc services, waits until
they are ready, starts the supervisor that restarts a crashed service (deploy/local/supervisor.py), loads
the bundled samples and prints a summary (what ``make run`` does); ``down`` stops everything.
``supervise`` is the supervisor itself (``run`` starts it in the background; metrics on
ODC_SUPERVISOR_PORT, default ODC_PORT_BASE+6 or 6068). ``env`` prints the shell exports with which
``odc send`` reaches the broker as a commune's Kafka principal (``--as`` another user of
deploy/local/kafka_access.py).

Starts/stops the local Kafka broker and PostgreSQL+PostGIS cluster used by ``make run``.
Data lives under ``<repo>/.local/run/`` (``kafka/``, ``postgres/``) unless ``--root`` is given.
Ports: Kafka 19092 (controller 19093), Postgres 15432, the services 6065-6067; ONE setting moves them all:
``ODC_PORT_BASE=N`` uses N..N+6 (services/contract/local_ports.py), and every ``odc`` command follows the same
variable. A stack already running is found where it runs (its data dir and pid files record its ports).
``status`` prints JSON
``{"kafka": {"up", "bootstrap"}, "postgres": {"up", "dsn"}, "services": {...}, "supervisor": {...}}``, then
(``--with-odc``, what ``make status`` runs) ``odc status`` pointed at those same addresses.
Exit codes: 0 ok; 1 a service failed to start/stop; ``status`` exits 3 if anything is down (Kafka,
PostgreSQL, one of the three services, or the supervisor).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from prometheus_client import CollectorRegistry, start_http_server

from deploy.local import REPO_ROOT
from deploy.local._proc import signal_group_or_pid, tail, wait_dead
from deploy.local.kafka import KafkaBroker, KafkaSetupError, ensure_kafka_jars, kafka_libs_dir
from deploy.local.kafka import _libs_complete as _kafka_libs_complete
from deploy.local.kafka_access import COMMUNE_USERS
from deploy.local.ports import port_open
from deploy.local.postgres import PostgresCluster, PostgresSetupError
from deploy.local.restart_policy import RestartPolicy
from deploy.local.services import SERVICE_NAMES, ServiceError, ServiceProcess, service_env
from deploy.local.supervisor import PID_FILE, STATE_FILE, Supervisor, SupervisorMetrics, read_state, supervisor_pid
from services.contract.local_ports import PORT_BASE_VARIABLE, LocalPorts, local_ports


def _say(msg: str) -> None:
    print(f"[deploy.local] {msg}", file=sys.stderr, flush=True)


def _env_port(name: str, default: int) -> int:
    raw = os.environ.get(name)
    return int(raw) if raw else default


def _ports() -> LocalPorts:
    """The ports ``ODC_PORT_BASE`` asks for (unset: the defaults)."""
    raw = os.environ.get(PORT_BASE_VARIABLE, "").strip()
    return local_ports(int(raw) if raw else None)


def _broker(root: Path) -> KafkaBroker:
    data = root / "kafka"
    if (data / "broker.json").is_file():
        existing = KafkaBroker.from_data_dir(data)
        if existing.is_running():
            return existing
    ports = _ports()
    return KafkaBroker(data, ports.kafka, ports.kafka_controller)


def _cluster(root: Path) -> PostgresCluster:
    data = root / "postgres"
    if (data / "postgres.json").is_file():
        existing = PostgresCluster.from_data_dir(data)
        if existing.is_running():
            return existing
    return PostgresCluster(data, _ports().postgres)


def cmd_up(root: Path) -> int:
    root.mkdir(parents=True, exist_ok=True)
    if not _kafka_libs_complete(kafka_libs_dir()):
        _say("resolving Kafka jars with Maven (first run only)...")
        t0 = time.monotonic()
        ensure_kafka_jars()
        _say(f"Kafka jars ready in {kafka_libs_dir()} ({time.monotonic() - t0:.1f}s)")

    broker = _broker(root)
    was_up = broker.is_running()
    _say(f"{'checking' if was_up else 'starting'} Kafka on {broker.bootstrap} (data {broker.data_dir})...")
    broker.start()
    note = ", already running" if was_up else ""
    _say(f"Kafka ready on {broker.bootstrap} ({broker.last_start_seconds:.1f}s{note})")

    cluster = _cluster(root)
    was_up = cluster.is_running()
    verb = "checking" if was_up else "starting"
    _say(f"{verb} PostgreSQL+PostGIS on port {cluster.port} (data {cluster.data_dir})...")
    cluster.start()
    note = ", already running" if was_up else ""
    _say(f"Postgres ready on {cluster.dsn} ({cluster.last_start_seconds:.1f}s{note})")
    print(json.dumps(_status(root)))
    return 0


def _services(root: Path) -> list[ServiceProcess]:
    broker, cluster = _broker(root), _cluster(root)
    out = []
    ports = {name: ServiceProcess(name, root, 0).recorded_port() or _ports().web(name) for name in SERVICE_NAMES}
    for name in SERVICE_NAMES:
        # the publisher's OGC API edits (Part 4) go through the ingest service's push API
        extra = {"ODC_PUBLISH_INGEST_URL": f"http://127.0.0.1:{ports['ingest']}"} if name == "publish" else None
        env = service_env(
            name,
            kafka_bootstrap=broker.bootstrap,
            kafka_access=broker.access,
            database_url=cluster.dsn,
            port=ports[name],
            extra=extra,
        )
        out.append(ServiceProcess(name, root, ports[name], env))
    return out


def _restart_policy() -> RestartPolicy:
    d = RestartPolicy()
    return RestartPolicy(
        base_seconds=float(os.environ.get("ODC_SUPERVISOR_BACKOFF_SECONDS", d.base_seconds)),
        cap_seconds=float(os.environ.get("ODC_SUPERVISOR_BACKOFF_CAP_SECONDS", d.cap_seconds)),
        stable_after_seconds=float(os.environ.get("ODC_SUPERVISOR_STABLE_AFTER_SECONDS", d.stable_after_seconds)),
        give_up_after=int(os.environ.get("ODC_SUPERVISOR_GIVE_UP_AFTER", d.give_up_after)),
    )


def cmd_supervise(root: Path) -> int:
    """Run the supervisor in the foreground until SIGTERM (``run`` starts it in the background)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s", stream=sys.stderr)
    registry = CollectorRegistry()
    metrics = SupervisorMetrics(registry)
    port = _env_port("ODC_SUPERVISOR_PORT", _ports().supervisor)
    start_http_server(port, addr="127.0.0.1", registry=registry)
    supervisor = Supervisor(_services(root), _restart_policy(), metrics, root / STATE_FILE)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    (root / PID_FILE).write_text(f"{os.getpid()}\n{json.dumps({'port': port})}\n")
    logging.getLogger("odc.supervisor").info(
        "watching %s; metrics on http://127.0.0.1:%d/metrics; %s",
        ", ".join(w.svc.label for w in supervisor.watched),
        port,
        supervisor.policy,
    )
    supervisor.run(stop)
    (root / PID_FILE).unlink(missing_ok=True)
    return 0


def _start_supervisor(root: Path, timeout: float = 30) -> None:
    if supervisor_pid(root) is not None:
        return
    log_path = root / "logs" / "supervisor.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    (root / STATE_FILE).unlink(missing_ok=True)
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "deploy.local", "supervise", "--root", str(root)],
            cwd=REPO_ROOT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if read_state(root) is not None:
            return
        if proc.poll() is not None:
            break
        time.sleep(0.2)
    raise ServiceError(f"the supervisor did not start; log tail:\n{tail(log_path, 30)}")


def _wait_ready(root: Path, svc: ServiceProcess, timeout: float = 90) -> float:
    started = time.monotonic()
    while time.monotonic() < started + timeout:
        if svc.ready():
            return time.monotonic() - started
        state = (read_state(root) or {}).get("services", {}).get(svc.label, {})
        if state.get("state") == "given-up":
            raise ServiceError(f"{svc.name} keeps failing at start-up; log tail:\n{tail(svc.log_path, 40)}")
        time.sleep(0.25)
    raise ServiceError(f"{svc.name} not ready after {timeout:.0f}s; log tail:\n{tail(svc.log_path, 40)}")


def _stop_supervisor(root: Path) -> None:
    pid = supervisor_pid(root)
    if pid is None:
        return
    _say("stopping the supervisor...")
    signal_group_or_pid(pid, signal.SIGTERM)
    if not wait_dead(pid, 10):
        signal_group_or_pid(pid, signal.SIGKILL)
        wait_dead(pid, 5)
    (root / PID_FILE).unlink(missing_ok=True)


# (file, dataset, commune or None for "each record's own"): each sent through the source profile next to it
# (FILE.profile.json, what `odc profile suggest` proposed), as a commune would send its own layout, and with
# ``odc send --as-of SAMPLES_AS_OF``: the events' sequence and occurred_at are that fixed time, so every later
# ``make run`` re-sends stale or unchanged events and never reverts a commune's change made since
# (samples/grandlyon/SOURCE.md). A fixed time no later than the edits it must never overwrite; bump it when a
# file is replaced by a newer export.
SAMPLES_AS_OF = "2022-04-01T00:00:00+00:00"
SAMPLES = (
    ("samples/grandlyon/toilettes.geojson", "public_toilets", None),
    ("samples/grandlyon/parcs.geojson", "parks_gardens", None),
    ("samples/grandlyon/marches.json", "markets", None),
    ("samples/grandlyon/velov.json", "bike_share_stations", None),
    ("samples/grandlyon/fontaines_potables.geojson", "drinking_fountains", None),
    ("samples/cerema/exemple-grand-lyon.csv", "delivery_areas", "69123"),
    ("samples/bnlc/bnlc-2026-05-21-rhone.csv", "carpool_places", None),
    ("samples/schema-examples/stations-taxi.csv", "taxi_ranks", None),
    ("samples/schema-examples/stationnement.csv", "parking", None),
    # national datasets: positions checked against France, communes against the whole COG, whatever the
    # territory; their records are incomplete (the 2014 export lacks most of GéoDAE's required fields)
    ("samples/montpellier/defibrillateurs.csv", "defibrillators", "34172"),
    ("samples/schema-examples/subventions.csv", "subsidies", "06004"),
)


def sample_command(path: str, dataset: str, commune: str | None) -> list[str]:
    """The `odc send` arguments for one bundled sample, through its profile when it has one."""
    args = ["send", str(REPO_ROOT / path), "--dataset", dataset]
    profile = REPO_ROOT / f"{path}.profile.json"
    if profile.is_file():
        args += ["--profile", str(profile)]
    if commune:
        args += ["--commune", commune]
    return args


def cmd_run(root: Path) -> int:
    rc = cmd_up(root)
    if rc:
        return rc
    # the store's schema to head before any service starts (each service also upgrades its own at start)
    _say("upgrading the database schema...")
    subprocess.run(
        [sys.executable, "-m", "services.cli.main", "schema", "upgrade"],
        check=True,
        env={**os.environ, "ODC_DATABASE_URL": _cluster(root).dsn},
        cwd=REPO_ROOT,
    )
    services = _services(root)
    was_up = {svc.name: svc.is_running() for svc in services}
    given_up = [n for n, v in ((read_state(root) or {}).get("services") or {}).items() if v.get("state") == "given-up"]
    if given_up:  # a new `make run` gives them a fresh start
        _say(f"the supervisor had given up on {', '.join(given_up)}: restarting it")
        _stop_supervisor(root)
    _start_supervisor(root)  # it starts the services that are not running, and restarts any that crash
    _say(f"supervisor started the services (log {root / 'logs' / 'supervisor.log'})")
    for svc in services:
        took = _wait_ready(root, svc)
        _say(f"{svc.name} {'already running' if was_up[svc.name] else 'ready'} on {svc.base_url} ({took:.1f}s)")
    broker, cluster = _broker(root), _cluster(root)
    env = odc_env(root)
    for path, dataset, commune in SAMPLES:
        _say(f"loading {path} into {dataset} (as of {SAMPLES_AS_OF})...")
        subprocess.run(
            [
                sys.executable,
                "-m",
                "services.cli.main",
                *sample_command(path, dataset, commune),
                "--as-of",
                SAMPLES_AS_OF,
                "--no-wait",
            ],
            check=True,
            env=env,
            cwd=REPO_ROOT,
        )
    _say("waiting for the versions to be published...")
    deadline = time.monotonic() + 60
    summary: dict = {}
    while time.monotonic() < deadline:
        out = subprocess.run(
            [sys.executable, "-m", "services.cli.main", "status", "--json"],
            check=False,
            capture_output=True,
            text=True,
            env=env,
            cwd=REPO_ROOT,
        )
        summary = json.loads(out.stdout) if out.stdout.strip() else {}  # exits non-zero while one is down
        if summary.get("datasets") and all(
            d["version"] > 0 for d in summary["datasets"] if d["id"] in {s[1] for s in SAMPLES}
        ):
            break
        time.sleep(1)
    print()
    print("odc is running.")
    for d in summary.get("datasets", []):
        print(f"  {d['id']:<20} {d['features']:>6} features   version {d['version']}")
    for s in summary.get("services", []):
        print(f"  {s['name']:<10} {'up  ' if s['up'] else 'DOWN'}  metrics: {s['metrics_url']}")
    print(f"  Kafka      {broker.bootstrap}")
    print(f"  PostGIS    {cluster.dsn}")
    print(f"  logs       {root / 'logs'}")
    print("Stop everything with `make down`; see `make status`.")
    print('`odc send` needs the Kafka credentials of a commune: eval "$(python -m deploy.local env)"')
    return 0


def cmd_down(root: Path) -> int:
    rc = 0
    _stop_supervisor(root)  # first, or it would restart what is being stopped
    for svc in reversed(_services(root)):
        if svc.is_running():
            _say(f"stopping {svc.name}...")
            svc.stop()
    kdir = root / "kafka"
    if (kdir / "broker.json").is_file():
        broker = KafkaBroker.from_data_dir(kdir)
        if broker.is_running():
            _say(f"stopping Kafka on {broker.bootstrap}...")
            broker.stop()
            _say("Kafka stopped")
        else:
            _say("Kafka not running")
    else:
        _say("Kafka not running")
    pdir = root / "postgres"
    if (pdir / "postgres.json").is_file():
        cluster = PostgresCluster.from_data_dir(pdir)
        if cluster.is_running():
            _say(f"stopping Postgres on port {cluster.port}...")
            try:
                cluster.stop()
                _say("Postgres stopped")
            except PostgresSetupError as e:
                _say(str(e))
                rc = 1
        else:
            _say("Postgres not running")
    else:
        _say("Postgres not running")
    return rc


def _status(root: Path) -> dict[str, dict[str, object]]:
    broker = _broker(root)
    cluster = _cluster(root)
    k_up = broker.is_running() and port_open(broker.port)
    p_up = cluster.is_running() and port_open(cluster.port)
    return {
        "kafka": {"up": k_up, "bootstrap": broker.bootstrap},
        "postgres": {"up": p_up, "dsn": cluster.dsn},
    }


def odc_env(root: Path) -> dict[str, str]:
    """The environment that points ``odc`` at this stack, wherever it runs (what make run and make status use)."""
    broker, cluster = _broker(root), _cluster(root)
    env = {
        **os.environ,
        # `odc send` as a commune would: its Kafka principal may only write the input topic
        **broker.access.env("ODC_INGEST_", COMMUNE_USERS[0]),
        "ODC_INGEST_KAFKA_BOOTSTRAP": broker.bootstrap,
        "ODC_INGEST_DATABASE_URL": cluster.dsn,
        "ODC_DATABASE_URL": cluster.dsn,
    }
    env.update({f"ODC_{s.name.upper()}_URL": s.base_url for s in _services(root)})
    return env


def cmd_status(root: Path, with_odc: bool = False) -> int:
    st: dict = _status(root)
    supervised = read_state(root)
    seen = (supervised or {}).get("services", {})
    st["services"] = {
        s.name: {"up": s.is_running() and s.ready(), "url": s.base_url, **seen.get(s.label, {})}
        for s in _services(root)
    }
    st["supervisor"] = {
        "up": supervised is not None,
        "metrics": f"http://127.0.0.1:{_env_port('ODC_SUPERVISOR_PORT', _ports().supervisor)}/metrics",
    }
    print(json.dumps(st), flush=True)
    everything = [st["kafka"]["up"], st["postgres"]["up"], st["supervisor"]["up"]]
    everything += [s["up"] for s in st["services"].values()]
    rc = 0 if all(everything) else 3
    if with_odc:  # `make status`: the pipeline's own view, of the same addresses
        cmd = [sys.executable, "-m", "services.cli.main", "status"]
        odc = subprocess.run(cmd, check=False, env=odc_env(root), cwd=REPO_ROOT)
        rc = rc or odc.returncode
    return rc


def cmd_env(root: Path, user: str) -> int:
    """Print shell exports that let `odc send` (IngestSettings) reach the local broker as ``user``."""
    broker = _broker(root)
    if not (broker.data_dir / "access" / "credentials.json").is_file():
        _say(f"no Kafka credentials under {broker.data_dir}: run `make run` (or `python -m deploy.local up`) first")
        return 1
    env = {**broker.access.env("ODC_INGEST_", user), "ODC_INGEST_KAFKA_BOOTSTRAP": broker.bootstrap}
    for key, value in env.items():
        print(f"export {key}={shlex.quote(value)}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deploy.local", description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=["up", "run", "down", "status", "supervise", "env"])
    parser.add_argument("--with-odc", action="store_true", help="status: then `odc status` on the same addresses")
    parser.add_argument(
        "--as",
        dest="user",
        default=COMMUNE_USERS[0],
        help=f"env: the Kafka principal to print settings for (default {COMMUNE_USERS[0]}, as a commune's `odc send`)",
    )
    parser.add_argument(
        "--root",
        type=Path,
        default=REPO_ROOT / ".local" / "run",
        help="data root (default <repo>/.local/run)",
    )
    args = parser.parse_args(argv)
    root: Path = args.root.resolve()
    try:
        if args.command == "up":
            return cmd_up(root)
        if args.command == "run":
            return cmd_run(root)
        if args.command == "down":
            return cmd_down(root)
        if args.command == "supervise":
            return cmd_supervise(root)
        if args.command == "env":
            return cmd_env(root, args.user)
        return cmd_status(root, args.with_odc)
    except (KafkaSetupError, PostgresSetupError, ServiceError, subprocess.CalledProcessError) as e:
        _say(f"ERROR: {e}")
        return 1


if __name__ == "__main__":
    sys.exit(main())
