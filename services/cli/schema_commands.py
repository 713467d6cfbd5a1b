"""``odc schema``: the database migrations of every owner of tables (upgrade, current, downgrade, and a new
revision file). The services upgrade their own tables at start; this is for operators and developers."""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer
from rich.console import Console
from sqlalchemy import Connection

from services.cli.settings import CliSettings
from services.infrastructure.database import make_engine
from services.infrastructure.schema_migrations import (
    SchemaOwner,
    current_revision,
    downgrade_schema,
    head_revision,
    owners_named,
    pending_revisions,
    upgrade_schema,
    write_revision,
)
from services.infrastructure.shared_schema import SHARED_SCHEMA
from services.ingest.adapters.tables import INGEST_SCHEMA
from services.normalise.adapters.tables import NORMALISE_SCHEMA
from services.publish.adapters.tables import PUBLISH_SCHEMA

# Every owner of tables, in the order a whole store is upgraded.
SCHEMA_OWNERS: tuple[SchemaOwner, ...] = (SHARED_SCHEMA, INGEST_SCHEMA, NORMALISE_SCHEMA, PUBLISH_SCHEMA)

schema_app = typer.Typer(help="database schema migrations (alembic), one set per owner of tables", no_args_is_help=True)
console = Console()
err = Console(stderr=True)

OwnersArg = Annotated[list[str] | None, typer.Argument(help="owners (shared, ingest, normalise, publish); default all")]


def _owners(names: list[str] | None) -> list[SchemaOwner]:
    try:
        return owners_named(SCHEMA_OWNERS, names or [])
    except KeyError as e:
        err.print(f"[red]error:[/red] {e.args[0]}")
        raise typer.Exit(2) from None


def _revisions(conn: Connection, owners: list[SchemaOwner]) -> dict[str, tuple[str | None, list[str]]]:
    return {o.name: (current_revision(conn, o), pending_revisions(conn, o)) for o in owners}


async def _read(owners: list[SchemaOwner]) -> dict[str, tuple[str | None, list[str]]]:
    engine = make_engine(CliSettings().database_url.get_secret_value(), pool_size=1)
    try:
        async with engine.connect() as conn:
            return await conn.run_sync(_revisions, owners)
    finally:
        await engine.dispose()


async def _upgrade(owners: list[SchemaOwner]) -> None:
    engine = make_engine(CliSettings().database_url.get_secret_value(), pool_size=1)
    try:
        await upgrade_schema(engine, *owners)
    finally:
        await engine.dispose()


@schema_app.command("upgrade")
def upgrade(owners: OwnersArg = None) -> None:
    """Apply every pending revision (what each service does at start)."""
    chosen = _owners(owners)
    before = asyncio.run(_read(chosen))
    asyncio.run(_upgrade(chosen))
    for o in chosen:
        was, pending = before[o.name]
        done = f"applied {', '.join(pending)}" if pending else "already at head"
        # one line per owner, never wrapped (scripts and operators grep it; 8 revisions passed 80 columns)
        console.print(f"{o.name:<10} {was or '(none)'} -> {head_revision(o)}  {done}", soft_wrap=True)


@schema_app.command("current")
def current(owners: OwnersArg = None) -> None:
    """Each owner's revision in the database, its head, and what is pending. Exit 1 if anything is pending."""
    chosen = _owners(owners)
    state = asyncio.run(_read(chosen))
    behind = False
    for o in chosen:
        rev, pending = state[o.name]
        behind = behind or bool(pending)
        console.print(
            f"{o.name:<10} at {rev or '(none)'}  head {head_revision(o)}  pending {', '.join(pending) or '-'}",
            soft_wrap=True,
        )
    if behind:
        raise typer.Exit(1)


@schema_app.command("downgrade", context_settings={"ignore_unknown_options": True})  # "-1" is a revision
def downgrade(
    owner: Annotated[str, typer.Argument(help="one owner")],
    revision: Annotated[str, typer.Argument(help="target revision, e.g. -1, 0001 or base")],
) -> None:
    """Undo revisions of one owner down to ``revision``."""
    (chosen,) = _owners([owner])

    async def run() -> None:
        engine = make_engine(CliSettings().database_url.get_secret_value(), pool_size=1)
        try:
            await downgrade_schema(engine, chosen, revision)
        finally:
            await engine.dispose()

    asyncio.run(run())
    state = asyncio.run(_read([chosen]))
    console.print(f"{owner} now at {state[owner][0] or '(none)'}")


@schema_app.command("revision")
def revision(
    owner: Annotated[str, typer.Argument(help="the owner of the tables that change")],
    message: Annotated[str, typer.Option("-m", "--message", help="what changes, e.g. 'rejection keeps a prefix'")],
) -> None:
    """Write the owner's next numbered revision file, to be filled in (no database needed)."""
    (chosen,) = _owners([owner])
    console.print(str(write_revision(chosen, message)))
