"""docs/asyncapi.json (issue #15.6) is a valid AsyncAPI 3.0 document for the official parser (npm
@asyncapi/parser with @asyncapi/avro-schema-parser, versions pinned by tests/asyncapi_parser/package-lock.json,
installed by this test into .local/asyncapi_parser with `npm ci`); the same parser refuses broken copies, so
the check can fail."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
SOURCE = REPO / "tests" / "asyncapi_parser"
INSTALL = REPO / ".local" / "asyncapi_parser"
DOCUMENT = REPO / "docs" / "asyncapi.json"


def ensure_node() -> None:
    """node and npm from Debian when missing (as deploy/local installs PostGIS)."""
    if shutil.which("node") and shutil.which("npm"):
        return
    for cmd in (["apt-get", "update", "-q"], ["apt-get", "install", "-y", "-q", "nodejs", "npm"]):
        subprocess.run(cmd, check=True, capture_output=True, timeout=600)


@pytest.fixture(scope="module")
def parser() -> Path:
    ensure_node()
    INSTALL.mkdir(parents=True, exist_ok=True)
    lock = (SOURCE / "package-lock.json").read_bytes()
    installed = INSTALL / "package-lock.json"
    if not (INSTALL / "node_modules").is_dir() or not installed.exists() or installed.read_bytes() != lock:
        for name in ("package.json", "package-lock.json"):
            shutil.copy(SOURCE / name, INSTALL / name)
        subprocess.run(
            ["npm", "ci", "--ignore-scripts", "--no-audit", "--no-fund"],
            cwd=INSTALL,
            check=True,
            capture_output=True,
            timeout=600,
        )
    shutil.copy(SOURCE / "validate.mjs", INSTALL / "validate.mjs")
    return INSTALL / "validate.mjs"


def validate(parser: Path, document: Path) -> tuple[int, dict[str, Any]]:
    run = subprocess.run(["node", str(parser), str(document)], check=False, capture_output=True, text=True, timeout=120)
    return run.returncode, json.loads(run.stdout)


def test_the_committed_document_is_valid_asyncapi_3(parser: Path) -> None:
    code, result = validate(parser, DOCUMENT)
    assert code == 0 and result["valid"], result["errors"]
    assert result["version"] == "3.0.0" and result["errors"] == [] and result["warnings"] == []


@pytest.mark.parametrize(
    ("breakage", "expected"),
    [
        (lambda d: d.pop("info"), "info"),
        (lambda d: d["channels"]["webhook"].update(servers=[{"$ref": "#/servers/nope"}]), "does not exist"),
        (
            lambda d: d["components"]["messages"]["datasetVersionsMessage"]["payload"].update(schema={"fields": 1}),
            "payload",
        ),
    ],
)
def test_the_parser_refuses_a_broken_copy(parser: Path, tmp_path: Path, breakage: Any, expected: str) -> None:
    doc = json.loads(DOCUMENT.read_text(encoding="utf-8"))
    breakage(doc)
    broken = tmp_path / "asyncapi.json"
    broken.write_text(json.dumps(doc), encoding="utf-8")
    code, result = validate(parser, broken)
    assert code == 1 and not result["valid"]
    assert any(expected in (e["message"] + e["path"]) for e in result["errors"]), result["errors"]
