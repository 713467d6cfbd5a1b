"""Schema changes without surprises: a store created by the previous release (d9e54e3, before migrations,
frozen in tests/fixtures/schema_d9e54e3.sql with rows in every table) upgrades through the services' own
start path with its data intact and ends with the schema of a fresh install; upgrading again changes
nothing; an owner's migrations go down and up again alone; workers starting together do not race; and
head equals the tables the code declares (a column added to tables.py without a revision fails here)."""

from __future__ import annotations

import asyncio
import shutil
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from psycopg import sql
from sqlalchemy import Connection
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from deploy.local.postgres import PostgresCluster
from services.cli.schema_commands import SCHEMA_OWNERS
from services.infrastructure.api_tokens import create_api_token_schema
from services.infrastructure.database import make_engine
from services.infrastructure.schema_migrations import (
    SchemaOwner,
    current_revision,
    downgrade_schema,
    head_revision,
    pending_revisions,
    upgrade_schema,
    upgrade_sync,
    write_revision,
)
from services.infrastructure.signing_keys import create_signing_key_schema
from services.ingest.adapters.tables import create_ingest_schema
from services.normalise.adapters.postgis_store import create_schema as create_normalise_schema
from services.normalise.adapters.tables import NORMALISE_SCHEMA
from services.publish.adapters.postgis_store import create_schema as create_publish_schema

pytestmark = pytest.mark.integration

PREVIOUS_RELEASE = Path(__file__).parents[1] / "fixtures" / "schema_d9e54e3.sql"
VERSION_TABLES = {o.version_table for o in SCHEMA_OWNERS}
RENAMED = {"version_diff": "version_diff_before_0005"}  # publish 0005: version_diff is now a view over change_log
# publish 0007: change_log is now a view over change_log_entry (its rows), its version derived from the versions' ranges
NOW_VIEWS = {"change_log": "change_log_entry"}
# normalise 0006: the outboxes' sent_at is gone, "sent" is at or before the relay's cursor (outbox_cursor)
DROPPED = {"feature_change_outbox": {"sent_at"}, "rejection": {"sent_at"}}
SENT_BEFORE_0006 = {
    "feature_change_outbox": "SELECT change_id FROM feature_change_outbox WHERE sent_at IS NOT NULL ORDER BY 1",
    "rejection": "SELECT seq FROM rejection WHERE sent_at IS NOT NULL ORDER BY 1",
}
SENT_AFTER_0006 = {
    "feature_change_outbox": "SELECT change_id FROM feature_change_outbox o, outbox_cursor c WHERE "
    "c.outbox = 'feature_change_outbox' AND (o.txid, o.change_id) <= (c.txid, c.last_id) ORDER BY 1",
    "rejection": "SELECT seq FROM rejection o, outbox_cursor c WHERE "
    "c.outbox = 'rejection' AND (o.txid, o.seq) <= (c.txid, c.last_id) ORDER BY 1",
}


async def start_every_service(engine: AsyncEngine) -> None:
    """What the three services run against the database at start (their entrypoints call exactly these)."""
    await create_normalise_schema(engine)  # normalise worker
    await create_signing_key_schema(engine)  # normalise worker: event signatures
    await create_publish_schema(engine)  # publish worker
    await create_api_token_schema(engine)  # publish API: operator tokens
    await create_ingest_schema(engine)  # ingest HTTP app and CLI


@pytest.fixture
def new_database(postgis: PostgresCluster) -> Iterator[Callable[[], str]]:
    """Empty databases with PostGIS (the app role is a superuser in the test cluster), dropped afterwards."""
    made: list[str] = []

    def make() -> str:
        name = f"odc_mig_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(postgis.dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        made.append(name)
        dsn = postgis.dsn.rsplit("/", 1)[0] + "/" + name
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("CREATE EXTENSION postgis")
        return dsn

    yield make
    with psycopg.connect(postgis.dsn, autocommit=True) as conn:
        for name in made:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture
async def engines() -> AsyncIterator[Callable[[str], AsyncEngine]]:
    made: list[AsyncEngine] = []

    def make(dsn: str) -> AsyncEngine:
        made.append(make_engine(dsn, pool_size=2))
        return made[-1]

    yield make
    for e in made:
        await e.dispose()


def previous_release_store(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(PREVIOUS_RELEASE.read_text())  # type: ignore[arg-type]  # a trusted file, many statements


def schema_of(dsn: str) -> dict[str, list[tuple[Any, ...]]]:
    """Columns (name, type, nullability, default; not position: a column added later comes last), geometry
    types and SRIDs, indexes, constraints and sequences of the public schema, PostGIS's own table aside."""
    queries = {
        "columns": "SELECT table_name, column_name, data_type, udt_name, character_maximum_length, is_nullable, "
        "column_default FROM information_schema.columns WHERE table_schema = 'public' "
        "AND table_name <> 'spatial_ref_sys' AND table_name NOT IN "
        "(SELECT viewname FROM pg_views WHERE schemaname = 'public') ORDER BY 1, 2",
        "geometry": "SELECT f_table_name, f_geometry_column, type, srid FROM geometry_columns ORDER BY 1, 2",
        "indexes": "SELECT tablename, indexname, indexdef FROM pg_indexes WHERE schemaname = 'public' "
        "AND tablename <> 'spatial_ref_sys' ORDER BY 1, 2",
        "constraints": "SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid) FROM pg_constraint "
        "WHERE connamespace = 'public'::regnamespace AND conrelid::regclass::text <> 'spatial_ref_sys' ORDER BY 1, 2",
        "sequences": "SELECT sequence_name, data_type FROM information_schema.sequences "
        "WHERE sequence_schema = 'public' ORDER BY 1",
        "compression": "SELECT a.attrelid::regclass::text, a.attname, a.attcompression FROM pg_attribute a "
        "JOIN pg_class c ON c.oid = a.attrelid WHERE c.relnamespace = 'public'::regnamespace AND c.relkind = 'r' "
        "AND a.attcompression <> '' ORDER BY 1, 2",
    }
    with psycopg.connect(dsn) as conn:
        return {k: conn.execute(q).fetchall() for k, q in queries.items()}  # type: ignore[arg-type]


def tables_of(dsn: str) -> set[str]:
    return {row[0] for row in schema_of(dsn)["columns"]}


def columns_of(dsn: str) -> dict[str, list[str]]:
    """Each table's columns, in order."""
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT table_name, column_name FROM information_schema.columns WHERE table_schema = 'public' "
            "ORDER BY table_name, ordinal_position"
        ).fetchall()
    out: dict[str, list[str]] = {}
    for table, column in rows:
        out.setdefault(table, []).append(column)
    return out


def data_of(
    dsn: str, skip: frozenset[str] = frozenset(), columns: dict[str, list[str]] | None = None
) -> dict[str, list[str]]:
    """Every row of every table but the version tables, in the row's text form (geometry as hex EWKB, bytea in
    hex: exact), sorted. With ``columns``: only those columns of each table (what an earlier release had; the
    columns later revisions add are checked by the schema comparison)."""
    out: dict[str, list[str]] = {}
    with psycopg.connect(dsn) as conn:
        for table in sorted(tables_of(dsn) - VERSION_TABLES - skip):
            if columns is None or table not in columns:
                q = sql.SQL("SELECT t::text FROM {} t ORDER BY 1").format(sql.Identifier(table))
            else:
                q = sql.SQL("SELECT ROW({})::text FROM {} t ORDER BY 1").format(
                    sql.SQL(", ").join(sql.Identifier("t", c) for c in columns[table]), sql.Identifier(table)
                )
            out[table] = [r[0] for r in conn.execute(q).fetchall()]
    return out


def views_of(dsn: str, columns: dict[str, list[str]]) -> dict[str, list[str]]:
    """The rows the views that replaced tables (NOW_VIEWS) serve, in the tables' ``columns``, as data_of (the
    table now holding them is checked through the view)."""
    with psycopg.connect(dsn) as conn:
        return {
            view: [
                r[0]
                for r in conn.execute(
                    sql.SQL("SELECT ROW({})::text FROM {} t ORDER BY 1").format(
                        sql.SQL(", ").join(sql.Identifier("t", c) for c in columns[view]), sql.Identifier(view)
                    )
                ).fetchall()
            ]
            for view in NOW_VIEWS
        }


def revisions_of(dsn: str) -> dict[str, str | None]:
    with psycopg.connect(dsn) as conn:
        out: dict[str, str | None] = {}
        for o in SCHEMA_OWNERS:
            exists = conn.execute("SELECT to_regclass(%s) IS NOT NULL", [o.version_table]).fetchone()
            row = (
                conn.execute(sql.SQL("SELECT version_num FROM {}").format(sql.Identifier(o.version_table))).fetchone()
                if exists and exists[0]
                else None
            )
            out[o.name] = None if row is None else row[0]
    return out


HEADS = {o.name: head_revision(o) for o in SCHEMA_OWNERS}


async def test_a_store_of_the_previous_release_upgrades_with_its_data_intact(
    new_database: Callable[[], str], engines: Callable[[str], AsyncEngine]
) -> None:
    old = new_database()
    previous_release_store(old)
    assert revisions_of(old) == {o.name: None for o in SCHEMA_OWNERS}  # no version table: made before migrations
    columns_before = {t: [c for c in cs if c not in DROPPED.get(t, set())] for t, cs in columns_of(old).items()}
    data_before = data_of(old, columns=columns_before)
    assert all(data_before.values()), {t: len(rows) for t, rows in data_before.items()}  # rows in every table
    with psycopg.connect(old) as conn:
        sent_before = {t: conn.execute(q).fetchall() for t, q in SENT_BEFORE_0006.items()}  # type: ignore[call-overload]
        all_ids = {
            t: conn.execute(q.replace(" WHERE sent_at IS NOT NULL", "")).fetchall() for t, q in SENT_BEFORE_0006.items()
        }  # type: ignore[call-overload]
    assert all(sent_before.values()) and all(len(all_ids[t]) > len(sent_before[t]) for t in all_ids)  # both kinds

    await start_every_service(engines(old))

    assert revisions_of(old) == HEADS
    after = data_of(old, columns=columns_before)
    for table, renamed in RENAMED.items():  # the table's rows intact under its new name
        after[table] = after.pop(renamed)
    # publish 0007: the change_log view serves every change with the version it had
    after = {t: rows for t, rows in after.items() if t not in NOW_VIEWS.values()} | views_of(old, columns_before)
    assert {t: rows for t, rows in after.items() if t in data_before} == data_before
    after.pop("outbox_cursor")  # normalise 0006: a cursor per outbox, checked just below
    # publish 0009: what waits for a version, one tally per dataset, as the log says
    with psycopg.connect(old) as conn:
        waiting = conn.execute(
            "SELECT e.dataset, count(*), max(e.received_at) FROM change_log_entry e LEFT JOIN dataset_state s "
            "ON s.dataset = e.dataset WHERE e.position > coalesce(s.cut_position, 0) GROUP BY 1 ORDER BY 1"
        ).fetchall()
        tallies = conn.execute("SELECT dataset, changes, newest_received_at FROM pending_tally ORDER BY 1").fetchall()
    assert tallies == waiting and waiting
    after.pop("pending_tally")
    assert not {t: rows for t, rows in after.items() if t not in data_before and rows}  # tables added: empty
    with psycopg.connect(old) as conn:  # the same rows count as sent, by the cursor now
        assert {t: conn.execute(q).fetchall() for t, q in SENT_AFTER_0006.items()} == sent_before  # type: ignore[call-overload]
    # publish 0005: the version_diff view still serves every diff written before, exactly
    with psycopg.connect(old) as conn:
        served = conn.execute("SELECT ROW(t.*)::text FROM version_diff t ORDER BY 1").fetchall()
    assert [r[0] for r in served] == data_before["version_diff"]
    fresh = new_database()
    await start_every_service(engines(fresh))
    assert schema_of(old) == schema_of(fresh)
    assert tables_of(fresh) - VERSION_TABLES == tables_of(old) - VERSION_TABLES != set()


async def test_subscriptions_of_the_previous_release_keep_the_legacy_signature_header(
    new_database: Callable[[], str], engines: Callable[[str], AsyncEngine]
) -> None:
    """Publish 0004 (Standard Webhooks): a subscription registered before is legacy (it keeps getting
    X-Odc-Signature for one release); one registered after is not."""
    old = new_database()
    previous_release_store(old)
    await start_every_service(engines(old))
    with psycopg.connect(old) as conn:
        rows = conn.execute(
            "SELECT id, legacy_signature, previous_secret, disabled_at FROM webhook_subscription"
        ).fetchall()
        assert rows == [("sub-1", True, None, None)]
        conn.execute(
            "INSERT INTO webhook_subscription (id, url, secret, active, created_at) "
            "VALUES ('new', 'https://example.org/h', 'whsec_x', true, now())"
        )
        assert conn.execute("SELECT legacy_signature FROM webhook_subscription WHERE id = 'new'").fetchone() == (False,)


async def test_upgrading_again_changes_nothing(
    new_database: Callable[[], str], engines: Callable[[str], AsyncEngine]
) -> None:
    old = new_database()
    previous_release_store(old)
    engine = engines(old)
    await start_every_service(engine)
    schema, data = schema_of(old), data_of(old)

    await start_every_service(engine)
    await upgrade_schema(engine, *SCHEMA_OWNERS)

    assert (schema_of(old), data_of(old), revisions_of(old)) == (schema, data, HEADS)
    async with engine.connect() as conn:
        assert await conn.run_sync(lambda c: {o.name: pending_revisions(c, o) for o in SCHEMA_OWNERS}) == {
            o.name: [] for o in SCHEMA_OWNERS
        }


async def test_an_older_store_gets_once_what_the_previous_release_redid_at_every_start(
    new_database: Callable[[], str], engines: Callable[[str], AsyncEngine]
) -> None:
    """Stores made before compared_folded, the version_diff_feature index and published_feature existed
    (the previous release patched them at every start): the v0002 revisions add the column and the index
    and fill published_feature from the diffs, once."""
    old = new_database()
    previous_release_store(old)
    published_before = data_of(old)["published_feature"]
    with psycopg.connect(old, autocommit=True) as conn:
        conn.execute("ALTER TABLE canonical_feature DROP COLUMN compared_folded")
        conn.execute("DROP INDEX version_diff_feature")
        conn.execute("DELETE FROM published_feature")
    columns = {t: [c for c in cs if c not in DROPPED.get(t, set())] for t, cs in columns_of(old).items()}
    other_data = data_of(old, skip=frozenset({"published_feature"}), columns=columns)  # later revisions' columns
    # are checked by the schema comparison

    await start_every_service(engines(old))

    fresh = new_database()
    await start_every_service(engines(fresh))
    assert schema_of(old) == schema_of(fresh)
    assert data_of(old)["published_feature"] == published_before
    after = data_of(old, skip=frozenset({"published_feature"}), columns=columns)
    for table, renamed in RENAMED.items():
        after[table] = after.pop(renamed)
    after = {t: rows for t, rows in after.items() if t not in NOW_VIEWS.values()} | views_of(old, columns)
    assert {t: rows for t, rows in after.items() if t in other_data} == other_data


async def test_one_owner_goes_down_to_nothing_and_up_again_alone(
    new_database: Callable[[], str], engines: Callable[[str], AsyncEngine]
) -> None:
    old = new_database()
    previous_release_store(old)
    engine = engines(old)
    await start_every_service(engine)
    schema, data = schema_of(old), data_of(old)
    normalise_tables = NORMALISE_SCHEMA.table_names()

    await downgrade_schema(engine, NORMALISE_SCHEMA, "-1")  # the latest revision
    assert revisions_of(old)["normalise"] == f"{int(HEADS['normalise'] or 0) - 1:04d}"
    await downgrade_schema(engine, NORMALISE_SCHEMA, "base")

    assert revisions_of(old) == {**HEADS, "normalise": None}
    assert tables_of(old) & normalise_tables == set()
    assert data_of(old) == {t: rows for t, rows in data.items() if t not in normalise_tables}  # others untouched
    await upgrade_schema(engine, NORMALISE_SCHEMA)
    assert schema_of(old) == schema
    assert revisions_of(old) == HEADS


async def test_services_starting_together_do_not_race(
    new_database: Callable[[], str], engines: Callable[[str], AsyncEngine]
) -> None:
    fresh = new_database()
    # bounded: without the lock they fail or wait on each other's uncommitted tables
    await asyncio.wait_for(asyncio.gather(*(start_every_service(engines(fresh)) for _ in range(4))), 60)
    reference = new_database()
    await start_every_service(engines(reference))
    assert schema_of(fresh) == schema_of(reference)
    assert revisions_of(fresh) == HEADS


def _drift(conn: Connection, owner: SchemaOwner) -> list[Any]:
    mc = MigrationContext.configure(
        conn,
        opts={
            "version_table": owner.version_table,
            "include_object": lambda obj, name, type_, reflected, compare_to: (
                (obj if type_ == "table" else getattr(obj, "table", obj)).name in owner.table_names()
            ),
            "compare_type": True,
            "compare_server_default": True,
        },
    )
    return compare_metadata(mc, list(owner.metadata))  # type: ignore[arg-type]  # a sequence is accepted


@pytest.mark.parametrize("owner", SCHEMA_OWNERS, ids=lambda o: o.name)
async def test_head_is_the_schema_the_code_declares(
    owner: SchemaOwner, new_database: Callable[[], str], engines: Callable[[str], AsyncEngine]
) -> None:
    """A column, table or index added to the owner's tables.py without a revision shows here (each diff
    names it: write the revision with ``odc schema revision``)."""
    engine = engines(new_database())
    await start_every_service(engine)
    async with engine.connect() as conn:
        assert await conn.run_sync(current_revision, owner) == head_revision(owner)
        diffs = await conn.run_sync(_drift, owner)
    assert diffs == []


def test_odc_schema_upgrades_a_previous_release_store(
    new_database: Callable[[], str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """What ``make run`` runs before starting the services (deploy/local), and an operator's check."""
    from typer.testing import CliRunner

    from services.cli.main import app

    old = new_database()
    previous_release_store(old)
    monkeypatch.setenv("ODC_DATABASE_URL", old)
    runner = CliRunner()

    behind = runner.invoke(app, ["schema", "current"])
    assert behind.exit_code == 1, behind.output
    assert "normalise  at (none)" in behind.output

    upgraded = runner.invoke(app, ["schema", "upgrade"])
    assert upgraded.exit_code == 0, upgraded.output
    assert revisions_of(old) == HEADS
    head = HEADS["publish"]  # every revision up to the head, in order
    applied = ", ".join(f"{i:04d}" for i in range(1, int(head) + 1))
    assert f"publish    (none) -> {head}  applied {applied}" in upgraded.output

    assert runner.invoke(app, ["schema", "current"]).exit_code == 0
    again = runner.invoke(app, ["schema", "upgrade"])
    assert again.exit_code == 0 and again.output.count("already at head") == len(SCHEMA_OWNERS), again.output

    down = runner.invoke(app, ["schema", "downgrade", "publish", "-1"])
    assert down.exit_code == 0, down.output
    assert revisions_of(old) == {**HEADS, "publish": f"{int(HEADS['publish']) - 1:04d}"}  # one below head
    assert runner.invoke(app, ["schema", "current"]).exit_code == 1


async def test_a_failing_revision_leaves_nothing_half_done(
    new_database: Callable[[], str], engines: Callable[[str], AsyncEngine], tmp_path: Path
) -> None:
    """The upgrade is one transaction: a revision that fails after its first statement leaves neither that
    statement's change nor a moved version behind, and the service's start fails loudly."""
    engine = engines(new_database())
    await start_every_service(engine)
    broken = replace(NORMALISE_SCHEMA, script_location=tmp_path / "migrations")
    shutil.copytree(NORMALISE_SCHEMA.script_location, broken.script_location)
    path = write_revision(broken, "half done")
    path.write_text(
        path.read_text().replace(
            'raise NotImplementedError("write the change with op.add_column / op.create_table / op.execute ...")',
            'op.add_column("rejection", sa.Column("half_done", sa.Text()))\n    op.execute("SELECT 1 / 0")',
        )
    )

    with pytest.raises(DBAPIError, match="division by zero"):
        await upgrade_schema(engine, broken)

    async with engine.connect() as conn:
        assert await conn.run_sync(current_revision, NORMALISE_SCHEMA) == head_revision(NORMALISE_SCHEMA)
        assert await conn.run_sync(_drift, NORMALISE_SCHEMA) == []  # no half_done column


async def test_publish_0005_serves_old_diffs_as_written_and_derives_new_ones_from_the_change_log(
    new_database: Callable[[], str], engines: Callable[[str], AsyncEngine]
) -> None:
    """Publish 0005: version_diff becomes a view. A version cut at 0004 keeps its diff rows exactly (even one
    the change log would not rebuild); a version cut after it is derived from its marked changes; going down
    writes the derived diffs back into the table, going up again serves the same rows."""
    from services.contract.codecs import Codecs
    from services.contract.messages import ChangeKind, FeatureState
    from services.publish.adapters.postgis_store import PostgresPublishUnitOfWork
    from services.publish.adapters.tables import PUBLISH_SCHEMA
    from services.publish.domain.version_transaction import NotificationFormat, decide_version
    from services.publish.domain.versioning import ReceivedChange

    dsn = new_database()
    engine = engines(dsn)
    async with engine.begin() as conn:
        await conn.run_sync(upgrade_sync, PUBLISH_SCHEMA, "0004")
    with psycopg.connect(dsn) as conn:  # version 1 as the code before 0005 wrote it (its diff row hand-made)
        conn.execute(
            "INSERT INTO change_log (change_id, dataset, commune, feature_id, kind, after_geometry, after_attributes, "
            "after_hash, received_at, version) VALUES (1, 'd', '69123', 'a', 'created', NULL, '{}', 'h1', now(), 1)"
        )
        conn.execute(
            "INSERT INTO version_diff (dataset, version, commune, feature_id, kind, after_attributes, after_hash) "
            "VALUES ('d', 1, '69123', 'a', 'added', '{\"as\": \"written\"}', 'h1')"
        )
        conn.execute(
            "INSERT INTO dataset_state (dataset, last_version, feature_count, content_hash, updated_at) "
            "VALUES ('d', 1, 1, repeat('0', 64), now())"
        )
        conn.execute(
            "INSERT INTO dataset_version (dataset, version, published_at, added, updated, removed, feature_count, "
            "content_hash, first_change_id, last_change_id) VALUES ('d', 1, now(), 1, 0, 0, 1, repeat('0', 64), 1, 1)"
        )
    await upgrade_schema(engine, PUBLISH_SCHEMA)

    s1, s2 = FeatureState(None, "{}", "h1"), FeatureState(None, '{"n": 2}', "h2")
    async with PostgresPublishUnitOfWork(engine, Codecs()) as uow:
        await uow.record_changes(
            [
                ReceivedChange(2, "d", "69123", "a", ChangeKind.UPDATED, s1, s2),
                ReceivedChange(3, "d", "69123", "b", ChangeKind.CREATED, None, s1),
                ReceivedChange(4, "d", "69123", "b", ChangeKind.DELETED, s1, None),
            ],
            datetime.now(UTC),
        )
        write = decide_version(
            await uow.lock_dataset("d"),
            await uow.pending_changes("d", 10, 1 << 30),
            datetime.now(UTC),
            NotificationFormat("t"),
        )
        assert write is not None and write.draft is not None and write.draft.version == 2
        await uow.save_version(write)
        await uow.commit()

    def served() -> list[tuple[Any, ...]]:
        with psycopg.connect(dsn) as conn:
            return conn.execute(
                "SELECT version, feature_id, kind, before_attributes, after_attributes FROM version_diff "
                "ORDER BY version, feature_id"
            ).fetchall()

    expected = [(1, "a", "added", None, '{"as": "written"}'), (2, "a", "updated", "{}", '{"n": 2}')]
    assert served() == expected
    await downgrade_schema(engine, PUBLISH_SCHEMA, "0004")
    with psycopg.connect(dsn) as conn:
        assert conn.execute("SELECT relkind FROM pg_class WHERE relname = 'version_diff'").fetchone() == ("r",)
    assert served() == expected
    await upgrade_schema(engine, PUBLISH_SCHEMA)
    assert served() == expected


async def test_publish_0007_keeps_each_version_its_changes_and_the_pending_ones_go_into_the_next(
    new_database: Callable[[], str], engines: Callable[[str], AsyncEngine]
) -> None:
    """Publish 0007: versions become ranges of the change log. A store at 0006 with versions marked (one with a
    change absorbed after it, one dataset absorbed at version 0) and changes pending (one relayed late with a
    lower change id) upgrades with every change answering the version it had and every diff unchanged; the
    next cut takes exactly the pending changes; going down writes each change's version back in the column."""
    from services.contract.codecs import Codecs
    from services.publish.adapters.postgis_store import PostgresPublishUnitOfWork
    from services.publish.adapters.tables import PUBLISH_SCHEMA
    from services.publish.domain.version_transaction import NotificationFormat, decide_version

    dsn = new_database()
    engine = engines(dsn)
    async with engine.begin() as conn:
        await conn.run_sync(upgrade_sync, PUBLISH_SCHEMA, "0006")
    log = [  # change_id, dataset, feature, before hash, after hash, version as the cut before 0007 marked it
        (1, "d", "a", None, "a1", 1),
        (2, "d", "b", None, "b1", 1),
        (3, "d", "c", None, "c1", 1),  # absorbed after version 1: created ...
        (4, "d", "c", "c1", None, 1),  # ... and removed before the next cut
        (5, "d", "a", "a1", "a2", 2),
        (9, "d", "b", "b1", "b2", None),  # pending
        (7, "d", "d", None, "d1", None),  # pending, relayed after 9
        (6, "e", "x", None, "x1", 0),  # absorbed before e's first version
        (8, "e", "x", "x1", None, 0),
    ]
    with psycopg.connect(dsn) as conn:
        for cid, d, f, bh, ah, v in log:
            conn.execute(
                "INSERT INTO change_log (change_id, dataset, commune, feature_id, kind, before_attributes, "
                "before_hash, after_attributes, after_hash, received_at, version) VALUES (%s, %s, '69123', %s, %s, "
                "%s, %s, %s, %s, now(), %s)",
                (
                    cid,
                    d,
                    f,
                    "CREATED" if bh is None else "DELETED" if ah is None else "UPDATED",
                    bh and "{}",
                    bh,
                    ah and "{}",
                    ah,
                    v,
                ),
            )
        for v, first, last in ((1, 1, 2), (2, 5, 5)):
            conn.execute(
                "INSERT INTO dataset_version (dataset, version, published_at, added, updated, removed, "
                "feature_count, content_hash, first_change_id, last_change_id) VALUES ('d', %s, now(), 0, 0, 0, 2, "
                "repeat('0', 64), %s, %s)",
                (v, first, last),
            )
        conn.execute(
            "INSERT INTO dataset_state (dataset, last_version, feature_count, content_hash, updated_at) VALUES "
            "('d', 2, 2, repeat('0', 64), now()), ('e', 0, 0, repeat('0', 64), now())"
        )

    def served() -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
        with psycopg.connect(dsn) as conn:
            versions = conn.execute("SELECT change_id, version FROM change_log ORDER BY change_id").fetchall()
            diffs = conn.execute(
                "SELECT dataset, version, feature_id, kind, before_hash, after_hash FROM version_diff "
                "ORDER BY dataset, version, feature_id"
            ).fetchall()
        return versions, diffs

    before = served()
    assert before[1] == [("d", 1, "a", "added", None, "a1"), ("d", 1, "b", "added", None, "b1"),
                         ("d", 2, "a", "updated", "a1", "a2")]  # fmt: skip
    await upgrade_schema(engine, PUBLISH_SCHEMA)
    assert served() == before
    with psycopg.connect(dsn) as conn:
        assert conn.execute("SELECT relkind FROM pg_class WHERE relname = 'change_log'").fetchone() == ("v",)
        assert conn.execute(
            "SELECT version, first_position, last_position FROM dataset_version ORDER BY version"
        ).fetchall() == [(1, 1, 4), (2, 5, 5)]
        assert conn.execute("SELECT dataset, cut_position FROM dataset_state ORDER BY 1").fetchall() == [
            ("d", 5),
            ("e", 9),
        ]

    async with PostgresPublishUnitOfWork(engine, Codecs()) as uow:
        assert {d: s.count for d, s in (await uow.pending_summaries()).items()} == {"d": 2}
        state = await uow.lock_dataset("d")
        pending = await uow.pending_changes("d", 10, 1 << 30)
        assert [c.change_id for c in pending.changes] == [7, 9]
        write = decide_version(state, pending, datetime.now(UTC), NotificationFormat("t"))
        assert write is not None and write.draft is not None and write.draft.version == 3
        assert (write.draft.added, write.draft.updated) == (1, 1)
        await uow.save_version(write)
        await uow.commit()
    after = served()
    assert after[0] == [(cid, 3 if v is None else v) for cid, v in before[0]]
    assert after[1] == before[1] + [("d", 3, "b", "updated", "b1", "b2"), ("d", 3, "d", "added", None, "d1")]

    await downgrade_schema(engine, PUBLISH_SCHEMA, "0006")
    with psycopg.connect(dsn) as conn:
        assert conn.execute("SELECT relkind FROM pg_class WHERE relname = 'change_log'").fetchone() == ("r",)
    assert served() == after
    await upgrade_schema(engine, PUBLISH_SCHEMA)
    assert served() == after


async def test_0008_compresses_large_values_with_lz4_and_going_down_gives_them_back_to_pglz(
    new_database: Callable[[], str], engines: Callable[[str], AsyncEngine]
) -> None:
    """Normalise and publish 0008: the columns holding geometries, attributes and payloads compress new values
    with lz4 (this server has it); a value written after the upgrade is stored lz4, one written before stays
    pglz and reads back the same; one owner's downgrade returns its columns to the default alone."""
    from services.publish.adapters.tables import PUBLISH_SCHEMA

    dsn = new_database()
    engine = engines(dsn)
    await start_every_service(engine)
    lz4 = {
        ("canonical_feature", "geom"),
        ("canonical_feature", "attributes"),
        ("feature_change_outbox", "before_geometry"),
        ("feature_change_outbox", "before_attributes"),
        ("feature_change_outbox", "after_geometry"),
        ("feature_change_outbox", "after_attributes"),
        ("rejection", "original"),
        ("rejection", "errors"),
        ("change_log_entry", "before_geometry"),
        ("change_log_entry", "before_attributes"),
        ("change_log_entry", "after_geometry"),
        ("change_log_entry", "after_attributes"),
        ("published_feature", "geom"),
        ("published_feature", "geometry"),
        ("published_feature", "attributes"),
        ("version_event", "body"),
        ("notification_outbox", "payload"),
    }
    assert {(t, c) for t, c, m in schema_of(dsn)["compression"] if m == "l"} == lz4
    large = '{"type":"Polygon","coordinates":[[' + ",".join(f"[{4.8 + i * 1e-5:.6f},45.7]" for i in range(2000))
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("ALTER TABLE feature_change_outbox ALTER COLUMN after_geometry SET COMPRESSION pglz")
        insert = (
            "INSERT INTO feature_change_outbox (event_id, dataset, commune, feature_id, kind, sequence, occurred_at, "
            "applied_at, after_geometry) VALUES (%s, 'd', '69123', %s, 'created', 1, now(), now(), %s)"
        )
        conn.execute(insert, ("before-0008", "a", large + "]]}"))
        conn.execute("ALTER TABLE feature_change_outbox ALTER COLUMN after_geometry SET COMPRESSION lz4")
        conn.execute(insert, ("after-0008", "b", large + ",[4.8,45.7]]]}"))
        stored = dict(
            conn.execute(
                "SELECT event_id, pg_column_compression(after_geometry) FROM feature_change_outbox "
                "WHERE event_id IN ('before-0008', 'after-0008')"
            ).fetchall()
        )
        assert stored == {"before-0008": "pglz", "after-0008": "lz4"}
        (text,) = conn.execute(  # type: ignore[misc]
            "SELECT after_geometry FROM feature_change_outbox WHERE event_id = 'before-0008'"
        ).fetchone()
        assert text == large + "]]}"

    await downgrade_schema(engine, PUBLISH_SCHEMA, "0007")
    assert {(t, c) for t, c, m in schema_of(dsn)["compression"] if m == "l"} == {
        (t, c) for t, c in lz4 if t in NORMALISE_SCHEMA.table_names()
    }


async def test_publish_0009_counts_the_waiting_changes_of_every_dataset_once_and_the_cut_keeps_count(
    new_database: Callable[[], str], engines: Callable[[str], AsyncEngine]
) -> None:
    """Publish 0009: the cutter's summary comes from counters. A store at 0008 with changes waiting for a dataset
    that has versions and for one that was never cut (no dataset_state row yet, and none made) upgrades with both
    counted and dated as the log says; after that, recording and cutting keep the count without reading the log."""
    from services.contract.codecs import Codecs
    from services.contract.messages import ChangeKind, FeatureState
    from services.publish.adapters.postgis_store import PostgresPublishUnitOfWork
    from services.publish.adapters.tables import PUBLISH_SCHEMA
    from services.publish.domain.version_transaction import NotificationFormat, decide_version
    from services.publish.domain.versioning import ReceivedChange

    dsn = new_database()
    engine = engines(dsn)
    async with engine.begin() as conn:
        await conn.run_sync(upgrade_sync, PUBLISH_SCHEMA, "0008")
    t1, t2, t3 = (datetime(2026, 12, 5, 9, m, tzinfo=UTC) for m in (1, 2, 3))
    with psycopg.connect(dsn) as conn:
        for cid, d, at in ((1, "cut", t1), (2, "cut", t1), (3, "cut", t2), (4, "never", t2), (5, "never", t3)):
            conn.execute(
                "INSERT INTO change_log_entry (change_id, dataset, commune, feature_id, kind, after_attributes, "
                "after_hash, received_at, position) VALUES (%s, %s, '69123', %s, 'CREATED', '{}', %s, %s, "
                "nextval('change_log_position'))",
                (cid, d, f"f{cid}", f"{cid:064d}", at),
            )
        conn.execute(
            "INSERT INTO dataset_state (dataset, last_version, feature_count, content_hash, updated_at, cut_position) "
            "VALUES ('cut', 1, 1, repeat('0', 64), now(), 1)"
        )
    await upgrade_schema(engine, PUBLISH_SCHEMA)
    with psycopg.connect(dsn) as conn:  # no state row (no version 0 listed) for the dataset never cut
        assert conn.execute("SELECT dataset FROM dataset_state").fetchall() == [("cut",)]
    async with PostgresPublishUnitOfWork(engine, Codecs()) as uow:
        summaries = await uow.pending_summaries()
    assert {d: (s.count, s.oldest_received_at, s.newest_received_at) for d, s in summaries.items()} == {
        "cut": (2, t1, t2),
        "never": (2, t2, t3),
    }
    state = FeatureState(None, "{}", "6" * 64)
    async with PostgresPublishUnitOfWork(engine, Codecs()) as uow:
        assert (
            await uow.record_changes([ReceivedChange(6, "never", "69123", "f6", ChangeKind.CREATED, None, state)], t3)
            == 1
        )
        await uow.commit()
    async with PostgresPublishUnitOfWork(engine, Codecs()) as uow:
        write = decide_version(
            await uow.lock_dataset("never"), await uow.pending_changes("never", 2, 1 << 30), t3, NotificationFormat("t")
        )
        assert write is not None and write.changes == 2
        await uow.save_version(write)
        await uow.commit()
    async with PostgresPublishUnitOfWork(engine, Codecs()) as uow:
        summaries = await uow.pending_summaries()
    assert {d: (s.count, s.oldest_received_at) for d, s in summaries.items()} == {"cut": (2, t1), "never": (1, t3)}
