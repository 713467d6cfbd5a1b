"""``python -m deploy.local up|run|down|status|env [--root DIR] [--as USER]``

``up`` starts Kafka and PostgreSQL+PostGIS; ``run`` also starts the three odc services, waits until
they are ready, loads the bundled samples and prints a summary (what ``make run`` does); ``down``
stops everything; ``env`` prints the shell exports with which ``odc send`` reaches the broker as a
commune's Kafka principal (``--as`` another user of deploy/local/kafka_access.py).

Starts/stops the local Kafka broker and PostgreSQL+PostGIS cluster used by ``make run``.
Data lives under ``<repo>/.local/run/`` (``kafka/``, ``postgres/``) unless ``--root`` is given.
Ports: Kafka 19092 (controller 19093), Postgres 15432; override with ODC_KAFKA_PORT,
ODC_KAFKA_CONTROLLER_PORT, ODC_PG_PORT. ``status`` prints JSON
``{"kafka": {"up", "bootstrap"}, "postgres": {"up", "dsn"}}``.
Exit codes: 0 ok; 1 a service failed to start/stop; ``status`` exits 3 if either is down.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

from deploy.local import REPO_ROOT
from deploy.local.kafka import KafkaBroker, KafkaSetupError, ensure_kafka_jars, kafka_libs_dir
from deploy.local.kafka import _libs_complete as _kafka_libs_complete
from deploy.local.kafka_access import COMMUNE_USERS
from deploy.local.ports import port_open
from deploy.local.postgres import PostgresCluster, PostgresSetupError
from deploy.local.services import DEFAULT_PORTS, SERVICE_NAMES, ServiceError, ServiceProcess, service_env

DEFAULT_KAFKA_PORT = 19092
DEFAULT_KAFKA_CONTROLLER_PORT = 19093
DEFAULT_PG_PORT = 15432


def _say(msg: str) -> None:
    print(f"[deploy.local] {msg}", file=sys.stderr, flush=True)


def _env_port(name: str, default: int) -> int:
    raw = os.environ.get(name)
    return int(raw) if raw else default


def _broker(root: Path) -> KafkaBroker:
    data = root / "kafka"
    if (data / "broker.json").is_file():
        existing = KafkaBroker.from_data_dir(data)
        if existing.is_running():
            return existing
    return KafkaBroker(
        data,
        _env_port("ODC_KAFKA_PORT", DEFAULT_KAFKA_PORT),
        _env_port("ODC_KAFKA_CONTROLLER_PORT", DEFAULT_KAFKA_CONTROLLER_PORT),
    )


def _cluster(root: Path) -> PostgresCluster:
    data = root / "postgres"
    if (data / "postgres.json").is_file():
        existing = PostgresCluster.from_data_dir(data)
        if existing.is_running():
            return existing
    return PostgresCluster(data, _env_port("ODC_PG_PORT", DEFAULT_PG_PORT))


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
    for name in SERVICE_NAMES:
        port = _env_port(f"ODC_{name.upper()}_WEB_PORT", DEFAULT_PORTS[name])
        env = service_env(
            name, kafka_bootstrap=broker.bootstrap, kafka_access=broker.access, database_url=cluster.dsn, port=port
        )
        out.append(ServiceProcess(name, root, port, env))
    return out


SAMPLES = (
    ("samples/grandlyon/toilettes.geojson", "public_toilets"),
    ("samples/grandlyon/parcs.geojson", "parks_gardens"),
)


def cmd_run(root: Path) -> int:
    rc = cmd_up(root)
    if rc:
        return rc
    for svc in _services(root):
        was_up = svc.is_running()
        svc.start()
        took = svc.wait_ready()
        _say(f"{svc.name} {'already running' if was_up else 'ready'} on {svc.base_url} ({took:.1f}s)")
    broker, cluster = _broker(root), _cluster(root)
    env = {
        **os.environ,
        # the samples are sent as a commune would (`odc send`): its principal may only write the input topic
        **broker.access.env("ODC_INGEST_", COMMUNE_USERS[0]),
        "ODC_INGEST_KAFKA_BOOTSTRAP": broker.bootstrap,
        "ODC_INGEST_DATABASE_URL": cluster.dsn,
        "ODC_DATABASE_URL": cluster.dsn,
    }
    for path, dataset in SAMPLES:
        _say(f"loading {path} into {dataset}...")
        subprocess.run(
            [sys.executable, "-m", "services.cli.main", "send", str(REPO_ROOT / path), "--dataset", dataset],
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
        summary = json.loads(out.stdout) if out.returncode == 0 and out.stdout.strip() else {}
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


def cmd_status(root: Path) -> int:
    st: dict = _status(root)
    st["services"] = {s.name: {"up": s.is_running() and s.ready(), "url": s.base_url} for s in _services(root)}
    print(json.dumps(st))
    return 0 if st["kafka"]["up"] and st["postgres"]["up"] else 3


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
    parser.add_argument("command", choices=["up", "run", "down", "status", "env"])
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
        if args.command == "env":
            return cmd_env(root, args.user)
        return cmd_status(root)
    except (KafkaSetupError, PostgresSetupError, ServiceError, subprocess.CalledProcessError) as e:
        _say(f"ERROR: {e}")
        return 1


if __name__ == "__main__":
    sys.exit(main())
