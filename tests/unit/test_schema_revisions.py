"""The migration scripts of every owner of tables, without a database: one linear chain per owner (two
revisions written on two branches and merged both follow the same parent, which this catches before any
store does), numbered in order, each with an upgrade and a downgrade; and ``odc schema revision`` writes
the next numbered file on top of head."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import pytest
from alembic.script import ScriptDirectory
from typer.testing import CliRunner

from services.cli import schema_commands
from services.cli.main import app
from services.cli.schema_commands import SCHEMA_OWNERS
from services.infrastructure.schema_migrations import SchemaOwner, alembic_config, head_revision, write_revision


def _script(owner: SchemaOwner) -> ScriptDirectory:
    return ScriptDirectory.from_config(alembic_config(owner))


def test_every_owner_has_its_own_version_table_and_scripts() -> None:
    assert {o.name for o in SCHEMA_OWNERS} == {"shared", "ingest", "normalise", "publish"}
    assert len({o.version_table for o in SCHEMA_OWNERS}) == len({o.script_location for o in SCHEMA_OWNERS}) == 4
    tables = [t for o in SCHEMA_OWNERS for t in o.table_names()]
    assert len(tables) == len(set(tables))  # each table has exactly one owner
    assert {"api_token", "commune_signing_key"} == next(o for o in SCHEMA_OWNERS if o.name == "shared").table_names()


@pytest.mark.parametrize("owner", SCHEMA_OWNERS, ids=lambda o: o.name)
def test_revisions_form_one_numbered_chain(owner: SchemaOwner) -> None:
    script = _script(owner)
    assert len(script.get_heads()) == 1, f"{owner.name}: several heads {script.get_heads()}: renumber one revision"
    chain = list(reversed(list(script.walk_revisions())))
    assert [r.revision for r in chain] == [f"{n:04d}" for n in range(1, len(chain) + 1)]
    for r in chain:
        assert Path(r.path).name.startswith(f"v{r.revision}_"), r.path
        assert callable(r.module.upgrade) and callable(r.module.downgrade)


def test_a_new_revision_follows_head(tmp_path: Path) -> None:
    normalise = next(o for o in SCHEMA_OWNERS if o.name == "normalise")
    copy = replace(normalise, script_location=tmp_path / "migrations")
    shutil.copytree(normalise.script_location, copy.script_location)
    head = head_revision(normalise)
    assert head is not None

    path = write_revision(copy, "Rejection keeps a bounded prefix")

    assert path.name == f"v{int(head) + 1:04d}_rejection_keeps_a_bounded_prefix.py"
    new = _script(copy).get_revision(head_revision(copy))
    assert (new.revision, new.down_revision) == (f"{int(head) + 1:04d}", head)
    with pytest.raises(NotImplementedError):  # a stub until written, never a silent no-op
        new.module.upgrade()


def test_odc_schema_revision_writes_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    owners = tuple(replace(o, script_location=tmp_path / o.name) for o in SCHEMA_OWNERS)
    for real, copy in zip(SCHEMA_OWNERS, owners, strict=True):
        shutil.copytree(real.script_location, copy.script_location)
    monkeypatch.setattr(schema_commands, "SCHEMA_OWNERS", owners)

    result = CliRunner().invoke(app, ["schema", "revision", "publish", "-m", "add a column"])

    assert result.exit_code == 0, result.output
    written = sorted((tmp_path / "publish" / "versions").glob("v*_add_a_column.py"))
    assert len(written) == 1 and written[0].name in result.output.replace("\n", "")
    assert CliRunner().invoke(app, ["schema", "revision", "nobody", "-m", "x"]).exit_code == 2
