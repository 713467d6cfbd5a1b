"""``odc token``, ``odc key``, ``odc connector`` and ``odc status --commune``: the commune-facing commands,
mounted on the ``odc`` CLI (services/cli/main.py). Each builds its adapters from the settings and runs once."""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table
from sqlalchemy.ext.asyncio import AsyncEngine

from services.contract.codecs import Codecs
from services.contract.datasets.catalogue import DatasetCatalogue
from services.infrastructure.api_tokens import PostgresTokenStore
from services.infrastructure.database import make_engine
from services.infrastructure.kafka_security import KafkaClientSecurity
from services.infrastructure.kafka_topics import TopicSpec, ensure_topics
from services.infrastructure.signing_keys import (
    issue_signing_key,
    list_signing_keys,
    named_admin_key,
    revoke_signing_key,
)
from services.ingest.adapters.connector_store import ConnectorExists, PostgresConnectorStore
from services.ingest.adapters.kafka_event_publisher import KafkaEventPublisher
from services.ingest.adapters.profile_store import PostgresProfileStore
from services.ingest.adapters.snapshot_fetcher import SnapshotFetcherAdapter
from services.ingest.adapters.status_read_model import PostgresStatusReadModel
from services.ingest.adapters.tables import create_ingest_schema
from services.ingest.service_layer import run_connector as rc
from services.ingest.service_layer.ports import ConnectorConfig, PublishFailed, RecordsTooLarge
from services.ingest.settings import IngestSettings

T = TypeVar("T")
console = Console()
err = Console(stderr=True)
INSEE = re.compile(r"^(\d{5}|2[AB]\d{3})$")
_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*([smhd])")

token_app = typer.Typer(
    help="API tokens: the communes' push tokens and the operators' admin tokens (stored hashed)", no_args_is_help=True
)
key_app = typer.Typer(help="Signing keys of the Kafka path (one per commune producer)", no_args_is_help=True)
connector_app = typer.Typer(help="Snapshot connectors that mirror a commune's published file", no_args_is_help=True)


def database_url() -> str:
    """The CLI's database (ODC_DATABASE_URL, as for ``odc status``), else the ingest service's."""
    from services.cli.settings import CliSettings

    return CliSettings().database_url.get_secret_value()


def _run(work: Callable[[AsyncEngine], Awaitable[T]]) -> T:
    async def go() -> T:
        engine = make_engine(database_url(), pool_size=2)
        try:
            await create_ingest_schema(engine)
            return await work(engine)
        finally:
            await engine.dispose()

    return asyncio.run(go())


def _check_insee(commune: str) -> str:
    if not INSEE.match(commune):
        err.print(f"[red]error:[/red] {commune!r} is not an INSEE code (5 characters, e.g. 69266)")
        raise typer.Exit(2)
    return commune


def parse_duration(text: str) -> float:
    """``10m``, ``1h30m``, ``45s``, ``1d`` -> seconds; ``manual`` -> 0 (never scheduled, run by hand)."""
    if text.strip().lower() == "manual":
        return 0.0
    parts = _DURATION.findall(text.strip().lower())
    if not parts or _DURATION.sub("", text.strip().lower()).strip():
        raise typer.BadParameter(f"{text!r}: use a duration like 30s, 10m, 1h or 1h30m")
    return sum(float(n) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[u] for n, u in parts)


# ------------------------------------------------------------------------------------------ tokens
@token_app.command("create")
def token_create(
    commune: Annotated[str | None, typer.Option(help="INSEE code of the commune the token writes for")] = None,
    admin: Annotated[
        bool,
        typer.Option("--admin", help="the Métropole's operator token: writes every commune, manages webhooks"),
    ] = False,
    label: Annotated[str, typer.Option(help="a note: who holds it")] = "",
) -> None:
    """Create an API token (push API; with --admin also the publish API's webhook subscriptions); it is
    printed once and only its hash is kept."""
    if (commune is None) == (not admin):
        err.print("[red]error:[/red] give either --commune INSEE or --admin")
        raise typer.Exit(2)
    if commune is not None:
        _check_insee(commune)
    token_id, token = _run(lambda e: PostgresTokenStore(e).issue(commune, label))
    err.print(
        f"token {token_id} for {'every commune (admin)' if admin else 'commune ' + str(commune)}; "
        "keep it secret, it is not shown again:"
    )
    print(token)


@token_app.command("revoke")
def token_revoke(token_id: Annotated[str, typer.Argument(help="the token id (second part of odc_<id>_...)")]) -> None:
    """Revoke a token: requests with it get 401 from now on."""
    if not _run(lambda e: PostgresTokenStore(e).revoke(token_id)):
        err.print(f"[red]error:[/red] no active token {token_id!r}")
        raise typer.Exit(1)
    console.print(f"token {token_id} revoked")


@token_app.command("list")
def token_list(
    commune: Annotated[str | None, typer.Option(help="only this commune's tokens")] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """List tokens (never their secrets)."""
    rows = _run(lambda e: PostgresTokenStore(e).list_all(commune))
    if as_json:
        print(json.dumps(rows, ensure_ascii=False))
        return
    t = Table("token id", "commune", "label", "created", "revoked")
    for r in rows:
        t.add_row(
            r["token_id"], r["commune"] or "admin", r["label"], r["created_at"][:19], (r["revoked_at"] or "")[:19]
        )
    console.print(t)


# -------------------------------------------------------------------------------------- signing keys
@key_app.command("create")
def key_create(
    commune: Annotated[str | None, typer.Option(help="INSEE code: the key signs this commune's events only")] = None,
    admin: Annotated[bool, typer.Option("--admin", help="the Métropole's key: signs for every commune")] = False,
    out: Annotated[Path | None, typer.Option(help="write the key file here (else print it)")] = None,
    label: Annotated[str, typer.Option()] = "",
) -> None:
    """Create a signing key for a commune's Kafka producer; prints (or writes) the key file once."""
    if (commune is None) == (not admin):
        err.print("[red]error:[/red] give either --commune INSEE or --admin")
        raise typer.Exit(2)
    if commune is not None:
        _check_insee(commune)

    async def work(engine: AsyncEngine) -> Any:
        return await issue_signing_key(engine, commune, label)

    issued = _run(work)
    doc = json.dumps({"key_id": issued.key_id, "secret": issued.secret.hex(), "commune": issued.commune})
    if out is not None:
        out.write_text(doc + "\n", encoding="utf-8")
        out.chmod(0o600)
        err.print(f"key {issued.key_id} written to {out} (mode 600)")
    else:
        print(doc)


@key_app.command("revoke")
def key_revoke(key_id: str) -> None:
    """Revoke a signing key: the normaliser rejects its events within a few seconds."""

    async def work(engine: AsyncEngine) -> bool:
        return await revoke_signing_key(engine, key_id)

    if not _run(work):
        err.print(f"[red]error:[/red] no active key {key_id!r}")
        raise typer.Exit(1)
    console.print(f"key {key_id} revoked")


@key_app.command("list")
def key_list(
    commune: Annotated[str | None, typer.Option()] = None, as_json: Annotated[bool, typer.Option("--json")] = False
) -> None:
    """List signing keys (never their secrets)."""

    async def work(engine: AsyncEngine) -> list[dict[str, object]]:
        return await list_signing_keys(engine, commune)

    rows = _run(work)
    if as_json:
        print(json.dumps(rows, ensure_ascii=False))
        return
    t = Table("key id", "commune", "label", "created", "revoked")
    for r in rows:
        t.add_row(
            str(r["key_id"]),
            str(r["commune"] or "admin"),
            str(r["label"]),
            str(r["created_at"])[:19],
            str(r["revoked_at"] or "")[:19],
        )
    console.print(t)


# -------------------------------------------------------------------------------------- connectors
@connector_app.command("add")
def connector_add(
    dataset: Annotated[str, typer.Option(help="canonical dataset id (odc datasets)")],
    source: Annotated[str, typer.Option(help="the commune's published file: a local path or an http(s) URL")],
    commune: Annotated[str | None, typer.Option(help="INSEE code: mirror this commune's records only")] = None,
    all_communes: Annotated[
        bool, typer.Option("--all-communes", help="a Métropole connector: each record's commune from the file")
    ] = False,
    name: Annotated[str | None, typer.Option(help="connector name (default <commune>-<dataset>)")] = None,
    every: Annotated[
        str, typer.Option(help="how often the ingest service runs it: 30s, 10m, 1h... or manual (odc connector run)")
    ] = "1h",
    fmt: Annotated[str | None, typer.Option("--format", help="geojson, json or csv (default: from the name)")] = None,
    max_delete_share: Annotated[
        float | None, typer.Option(help="hold a run deleting more than this share of the features (0..1)")
    ] = None,
    profile: Annotated[
        str | None,
        typer.Option(help="the file's layout: the source name of a profile saved for this commune (odc profile save)"),
    ] = None,
) -> None:
    """Follow a published file: each run mirrors it (upserts for new and changed features, deletes for gone ones)."""
    if (commune is None) == (not all_communes):
        err.print("[red]error:[/red] give either --commune INSEE or --all-communes")
        raise typer.Exit(2)
    if commune is not None:
        _check_insee(commune)
    if DatasetCatalogue.load(territory=IngestSettings().territory).get(dataset) is None:
        err.print(f"[red]error:[/red] unknown dataset {dataset!r} (see `odc datasets`)")
        raise typer.Exit(2)
    share = IngestSettings().connector_max_delete_share if max_delete_share is None else max_delete_share
    if not 0 <= share <= 1:
        raise typer.BadParameter("--max-delete-share must be between 0 and 1")
    cfg = ConnectorConfig(
        name=name or f"{commune or 'metropole'}-{dataset}",
        commune=commune,
        dataset=dataset,
        source=source if "://" in source else str(Path(source).resolve()),
        fmt=fmt,
        every_seconds=parse_duration(every),
        max_delete_share=share,
        profile=profile,
    )
    try:
        _run(lambda e: PostgresConnectorStore(e).add(cfg))
    except ConnectorExists as exists:
        err.print(f"[red]error:[/red] {exists}")
        raise typer.Exit(1) from exists
    console.print(
        f"connector {cfg.name}: {cfg.source} → {dataset} for {commune or 'every commune'}, every {every}; "
        f"run it now with `odc connector run {cfg.name} --dry-run`"
    )


def _diff_table(report: rc.RunReport, limit: int) -> Table:
    t = Table("change", "commune", "feature id", title=f"diff of {report.connector}")
    d = report.diff
    if d is not None:
        for kind, refs in (("add", d.added), ("update", d.changed), ("delete", d.removed)):
            for ref in refs[:limit]:
                t.add_row(kind, ref.commune, ref.feature_id)
            if len(refs) > limit:
                t.add_row(kind, "…", f"{len(refs) - limit} more")
    return t


def _summary_table(report: rc.RunReport) -> Table:
    t = Table("", "", title=f"connector {report.connector}: {report.status}")
    for k, v in report.summary().items():
        if k not in ("connector", "status") and v not in (None, 0):
            t.add_row(k.replace("_", " "), str(v))
    return t


@connector_app.command("run")
def connector_run(
    name: str,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="show the diff; publish and record nothing")] = False,
    confirm: Annotated[bool, typer.Option("--confirm", help="apply a run the safety guard would hold")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="the run report as JSON")] = False,
    show: Annotated[int, typer.Option(help="rows of the diff to print per kind with --dry-run")] = 20,
) -> None:
    """Run a connector once now. Exit code 0 applied / up to date / dry run, 3 held by the guard, 1 failed."""
    settings = IngestSettings()

    async def work(engine: AsyncEngine) -> rc.RunReport:
        key = await named_admin_key(engine, settings.service_signing_key_id, "ingest service (HTTP API, connectors)")
        security = KafkaClientSecurity.from_settings(settings)
        await ensure_topics(
            settings.kafka_bootstrap,
            [TopicSpec(settings.topic_change_events, settings.input_partitions)],
            security=security,
        )
        publisher = KafkaEventPublisher(
            settings.kafka_bootstrap,
            settings.topic_change_events,
            Codecs(),
            security=security,
            signing_key=key,
            max_record_bytes=settings.max_record_bytes,
            max_request_bytes=settings.producer_max_request_bytes,
            bulk=settings.bulk_send,
        )
        await publisher.start()
        try:
            with Progress(
                TextColumn(f"{name}: publishing"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeRemainingColumn(),
                console=err,
                disable=as_json or not err.is_terminal,
            ) as bar:
                task = bar.add_task("publish", total=None)
                return await rc.run_connector(
                    name,
                    store=PostgresConnectorStore(engine),
                    fetcher=SnapshotFetcherAdapter(
                        timeout=settings.connector_fetch_timeout_seconds,
                        max_bytes=settings.connector_max_snapshot_bytes,
                    ),
                    sink=publisher,
                    catalogue=DatasetCatalogue.load(territory=settings.territory),
                    clock=_Clock(),
                    new_id=lambda: str(uuid.uuid4()),
                    dry_run=dry_run,
                    confirm=confirm,
                    progress=rc.Progress(
                        on_total=lambda n: bar.update(task, total=n), on_sent=lambda n: bar.advance(task, n)
                    ),
                    profiles=PostgresProfileStore(engine),
                )
        finally:
            await publisher.stop()

    try:
        report = _run(work)
    except rc.UnknownConnector as unknown:
        err.print(f"[red]error:[/red] no connector named {unknown} (see `odc connector list`)")
        raise typer.Exit(2) from unknown
    except PublishFailed as failed:
        err.print(f"[red]error:[/red] the broker did not take the events; nothing was recorded, run again: {failed}")
        raise typer.Exit(1) from failed
    except RecordsTooLarge as large:
        err.print(f"[red]error:[/red] nothing was published or recorded: {large}; fix the source")
        raise typer.Exit(1) from large
    if as_json:
        print(json.dumps(report.summary(), ensure_ascii=False))
    else:
        if dry_run:
            console.print(_diff_table(report, show))
        console.print(_summary_table(report))
        if report.status == rc.HELD:
            err.print(
                f"[yellow]held:[/yellow] {report.hold_reason} ({report.removed} of {report.previous_features} features "
                f"would be deleted). Check the source; apply anyway with `odc connector run {name} --confirm`."
            )
        if report.error:
            err.print(f"[red]failed:[/red] {report.error}")
    raise typer.Exit({rc.HELD: 3, rc.FAILED: 1, rc.BUSY: 1}.get(report.status, 0))


class _Clock:
    def now(self) -> datetime:
        return datetime.now(UTC)

    def monotonic(self) -> float:
        import time

        return time.monotonic()


@connector_app.command("list")
def connector_list(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Connectors, their schedule and their last run."""
    rows = _run(lambda e: PostgresConnectorStore(e).list_all())
    if as_json:
        print(json.dumps(rows, ensure_ascii=False, default=str))
        return
    t = Table("name", "commune", "dataset", "every", "features", "last run", "status", "source")
    for r in rows:
        t.add_row(
            r["name"],
            r["commune"] or "all",
            r["dataset"],
            f"{r['every_seconds']:.0f}s" if r["every_seconds"] else "manual",
            str(r["features"]),
            (r["last_run_at"] or "never")[:19],
            r["last_status"] or "",
            r["source"],
        )
    console.print(t)


# ---------------------------------------------------------------------------------- commune status
def commune_status(commune: str, as_json: bool) -> None:
    """``odc status --commune INSEE``: per dataset, what became of the commune's events."""
    _check_insee(commune)
    doc = _run(
        lambda e: PostgresStatusReadModel(e).commune_status(
            commune, DatasetCatalogue.load(territory=IngestSettings().territory).ids()
        )
    )
    if as_json:
        print(json.dumps(doc, ensure_ascii=False))
        return
    t = Table(
        "dataset",
        "received",
        "accepted",
        "rejected (by reason)",
        "live",
        "conforming / incomplete / refused",
        "last change applied",
        "in version",
        title=f"commune {commune}",
    )
    for d in doc["datasets"]:
        if not (d["events_received"] or d["live_features"]):
            continue
        last = d["last_change_applied"]
        reasons = ", ".join(f"{k} {v}" for k, v in sorted(d["rejected_by_reason"].items()))
        t.add_row(
            d["id"],
            str(d["events_received"]),
            str(d["accepted"]),
            f"{d['rejected']} {('(' + reasons + ')') if reasons else ''}",
            str(d["live_features"]),
            "{conforming} / {incomplete} / {refused}".format(**d["conformance"]),
            f"{last['kind']} {last['feature_id']} at {str(last['applied_at'])[:19]}" if last else "—",
            (str(last["version"]) if last and last["version"] is not None else "pending") if last else "—",
        )
    console.print(t)
    for r in doc["recent_rejections"][:10]:
        console.print(f"  [red]{r['reason']}[/red] {r['dataset']} {r['feature_id'] or ''}: {r['message']}")
