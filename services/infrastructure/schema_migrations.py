"""Versioned schema migrations (alembic), one environment per owner of tables.

Each owner (normalise, publish, ingest, and ``shared`` for the tables of services/infrastructure) has its
own script directory (``<owner package>/migrations/versions/vNNNN_*.py``) and its own version table
(``alembic_version_<owner>``), so the services upgrade their own tables independently in one database.

A service upgrades its owners to head at start (:func:`upgrade_schema`): one transaction under one
advisory lock, so workers starting together wait for each other, and a failed migration leaves nothing
half done (PostgreSQL DDL is transactional).

Stores created before migrations existed (no version table) are upgraded from the start: the baseline
revisions create only what is missing (``checkfirst``) and the second revisions hold what the previous
release re-ran at every start (added columns and indexes, a backfill), so they run once and are recorded.

Add a revision: ``odc schema revision OWNER -m "what changes"`` writes the next numbered file; fill in
``upgrade()``/``downgrade()`` with ``alembic.op``; tests/integration/test_schema_migrations.py checks that
head equals the owner's SQLAlchemy tables.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, MetaData, text
from sqlalchemy.ext.asyncio import AsyncEngine

# One key for every owner: two owners may both create the postgis extension, and migrations are short.
SCHEMA_LOCK_KEY = 7431001


@dataclass(frozen=True)
class SchemaOwner:
    """A set of tables with one owner, its migration scripts and its version table."""

    name: str
    script_location: Path  # the directory holding env.py and versions/
    metadata: tuple[MetaData, ...]  # the live table definitions (the drift check compares head to them)

    @property
    def version_table(self) -> str:
        return f"alembic_version_{self.name}"

    def table_names(self) -> set[str]:
        return {t.name for m in self.metadata for t in m.tables.values()}


def alembic_config(owner: SchemaOwner, connection: Connection | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(owner.script_location))
    cfg.attributes["owner"] = owner
    cfg.attributes["connection"] = connection
    return cfg


def run_env(context: Any) -> None:
    """The body of every owner's env.py: migrate the connection the caller handed in (never offline)."""
    cfg = context.config
    owner: SchemaOwner = cfg.attributes["owner"]
    connection: Connection | None = cfg.attributes.get("connection")
    if connection is None:
        raise RuntimeError(f"schema {owner.name}: migrations run on a connection given by upgrade_schema")

    def include_object(obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any) -> bool:
        # only this owner's tables (one database holds every owner's, PostGIS its own)
        table = obj if type_ == "table" else getattr(obj, "table", None)
        return table is None or table.name in owner.table_names()

    context.configure(
        connection=connection,
        target_metadata=list(owner.metadata),
        version_table=owner.version_table,
        include_object=include_object,
    )
    with context.begin_transaction():
        context.run_migrations()


def upgrade_sync(connection: Connection, owner: SchemaOwner, revision: str = "head") -> None:
    command.upgrade(alembic_config(owner, connection), revision)


def downgrade_sync(connection: Connection, owner: SchemaOwner, revision: str) -> None:
    command.downgrade(alembic_config(owner, connection), revision)


def current_revision(connection: Connection, owner: SchemaOwner) -> str | None:
    ctx = MigrationContext.configure(connection, opts={"version_table": owner.version_table})
    return ctx.get_current_revision()


def head_revision(owner: SchemaOwner) -> str | None:
    return ScriptDirectory.from_config(alembic_config(owner)).get_current_head()


def pending_revisions(connection: Connection, owner: SchemaOwner) -> list[str]:
    """Revisions not yet applied, oldest first (empty when the store is at head)."""
    script = ScriptDirectory.from_config(alembic_config(owner))
    current = current_revision(connection, owner)
    revs = [r.revision for r in script.iterate_revisions("head", current)]
    return list(reversed(revs))


async def upgrade_schema(engine: AsyncEngine, *owners: SchemaOwner) -> None:
    """Bring each owner's tables to head, in one transaction under the schema advisory lock."""
    async with engine.begin() as conn:
        await conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": SCHEMA_LOCK_KEY})
        for owner in owners:
            await conn.run_sync(upgrade_sync, owner)


async def downgrade_schema(engine: AsyncEngine, owner: SchemaOwner, revision: str) -> None:
    async with engine.begin() as conn:
        await conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": SCHEMA_LOCK_KEY})
        await conn.run_sync(downgrade_sync, owner, revision)


_REVISION_TEMPLATE = '''"""{message}

Revision {rev} of the {owner} schema (after {down}).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "{rev}"
down_revision = {down_repr}
branch_labels = None
depends_on = None


def upgrade() -> None:
    raise NotImplementedError("write the change with op.add_column / op.create_table / op.execute ...")


def downgrade() -> None:
    raise NotImplementedError("undo upgrade(), or state why it cannot be undone")
'''


def write_revision(owner: SchemaOwner, message: str) -> Path:
    """The next numbered revision file of ``owner`` (``vNNNN_<slug>.py``), to be filled in by hand."""
    head = head_revision(owner)
    number = 1 if head is None else int(head) + 1
    rev = f"{number:04d}"
    slug = re.sub(r"[^a-z0-9]+", "_", message.lower()).strip("_")[:40] or "change"
    path = owner.script_location / "versions" / f"v{rev}_{slug}.py"
    path.write_text(
        _REVISION_TEMPLATE.format(
            message=message,
            rev=rev,
            owner=owner.name,
            down=head or "nothing",
            down_repr=f'"{head}"' if head else "None",
        )
    )
    return path


def owners_named(all_owners: Sequence[SchemaOwner], names: Sequence[str]) -> list[SchemaOwner]:
    by_name = {o.name: o for o in all_owners}
    unknown = [n for n in names if n not in by_name]
    if unknown:
        raise KeyError(f"unknown schema owner(s) {unknown}; known: {sorted(by_name)}")
    return [by_name[n] for n in names] if names else list(all_owners)
