"""The ``odc`` command: one entry point for communes, subscribers and operators."""

from __future__ import annotations

import json
import sys
import urllib.request
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from services.cli import subscription_commands
from services.cli.schema_commands import schema_app
from services.cli.settings import CliSettings
from services.contract.datasets.catalogue import DatasetCatalogue
from services.ingest.entrypoints.commune_commands import commune_status, connector_app, key_app, token_app
from services.ingest.entrypoints.profile_commands import profile_app

app = typer.Typer(
    help="odc: live open data for the Métropole de Lyon's communes", no_args_is_help=True, add_completion=False
)
console = Console()
err = Console(stderr=True)
app.add_typer(token_app, name="token")
app.add_typer(key_app, name="key")
app.add_typer(connector_app, name="connector")
app.add_typer(profile_app, name="profile")
app.add_typer(schema_app, name="schema")


@app.command()
def send(
    file: Annotated[Path, typer.Argument(help="GeoJSON or CSV file of one commune's dataset")],
    dataset: Annotated[str, typer.Option(help="canonical dataset id (see `odc datasets`)")],
    commune: Annotated[
        str | None,
        typer.Option(help="INSEE code of the commune; omit to read it per record from the dataset's commune field"),
    ] = None,
    fmt: Annotated[str | None, typer.Option("--format", help="geojson or csv (default: from the file name)")] = None,
    key_file: Annotated[
        Path | None, typer.Option(help="signing key file from `odc key create` (default: the operator's key)")
    ] = None,
    as_of: Annotated[
        datetime | None,
        typer.Option(
            formats=["%Y-%m-%d", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M:%S%z"],
            help="the time FILE's content is as of (UTC unless it says): a re-send of the same file as of the same "
            "time changes nothing and never overwrites a change made after it (default: now)",
        ),
    ] = None,
    profile: Annotated[
        str | None,
        typer.Option(
            help="the file's layout: a profile file (odc profile suggest) or the source name of a saved profile"
        ),
    ] = None,
    wait: Annotated[
        bool, typer.Option("--wait/--no-wait", help="wait for what became of the records (bounded by --wait-seconds)")
    ] = True,
    wait_seconds: Annotated[float, typer.Option(help="longest wait for the records' outcome")] = 120.0,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="validate the file locally with the pipeline's own rules; send nothing")
    ] = False,
) -> None:
    """Publish one upsert event per feature of FILE, then say how many records got in (conforming or
    incomplete) and why the others were refused. Exit status: 0 when something got in, 1 when every record
    was refused, 3 when nothing was known to have got in by the end of the wait, 4 when the broker stayed
    unreachable (what was and was not sent is said), 2 on an error."""
    from services.ingest.domain.source_profiles import ProfileError
    from services.ingest.domain.source_records import UnreadableFile
    from services.ingest.entrypoints.profile_commands import load_profile_file, saved_profile
    from services.ingest.entrypoints.send_command import SendError, SendIncomplete, prepare_send, run_send
    from services.ingest.service_layer.ports import PublishFailed

    try:
        layout = None
        if profile is not None:
            layout = (
                load_profile_file(Path(profile))
                if Path(profile).is_file()
                else saved_profile(commune, dataset, profile)
            )
            if layout is None:
                raise SendError(
                    f"{profile!r} is neither a profile file nor a saved profile of "
                    f"{commune or '*'}/{dataset} (see `odc profile list`)"
                )
        if dry_run:
            from services.cli.dry_run import validate_locally

            prepared = prepare_send(file, dataset, commune, fmt=fmt, as_of=as_of, profile=layout)
            report = validate_locally(prepared.events)
            console.print(f"dry run: {len(prepared.events)} records of {file.name} checked for {dataset}, none sent")
            for line in report.lines(None):
                console.print(line, highlight=False, markup=False)
            raise typer.Exit(report.exit_code())
        summary = run_send(
            file,
            dataset,
            commune,
            fmt,
            show_progress=sys.stderr.isatty(),
            key_file=key_file,
            as_of=as_of,
            profile=layout,
            notify=lambda line: err.print(f"[yellow]{line}[/yellow]", soft_wrap=True),
            wait_seconds=wait_seconds if wait else 0.0,
        )
    except (SendError, UnreadableFile, PublishFailed, ProfileError) as bad:
        err.print(f"[red]error:[/red] {bad}")
        raise typer.Exit(2) from bad
    except SendIncomplete as incomplete:
        err.print(f"[red]error:[/red] {incomplete}", soft_wrap=True)
        raise typer.Exit(4) from incomplete
    rate = summary.events / summary.seconds if summary.seconds > 0 else 0.0
    console.print(
        f"sent {summary.events} events for {summary.dataset} in {summary.seconds:.2f}s "
        f"({rate:.0f} events/s, sequence {summary.sequence})"
    )
    if summary.report is None:
        if summary.wait_note:
            err.print(summary.wait_note)
        return
    details = f"odc report --commune {summary.commune or 'INSEE'} --dataset {summary.dataset}"
    for line in summary.report.lines(details):
        console.print(line, highlight=False, markup=False)
    code = summary.report.exit_code()
    if code == 1:
        err.print("[red]no record got in[/red]")
    raise typer.Exit(code)


@app.command()
def datasets(as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False) -> None:
    """List the canonical datasets of the catalogue."""
    cat = DatasetCatalogue.load(territory=CliSettings().territory)
    rows: list[dict[str, str]] = [
        {
            "id": d.id,
            "title": d.title_fr,
            "geometry": d.geometry.type,
            "identity": d.identity_field,
            "national_schema": f"{d.national_schema.name} {d.national_schema.version}" if d.national_schema else "",
            "carrier": d.geometry.carrier,
        }
        for d in cat
    ]
    if as_json:
        console.print_json(json.dumps(rows, ensure_ascii=False))
        return
    # Readable at 80 columns: no vertical rules, ids and the short columns never cut, titles and schema names
    # wrap (tests/unit/test_cli_datasets.py).
    # (the national schema's repository is in --json; the table shows its name and version)
    table = Table(box=None, padding=(0, 2, 0, 0), caption=f"territory: {cat.territory.name}")
    table.add_column("id", no_wrap=True, min_width=max(len(r["id"]) for r in rows))
    table.add_column("title", min_width=max(len(w) for r in rows for w in r["title"].split()))
    table.add_column("geometry", no_wrap=True)
    table.add_column("identity", no_wrap=True)
    table.add_column("national schema", overflow="fold")
    for r in rows:
        schema = (r["national_schema"] or "—").rsplit("/", 1)[-1]
        table.add_row(r["id"], r["title"], r["geometry"], r["identity"], schema)
    console.print(table)


@app.command()
def report(
    commune: Annotated[str, typer.Option(help="INSEE code of the commune")],
    dataset: Annotated[str | None, typer.Option(help="only this dataset")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
) -> None:
    """Why the commune's records were refused: per field and rule (Validata-like), then per record."""
    from services.cli.report_command import print_report

    print_report(CliSettings().database_url.get_secret_value(), commune, dataset, as_json, console)


def _probe(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return bool(resp.status == 200)
    except OSError:
        return False


@app.command()
def status(
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
    commune: Annotated[
        str | None, typer.Option(help="INSEE code: what became of this commune's events, per dataset")
    ] = None,
) -> None:
    """Features and latest version per dataset, and whether each service is up (exit 3 if one is down)."""
    if commune is not None:
        commune_status(commune, as_json)
        return
    from services.publish.adapters.status_queries import dataset_status

    s = CliSettings()
    services: list[dict[str, Any]] = [
        {"name": name, "metrics_url": f"{base}/metrics", "up": _probe(f"{base}/healthz")}
        for name, base in (("ingest", s.ingest_url), ("normalise", s.normalise_url), ("publish", s.publish_url))
    ]
    try:
        ds = dataset_status(s.database_url.get_secret_value(), DatasetCatalogue.load(territory=s.territory).ids())
        db_error = None
    except Exception as exc:  # noqa: BLE001 - reported, status must still print
        ds, db_error = [], str(exc).splitlines()[0]
    doc = {"datasets": ds, "services": services, "database": {"up": db_error is None, "error": db_error}}
    down = db_error is not None or not all(sv["up"] for sv in services)
    if as_json:
        print(json.dumps(doc, ensure_ascii=False))
        if down:
            raise typer.Exit(3)
        return
    t = Table("dataset", "features", "conforming", "incomplete", "refused", "version")
    for d in ds:
        c = d["conformance"]
        t.add_row(
            d["id"],
            str(d["features"]),
            str(c["conforming"]),
            str(c["incomplete"]),
            str(c["refused"]),
            str(d["version"]),
        )
    console.print(t)
    t2 = Table("service", "up", "metrics")
    for sv in services:
        t2.add_row(sv["name"], "yes" if sv["up"] else "[red]no[/red]", sv["metrics_url"])
    console.print(t2)
    if db_error:
        err.print(f"[red]database unreachable:[/red] {db_error}")
    if down:
        raise typer.Exit(3)  # something is down: scripts and `make status` see it in the exit status


subscription_commands.register(app)  # odc subscribe, odc subscriptions (webhooks, via the publish API)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
