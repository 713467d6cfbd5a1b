"""docker-compose.yml and the Prometheus configs agree with the services' settings (no Docker needed).

What drifts silently otherwise: an environment variable whose name no settings field reads (a typo,
a renamed field: the service then runs on its default, e.g. 127.0.0.1:19092, and never reaches the
broker), a web port that is not the one published or scraped, a bootstrap address the broker does not
advertise. Each check names the service, the file and what to change.
"""

from __future__ import annotations

import difflib
import importlib.util
import os
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from pydantic import ValidationError
from pydantic_settings import BaseSettings

from services.cli.settings import CliSettings
from services.ingest.settings import IngestSettings
from services.normalise.settings import NormaliseSettings
from services.publish.settings import PublishSettings

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / "docker-compose.yml"
PROMETHEUS_COMPOSE = REPO / "deploy" / "prometheus" / "prometheus.yml"
PROMETHEUS_LOCAL = REPO / "deploy" / "prometheus" / "prometheus-local.yml"
LOCAL_SUPERVISOR_JOB, LOCAL_SUPERVISOR_TARGET = "odc-supervisor", "127.0.0.1:6068"  # deploy/local/__main__.py

KAFKA, POSTGIS, PROMETHEUS = "kafka", "postgis", "prometheus"
APP_SERVICES: dict[str, type[BaseSettings]] = {
    "ingest": IngestSettings,
    "normalise": NormaliseSettings,
    "publish": PublishSettings,
}
# Settings every containerised service must receive explicitly: its defaults are loopback addresses
# that mean nothing inside a container. If one of these fields is renamed, rename it here and in
# docker-compose.yml.
REQUIRED_FIELDS: dict[str, tuple[str, ...]] = {
    "ingest": ("kafka_bootstrap", "web_host"),
    "normalise": ("kafka_bootstrap", "database_url", "web_host"),
    "publish": ("kafka_bootstrap", "database_url", "web_host"),
}
PROMETHEUS_SELF = "localhost:9090"


# ------------------------------------------------------------------------------------------ helpers


def _load_yaml(path: Path) -> dict[str, Any]:
    assert path.is_file(), f"{path.relative_to(REPO)} is missing"
    with path.open(encoding="utf-8") as f:
        doc = yaml.safe_load(f)
    assert isinstance(doc, dict), f"{path.relative_to(REPO)} is not a YAML mapping"
    return doc


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    doc = _load_yaml(COMPOSE_FILE)
    assert isinstance(doc.get("services"), dict), "docker-compose.yml has no services: mapping"
    return doc


def _service(compose: dict[str, Any], name: str) -> dict[str, Any]:
    svc = compose["services"].get(name)
    assert isinstance(svc, dict), f"docker-compose.yml: service {name!r} is missing"
    return svc


def _environment(svc: dict[str, Any]) -> dict[str, str]:
    """A service's environment as strings, from either the mapping or the KEY=VALUE list form."""
    env = svc.get("environment") or {}
    if isinstance(env, list):
        pairs = (item.split("=", 1) if "=" in item else (item, "") for item in env)
        return {k: v for k, v in pairs}
    return {str(k): "" if v is None else str(v) for k, v in env.items()}


def _env_names(cls: type[BaseSettings]) -> dict[str, str]:
    """Environment variable name -> field name, as pydantic-settings reads them for ``cls``."""
    prefix = cls.model_config.get("env_prefix", "")
    names = {}
    for field_name, info in cls.model_fields.items():
        # An alias replaces prefix + name; none is used today, but honour it rather than mis-report.
        alias = info.validation_alias if isinstance(info.validation_alias, str) else info.alias
        names[(alias or f"{prefix}{field_name}").upper()] = field_name
    return names


def _effective_settings(compose: dict[str, Any], service: str, monkeypatch: pytest.MonkeyPatch) -> Any:
    """The settings ``service`` would see in its container: the compose environment and nothing else.

    Built by pydantic-settings itself, so a value it cannot parse fails here."""
    for key in list(os.environ):
        if key.upper().startswith("ODC_"):
            monkeypatch.delenv(key)
    for key, value in _environment(_service(compose, service)).items():
        monkeypatch.setenv(key, value)
    cls = APP_SERVICES[service]
    try:
        return cls()
    except ValidationError as bad:
        problem = str(bad)
    pytest.fail(f"docker-compose.yml: {cls.__name__} rejects the environment of {service!r}:\n{problem}")


def _setting(settings: Any, field: str, service: str) -> Any:
    if field not in type(settings).model_fields:
        pytest.fail(
            f"{type(settings).__name__} has no field {field!r} any more (renamed?): "
            f"update docker-compose.yml ({service}) and {Path(__file__).name}"
        )
    return getattr(settings, field)


def _web_ports(compose: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    ports = {}
    for service in APP_SERVICES:
        with monkeypatch.context() as mp:
            ports[service] = int(_setting(_effective_settings(compose, service, mp), "web_port", service))
    return ports


def _container_ports(svc: dict[str, Any]) -> dict[int, int | None]:
    """Container port -> published host port (None when only exposed or published on a random port)."""
    ports: dict[int, int | None] = {}
    for entry in svc.get("ports") or []:
        if isinstance(entry, dict):  # long syntax
            published = entry.get("published")
            ports[int(entry["target"])] = int(published) if published not in (None, "") else None
            continue
        spec = str(entry).split("/", 1)[0]  # drop /tcp
        parts = spec.rsplit(":", 2)  # [host_ip:][published:]target, IPv6 host_ip in brackets
        if "-" in parts[-1]:
            pytest.fail(f"port ranges are not supported by this test: {entry!r}")
        target = int(parts[-1])
        ports[target] = int(parts[-2]) if len(parts) >= 2 and parts[-2] else None
    for entry in svc.get("expose") or []:
        ports.setdefault(int(str(entry).split("/", 1)[0]), None)
    return ports


def _host_port(addr: str) -> tuple[str, int]:
    host, _, port = addr.strip().rpartition(":")
    assert host and port.isdigit(), f"not a host:port address: {addr!r}"
    return host, int(port)


def _listeners(value: str) -> dict[str, tuple[str, int]]:
    """'NAME://host:port,...' -> {NAME: (host, port)} (empty host when binding every interface)."""
    out = {}
    for item in filter(None, (s.strip() for s in value.split(","))):
        name, sep, addr = item.partition("://")
        assert sep, f"listener without a name:// prefix: {item!r}"
        host, _, port = addr.rpartition(":")
        out[name] = (host, int(port))
    return out


def _scrape_targets(path: Path) -> dict[str, set[str]]:
    """job_name -> static targets of a Prometheus configuration file."""
    doc = _load_yaml(path)
    jobs: dict[str, set[str]] = {}
    for job in doc.get("scrape_configs") or []:
        targets = {t for sc in job.get("static_configs") or [] for t in sc.get("targets") or []}
        jobs[job["job_name"]] = targets
    return jobs


def _unknown_names_message(service: str, cls: type[BaseSettings], unknown: list[str]) -> str:
    known = sorted(_env_names(cls))
    lines = [
        f"docker-compose.yml: service {service!r} sets environment variables that no field of "
        f"{cls.__module__}.{cls.__name__} reads (a typo or a renamed settings field?); the service "
        f"would silently run on that field's default:"
    ]
    for name in unknown:
        close = difflib.get_close_matches(name, known, n=1)
        lines.append(f"  {name}" + (f"  (did you mean {close[0]}?)" if close else ""))
    lines.append(f"  names {cls.__name__} reads: {', '.join(known)}")
    return "\n".join(lines)


# -------------------------------------------------------------------------------------------- tests


def test_all_services_are_defined(compose: dict[str, Any]) -> None:
    expected = {KAFKA, POSTGIS, *APP_SERVICES, PROMETHEUS}
    missing = expected - set(compose["services"])
    assert not missing, f"docker-compose.yml lacks services: {sorted(missing)}"


@pytest.mark.parametrize("service", sorted(APP_SERVICES))
def test_service_environment_names_are_settings_fields(compose: dict[str, Any], service: str) -> None:
    cls = APP_SERVICES[service]
    env = _environment(_service(compose, service))
    known = _env_names(cls)
    unknown = sorted(name for name in env if name.upper().startswith("ODC_") and name not in known)
    assert not unknown, _unknown_names_message(service, cls, unknown)

    for field in REQUIRED_FIELDS[service]:
        if field not in cls.model_fields:
            pytest.fail(
                f"{cls.__module__}.{cls.__name__} has no field {field!r} any more (renamed?): "
                f"update docker-compose.yml and REQUIRED_FIELDS in {Path(__file__).name}"
            )
        prefix = cls.model_config.get("env_prefix", "")
        env_name = f"{prefix}{field}".upper()
        default = cls.model_fields[field].default
        default = default.get_secret_value() if hasattr(default, "get_secret_value") else default
        assert env.get(env_name), (
            f"docker-compose.yml: service {service!r} must set {env_name} (its default {default!r} "
            "only makes sense outside a container)"
        )


@pytest.mark.parametrize("service", sorted(APP_SERVICES))
def test_service_environment_is_valid_for_its_settings(
    compose: dict[str, Any], service: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = _effective_settings(compose, service, monkeypatch)  # fails on a value it cannot parse
    web_host = _setting(settings, "web_host", service)
    assert web_host == "0.0.0.0", (
        f"docker-compose.yml: {service} binds its web server to {web_host!r}; "
        "it must listen on 0.0.0.0 to be reachable through its published port and by Prometheus"
    )


@pytest.mark.parametrize("service", sorted(APP_SERVICES))
def test_service_runs_its_module_from_the_project_image(compose: dict[str, Any], service: str) -> None:
    svc = _service(compose, service)
    build = svc.get("build")
    assert isinstance(build, dict), f"docker-compose.yml: {service} must be built (build: mapping)"
    dockerfile = REPO / build.get("context", ".") / build.get("dockerfile", "Dockerfile")
    assert dockerfile.resolve() == (REPO / "deploy" / "Dockerfile").resolve(), (
        f"docker-compose.yml: {service} must build deploy/Dockerfile, builds {dockerfile}"
    )
    command = svc.get("command")
    assert isinstance(command, list) and command[:3] == ["python", "-m", f"services.{service}"], (
        f"docker-compose.yml: {service} command must start with python -m services.{service}, got {command!r}"
    )
    assert importlib.util.find_spec(f"services.{service}.__main__") is not None, (
        f"services/{service}/__main__.py is gone: docker-compose.yml runs python -m services.{service}"
    )


@pytest.mark.parametrize("service", sorted(APP_SERVICES))
def test_service_waits_for_healthy_dependencies(compose: dict[str, Any], service: str) -> None:
    depends = _service(compose, service).get("depends_on")
    assert isinstance(depends, dict), f"docker-compose.yml: {service} depends_on must use conditions"
    needed = [KAFKA] + ([POSTGIS] if "database_url" in APP_SERVICES[service].model_fields else [])
    for dep in needed:
        cond = (depends.get(dep) or {}).get("condition")
        assert cond == "service_healthy", (
            f"docker-compose.yml: {service} must depend on {dep} with condition service_healthy, got {cond!r}"
        )
        assert _service(compose, dep).get("healthcheck", {}).get("test"), (
            f"docker-compose.yml: {dep} needs a healthcheck for service_healthy to mean anything"
        )


@pytest.mark.parametrize("service", sorted(APP_SERVICES))
def test_published_port_is_the_web_port(compose: dict[str, Any], service: str, monkeypatch: pytest.MonkeyPatch) -> None:
    svc = _service(compose, service)
    web_port = int(_setting(_effective_settings(compose, service, monkeypatch), "web_port", service))
    ports = _container_ports(svc)
    assert set(ports) == {web_port}, (
        f"docker-compose.yml: {service} listens on web_port {web_port} but publishes/exposes container "
        f"ports {sorted(ports)}"
    )
    health = " ".join(map(str, (svc.get("healthcheck") or {}).get("test") or []))
    if "http://" in health:
        assert f":{web_port}/" in health, (
            f"docker-compose.yml: {service} healthcheck does not probe web_port {web_port}: {health}"
        )


def test_prometheus_scrapes_the_services(compose: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    volumes = [
        str(v.get("source") if isinstance(v, dict) else v) for v in _service(compose, PROMETHEUS).get("volumes") or []
    ]
    assert any("deploy/prometheus/prometheus.yml" in v for v in volumes), (
        "docker-compose.yml: prometheus must mount deploy/prometheus/prometheus.yml"
    )

    web_ports = _web_ports(compose, monkeypatch)

    for path, host_of in ((PROMETHEUS_COMPOSE, lambda s: s), (PROMETHEUS_LOCAL, lambda s: "127.0.0.1")):
        jobs = _scrape_targets(path)
        if path == PROMETHEUS_LOCAL:  # make run's supervisor (deploy/local/supervisor.py) has no compose twin
            assert jobs.pop(LOCAL_SUPERVISOR_JOB, None) == {LOCAL_SUPERVISOR_TARGET}, f"{path.name}: supervisor job"
        targets = set().union(*jobs.values()) if jobs else set()
        expected = {f"{host_of(s)}:{p}" for s, p in web_ports.items()}
        rel = path.relative_to(REPO)
        assert targets - {PROMETHEUS_SELF} == expected, (
            f"{rel}: scrape targets {sorted(targets - {PROMETHEUS_SELF})} != the services' web addresses "
            f"{sorted(expected)} (missing {sorted(expected - targets)}, "
            f"stale {sorted(targets - expected - {PROMETHEUS_SELF})})"
        )
        for job, job_targets in jobs.items():
            assert job_targets, f"{rel}: job {job!r} has no targets"
            assert len(job_targets) == 1, f"{rel}: job {job!r} should scrape one service, has {sorted(job_targets)}"

    compose_jobs, local_jobs = _scrape_targets(PROMETHEUS_COMPOSE), _scrape_targets(PROMETHEUS_LOCAL)
    local_jobs.pop(LOCAL_SUPERVISOR_JOB)
    assert set(compose_jobs) == set(local_jobs), (
        f"prometheus.yml and prometheus-local.yml must define the same jobs: "
        f"{sorted(compose_jobs)} vs {sorted(local_jobs)}"
    )


def test_kafka_advertises_the_services_bootstrap(compose: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    kafka_env = _environment(_service(compose, KAFKA))
    for var in (
        "KAFKA_LISTENERS",
        "KAFKA_ADVERTISED_LISTENERS",
        "KAFKA_LISTENER_SECURITY_PROTOCOL_MAP",
        "KAFKA_CONTROLLER_LISTENER_NAMES",
        "KAFKA_CONTROLLER_QUORUM_VOTERS",
    ):
        assert kafka_env.get(var), f"docker-compose.yml: kafka must set {var}"
    listeners = _listeners(kafka_env["KAFKA_LISTENERS"])
    advertised = _listeners(kafka_env["KAFKA_ADVERTISED_LISTENERS"])
    protocol_map = kafka_env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"]
    protocols = dict(item.strip().split(":", 1) for item in protocol_map.split(","))
    by_address = {f"{host}:{port}": name for name, (host, port) in advertised.items()}
    kafka_hosts = {KAFKA, _service(compose, KAFKA).get("hostname", KAFKA)}

    for name, (_, port) in advertised.items():
        assert name in listeners and listeners[name][1] == port, (
            f"docker-compose.yml: kafka advertises {name} on port {port} but KAFKA_LISTENERS has {listeners.get(name)}"
        )
        assert name in protocols, (
            f"docker-compose.yml: listener {name} is missing from KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"
        )

    for service in APP_SERVICES:
        with monkeypatch.context() as mp:
            bootstrap = str(_setting(_effective_settings(compose, service, mp), "kafka_bootstrap", service))
        for addr in (a.strip() for a in bootstrap.split(",")):
            assert addr in by_address, (
                f"docker-compose.yml: {service} bootstraps from {addr!r} but kafka advertises "
                f"{sorted(by_address)} (KAFKA_ADVERTISED_LISTENERS)"
            )
            host, _ = _host_port(addr)
            assert host in kafka_hosts, (
                f"docker-compose.yml: {service} reaches Kafka at {addr!r}; inside the compose network "
                f"that host must be the kafka service ({sorted(kafka_hosts)})"
            )


def test_host_ports_match_the_cli_defaults(compose: dict[str, Any]) -> None:
    """The odc command on the host works against the compose stack with its defaults."""
    kafka = _service(compose, KAFKA)
    advertised = _listeners(_environment(kafka)["KAFKA_ADVERTISED_LISTENERS"])
    kafka_published = _container_ports(kafka)
    send_bootstrap = IngestSettings.model_fields["kafka_bootstrap"].default  # what `odc send` uses
    host, port = _host_port(send_bootstrap)
    host_listeners = [name for name, addr in advertised.items() if addr == (host, port)]
    assert host_listeners, (
        f"docker-compose.yml: `odc send` on the host bootstraps from {send_bootstrap} (IngestSettings "
        f"default) but kafka advertises no such listener: {advertised}"
    )
    assert kafka_published.get(port) == port, (
        f"docker-compose.yml: kafka must publish container port {port} on host port {port} "
        f"(published: {kafka_published})"
    )

    cli = CliSettings.model_fields
    db_port = urlsplit(cli["database_url"].default.get_secret_value()).port
    pg_published = set(_container_ports(_service(compose, POSTGIS)).values())
    assert db_port in pg_published, (
        f"docker-compose.yml: `odc status` reads Postgres on host port {db_port} (CliSettings default) "
        f"but postgis publishes {sorted(p for p in pg_published if p)}"
    )
    for service in APP_SERVICES:
        url_port = urlsplit(cli[f"{service}_url"].default).port
        published = set(_container_ports(_service(compose, service)).values())
        assert url_port in published, (
            f"docker-compose.yml: `odc status` probes {service} on host port {url_port} (CliSettings "
            f"default) but {service} publishes {sorted(p for p in published if p)}"
        )


WITH_DATABASE = sorted(s for s, cls in APP_SERVICES.items() if "database_url" in cls.model_fields)


@pytest.mark.parametrize("service", WITH_DATABASE)
def test_database_url_points_at_the_postgis_service(
    compose: dict[str, Any], service: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = _effective_settings(compose, service, monkeypatch)
    url = urlsplit(_setting(settings, "database_url", service).get_secret_value())
    pg = _environment(_service(compose, POSTGIS))
    expected = (POSTGIS, 5432, pg.get("POSTGRES_USER"), pg.get("POSTGRES_PASSWORD"), "/" + pg.get("POSTGRES_DB", ""))
    actual = (url.hostname, url.port or 5432, url.username, url.password, url.path)
    assert url.scheme.startswith("postgres") and actual == expected, (
        f"docker-compose.yml: {service} database URL (host, port, user, password, /db) {actual} does not "
        f"match the postgis service {expected}"
    )


def test_services_authenticate_to_kafka_as_users_that_kafka_setup_creates(
    compose: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every listener needs SASL; each service logs in with its own user, on the protocol of the listener it
    bootstraps from, and waits for kafka-setup, which creates that user (SCRAM-SHA-512) and its ACLs."""
    kafka_env = _environment(_service(compose, KAFKA))
    protocols = dict(
        item.strip().split(":", 1) for item in kafka_env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(",")
    )
    assert all(p.startswith("SASL_") for p in protocols.values()), (
        f"docker-compose.yml: a listener without SASL: {protocols}"
    )
    assert kafka_env.get("KAFKA_AUTHORIZER_CLASS_NAME", "").endswith("StandardAuthorizer")
    assert kafka_env.get("KAFKA_ALLOW_EVERYONE_IF_NO_ACL_FOUND") == "false"
    by_address = {f"{h}:{p}": name for name, (h, p) in _listeners(kafka_env["KAFKA_ADVERTISED_LISTENERS"]).items()}
    setup = _service(compose, "kafka-setup")
    script = "\n".join(map(str, setup.get("command") or []))
    users = set()
    for service in APP_SERVICES:
        with monkeypatch.context() as mp:
            settings = _effective_settings(compose, service, mp)
        listener = by_address[settings.kafka_bootstrap.split(",")[0].strip()]
        assert settings.kafka_security_protocol == protocols[listener], (
            f"docker-compose.yml: {service} speaks {settings.kafka_security_protocol} to listener {listener} "
            f"({protocols[listener]})"
        )
        assert settings.kafka_password.get_secret_value(), f"docker-compose.yml: {service} has no Kafka password"
        assert f"user {settings.kafka_username} " in script, (
            f"docker-compose.yml: kafka-setup does not create the Kafka user {settings.kafka_username!r} of {service}"
        )
        assert settings.kafka_username not in kafka_env.get("KAFKA_SUPER_USERS", ""), f"{service} is a super user"
        users.add(settings.kafka_username)
        cond = (_service(compose, service).get("depends_on") or {}).get("kafka-setup", {}).get("condition")
        assert cond == "service_completed_successfully", f"docker-compose.yml: {service} must wait for kafka-setup"
    assert len(users) == len(APP_SERVICES), f"docker-compose.yml: services share a Kafka user: {users}"
    assert "allow odc-commune --operation Write --topic odc.change-events\n" in script + "\n"
    assert "producer_byte_rate=" in script
