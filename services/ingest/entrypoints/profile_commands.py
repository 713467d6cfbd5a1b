"""``odc profile suggest|save|list|show``: a commune's file layout, proposed from the file, confirmed by the
user, saved per (commune, dataset, source) and versioned; ``odc send --profile`` uses it."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table
from sqlalchemy.ext.asyncio import AsyncEngine

from services.contract.datasets.catalogue import DatasetCatalogue
from services.infrastructure.database import make_engine
from services.ingest.adapters.profile_store import PostgresProfileStore
from services.ingest.adapters.tables import create_ingest_schema
from services.ingest.domain.profile_suggestion import ProfileSuggestion, suggest_profile
from services.ingest.domain.source_profiles import (
    ProfileError,
    SourceProfile,
    profile_from_dict,
    profile_to_dict,
)
from services.ingest.domain.source_records import UnreadableFile, decode_text, reader_for
from services.ingest.service_layer.ports import StoredProfile
from services.ingest.settings import IngestSettings

console = Console()
err = Console(stderr=True)
ALL_COMMUNES = "*"

profile_app = typer.Typer(
    help="Source profiles: a commune's file layout (columns -> dataset fields, values, position), saved and versioned",
    no_args_is_help=True,
)


def _run(work: Any) -> Any:
    from services.ingest.entrypoints.commune_commands import database_url

    async def go() -> Any:
        engine: AsyncEngine = make_engine(database_url(), pool_size=2)
        try:
            await create_ingest_schema(engine)
            return await work(PostgresProfileStore(engine))
        finally:
            await engine.dispose()

    return asyncio.run(go())


def suggestion_for(path: Path, dataset: str, fmt: str | None = None, territory: str | None = None) -> ProfileSuggestion:
    """Read FILE and propose a profile for DATASET (raises UnreadableFile, KeyError for an unknown dataset), under
    the ``territory`` setting (default: the deployment's ODC_TERRITORY)."""
    definition = DatasetCatalogue.load(territory=territory or IngestSettings().territory).get(dataset)
    if definition is None:
        raise KeyError(dataset)
    data = path.read_bytes()
    records = list(reader_for(path.name, fmt)(data))
    return suggest_profile(records, definition, own_geometry=is_geojson(data))


def is_geojson(data: bytes) -> bool:
    """A GeoJSON Feature or FeatureCollection carries its own geometry; the positions the readers guess from the
    columns of a CSV or a JSON array of flat objects are left for the suggestion to find and show."""
    try:
        doc = json.loads(decode_text(data))
    except ValueError:
        return False
    return isinstance(doc, dict) and doc.get("type") in ("Feature", "FeatureCollection")


def load_profile_file(path: Path) -> SourceProfile:
    try:
        return profile_from_dict(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError) as exc:
        raise ProfileError(f"cannot read the profile {path}: {exc}") from exc


def print_suggestion(s: ProfileSuggestion, out: Path | None) -> None:
    p = s.profile
    t = Table(
        "source column", "dataset field", "confidence", "how", "value map", title=f"proposed profile for {p.dataset}"
    )
    for m in p.fields:
        values = ", ".join(f"{k}→{v}" for k, v in m.values[:6]) + (" …" if len(m.values) > 6 else "")
        colour = "green" if m.confidence >= 0.9 else "yellow"
        t.add_row(m.column, m.field, f"[{colour}]{m.confidence:.2f}[/{colour}]", m.why, values)
    console.print(t)
    g = p.geometry
    console.print(f"position: {s.geometry_why}; kind {g.kind}, columns {list(g.columns)}, CRS {g.crs or 'as declared'}")
    console.print(f"identity: {', '.join(p.id_columns) or 'the mapped identity field'}")
    console.print(f"commune column: {p.commune_column or '— (give --commune when sending)'}")
    if s.unmapped_columns:
        console.print(
            f"[yellow]columns not mapped[/yellow] ({len(s.unmapped_columns)}; kept with each record under odc:extra): "
            + ", ".join(s.unmapped_columns)
        )
    required = [f for f, req in s.missing_fields if req]
    optional = [f for f, req in s.missing_fields if not req]
    if required:
        console.print(f"[red]required fields nothing maps to[/red] ({len(required)}): " + ", ".join(required))
    if optional:
        console.print(f"optional fields nothing maps to ({len(optional)}): " + ", ".join(optional))
    for fld, labels in s.unmapped_values:
        console.print(f"[yellow]{fld}[/yellow]: values outside the schema's list: " + ", ".join(labels))
    if out is not None:
        console.print(
            f"profile written to {out}: check it, edit it if needed, then `odc profile save {out} --commune INSEE "
            f"--source NAME` or send with `odc send FILE --dataset {p.dataset} --profile {out}`"
        )


@profile_app.command("suggest")
def profile_suggest(
    file: Annotated[Path, typer.Argument(help="the commune's file (CSV, GeoJSON, JSON)")],
    dataset: Annotated[str, typer.Option(help="canonical dataset id (odc datasets)")],
    out: Annotated[
        Path | None, typer.Option(help="where to write the profile (default FILE.<dataset>.profile.json)")
    ] = None,
    fmt: Annotated[str | None, typer.Option("--format", help="geojson, json or csv (default: from the name)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the suggestion as JSON")] = False,
) -> None:
    """Propose a profile from FILE's header and values: mapping with confidence, unmapped columns, unmapped fields."""
    try:
        s = suggestion_for(file, dataset, fmt)
    except KeyError:
        err.print(f"[red]error:[/red] unknown dataset {dataset!r} (see `odc datasets`)")
        raise typer.Exit(2) from None
    except (OSError, UnreadableFile) as bad:
        err.print(f"[red]error:[/red] {bad}")
        raise typer.Exit(2) from bad
    target = out or file.with_name(f"{file.name}.{dataset}.profile.json")
    doc = profile_to_dict(s.profile)
    try:
        target.write_text(json.dumps(doc, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    except OSError as bad:
        err.print(f"[red]error:[/red] cannot write the profile to {target}: {bad} (give --out)")
        raise typer.Exit(2) from bad
    if as_json:
        print(
            json.dumps(
                {
                    "profile": doc,
                    "position": s.geometry_why,
                    "unmapped_columns": list(s.unmapped_columns),
                    "missing_fields": [{"field": f, "required": r} for f, r in s.missing_fields],
                    "values_outside_enum": {f: list(v) for f, v in s.unmapped_values},
                    "written_to": str(target),
                },
                ensure_ascii=False,
            )
        )
        return
    print_suggestion(s, target)


@profile_app.command("save")
def profile_save(
    file: Annotated[Path, typer.Argument(help="a profile file (from odc profile suggest, edited)")],
    source: Annotated[str, typer.Option(help="a name for the file it describes, e.g. 'sig-export' or the file name")],
    commune: Annotated[str | None, typer.Option(help="INSEE code of the commune whose files it describes")] = None,
    all_communes: Annotated[
        bool, typer.Option("--all-communes", help="a Métropole profile: each record's commune from the file")
    ] = False,
    by: Annotated[str, typer.Option(help="who saves it (kept with the version)")] = "",
) -> None:
    """Save a profile as a new version of (commune, dataset, source)."""
    from services.ingest.entrypoints.commune_commands import _check_insee

    if (commune is None) == (not all_communes):
        err.print("[red]error:[/red] give either --commune INSEE or --all-communes")
        raise typer.Exit(2)
    if commune is not None:
        _check_insee(commune)
    try:
        profile = load_profile_file(file)
    except ProfileError as bad:
        err.print(f"[red]error:[/red] {bad}")
        raise typer.Exit(2) from bad
    if DatasetCatalogue.load(territory=IngestSettings().territory).get(profile.dataset) is None:
        err.print(f"[red]error:[/red] the profile names an unknown dataset {profile.dataset!r}")
        raise typer.Exit(2)
    key = commune or ALL_COMMUNES
    saved: StoredProfile = _run(lambda store: store.save(key, profile.dataset, source, profile_to_dict(profile), by))
    console.print(
        f"profile {saved.commune}/{saved.dataset}/{saved.source} version {saved.version} saved; "
        f"send with `odc send FILE --dataset {saved.dataset} --profile {saved.source}"
        f"{' --commune ' + commune if commune else ''}`"
    )


def _summary(p: StoredProfile) -> dict[str, Any]:
    return {
        "commune": p.commune,
        "dataset": p.dataset,
        "source": p.source,
        "version": p.version,
        "saved_by": p.saved_by,
        "saved_at": p.saved_at.isoformat(),
    }


@profile_app.command("list")
def profile_list(
    commune: Annotated[str | None, typer.Option(help="only this commune's profiles ('*' for the Métropole's)")] = None,
    dataset: Annotated[str | None, typer.Option()] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Saved profiles, latest version of each."""
    rows: list[StoredProfile] = _run(lambda store: store.list_latest(commune, dataset))
    if as_json:
        print(json.dumps([_summary(r) for r in rows], ensure_ascii=False))
        return
    t = Table("commune", "dataset", "source", "version", "fields", "saved at", "by")
    for r in rows:
        t.add_row(
            r.commune,
            r.dataset,
            r.source,
            str(r.version),
            str(len(r.profile.get("fields", []))),
            r.saved_at.isoformat()[:19],
            r.saved_by,
        )
    console.print(t)


@profile_app.command("show")
def profile_show(
    dataset: Annotated[str, typer.Option()],
    source: Annotated[str, typer.Option()],
    commune: Annotated[str, typer.Option(help="INSEE code, or '*' for a Métropole profile")] = ALL_COMMUNES,
    version: Annotated[int | None, typer.Option(help="a given version (default the latest)")] = None,
) -> None:
    """A saved profile's document (JSON) and its versions."""

    async def work(store: PostgresProfileStore) -> tuple[StoredProfile | None, list[StoredProfile]]:
        return await store.get(commune, dataset, source, version), await store.versions(commune, dataset, source)

    found, versions = _run(work)
    if found is None:
        err.print(
            f"[red]error:[/red] no profile {commune}/{dataset}/{source}" + (f" version {version}" if version else "")
        )
        raise typer.Exit(1)
    err.print(
        f"{found.commune}/{found.dataset}/{found.source} version {found.version} of "
        f"{', '.join(str(v.version) for v in versions)}"
    )
    print(json.dumps({**_summary(found), "profile": found.profile}, ensure_ascii=False, indent=2))


def saved_profile(commune: str | None, dataset: str, source: str) -> SourceProfile | None:
    """The latest saved profile of (commune or '*', dataset, source), or None."""
    found: StoredProfile | None = _run(lambda store: store.get(commune or ALL_COMMUNES, dataset, source))
    return profile_from_dict(found.profile) if found is not None else None
