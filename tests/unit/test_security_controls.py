"""Security controls that can be checked without a running stack (docs/security.md lists each one)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
from pydantic import SecretStr

from services.cli.settings import CliSettings
from services.ingest.settings import IngestSettings
from services.normalise.settings import NormaliseSettings
from services.publish.settings import PublishSettings

ROOT = Path(__file__).resolve().parents[2]
SQL = re.compile(r"\b(SELECT|INSERT|UPDATE|DELETE|CREATE|ALTER|DROP|COPY)\b", re.IGNORECASE)
# Interpolations allowed in SQL text: constant fragments defined in the same module, never values.
ALLOWED_SQL_FRAGMENTS = {
    "cond",
    "where",
    "order",
    "_DIFF_COLS",
    "_VIEW_SQL",
    "select_sql",
    "id_column",
    "cursor_table",
    "sent",
    "table",
    "_STORED_NAME_FOLDED",
}


def _sql_fstring_interpolations() -> list[tuple[str, int, str]]:
    found = []
    for path in sorted((ROOT / "services").rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if not isinstance(node, ast.JoinedStr):
                continue
            text = "".join(v.value for v in node.values if isinstance(v, ast.Constant) and isinstance(v.value, str))
            if not SQL.search(text) or (" FROM " not in text.upper() and "INTO" not in text.upper()):
                continue
            for v in node.values:
                if isinstance(v, ast.FormattedValue):
                    found.append((str(path.relative_to(ROOT)), node.lineno, ast.unparse(v.value)))
    return found


def test_sql_text_interpolates_only_constant_fragments_never_values() -> None:
    offending = [f for f in _sql_fstring_interpolations() if f[2] not in ALLOWED_SQL_FRAGMENTS]
    assert not offending, (
        f"SQL built with interpolated values (use bound parameters, or add a reviewed constant fragment "
        f"to ALLOWED_SQL_FRAGMENTS): {offending}"
    )


def test_the_sql_check_sees_the_fragments_it_allows() -> None:
    # if the scanner found nothing at all it would pass vacuously
    assert {f[2] for f in _sql_fstring_interpolations()} & ALLOWED_SQL_FRAGMENTS


@pytest.mark.parametrize("cls", [NormaliseSettings, PublishSettings, IngestSettings, CliSettings])
def test_database_urls_are_secrets_and_never_printed(cls: type, monkeypatch: pytest.MonkeyPatch) -> None:
    if "database_url" not in cls.model_fields:
        pytest.fail(f"{cls.__name__} has no database_url: update this test")  # every service has one today
    prefix = cls.model_config["env_prefix"]
    monkeypatch.setenv(f"{prefix}DATABASE_URL", "postgresql://odc:Sup3r-s3cret@db:5432/odc")
    settings = cls()
    assert isinstance(settings.database_url, SecretStr)
    for shown in (repr(settings), str(settings), settings.model_dump_json()):
        assert "Sup3r-s3cret" not in shown


def test_no_module_reads_the_environment_outside_settings() -> None:
    """House rule: typed settings only. os.environ / getenv elsewhere is how secrets leak into logs."""
    offenders = []
    for path in sorted((ROOT / "services").rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        if ("os.environ" in text or "getenv(" in text) and path.name != "settings.py":
            offenders.append(str(path.relative_to(ROOT)))
    assert not offenders, offenders
