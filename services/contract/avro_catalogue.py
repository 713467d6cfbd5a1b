"""Avro single-object encoding with every schema version kept in the repository.

No schema registry runs here (see docs/architecture.md). A message is
``C3 01`` + the 8-byte little-endian CRC-64-AVRO fingerprint of the writer schema + the Avro binary body
(Avro 1.x specification, "Single object encoding"). The catalogue knows every committed version of every
schema, so a reader decodes any writer version it knows into the latest version (schema resolution),
and refuses an unknown fingerprint with a clear reason instead of crashing.
"""

from __future__ import annotations

import io
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fastavro
from fastavro.schema import fingerprint, to_parsing_canonical_form

MAGIC = b"\xc3\x01"
HEADER_LEN = 10
SCHEMA_DIR = Path(__file__).resolve().parents[2] / "schemas" / "avro"
_FILE_RE = re.compile(r"^(?P<name>[a-z_]+)\.v(?P<version>\d+)\.avsc$")


class UndecodableMessage(ValueError):
    """The bytes are not a message this catalogue can read. ``reason`` is a stable machine code."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass(frozen=True)
class SchemaVersion:
    name: str  # file stem, e.g. "change_event"
    version: int
    parsed: Any
    fingerprint: bytes  # 8 bytes, little-endian as on the wire
    path: Path
    # The same schema parsed with fastavro's "already parsed" hint, used to read and write. Without the hint
    # fastavro parses the schema again on every call: measured on a toilet change event, decode 53 -> 38 us;
    # a feature change 62 -> 25 us (docs/performance.md). ``parsed`` stays hint-free for the canonical form.
    fast: Any
    # The same schema again, parsed with every "logicalType" key removed: the same types, bytes on the wire and
    # canonical form, but fastavro hands a uuid over as its text and a timestamp-millis as its long, for the
    # codecs to convert once per field (decode_plain; issue #16, docs/performance.md "Avro decode").
    plain: Any = None

    @property
    def full_name(self) -> str:
        return str(self.parsed["name"])


class SchemaCatalogue:
    """Every version of every schema under ``schemas/avro``; encodes with the latest version."""

    def __init__(self, schema_dir: Path = SCHEMA_DIR) -> None:
        self._by_fingerprint: dict[bytes, SchemaVersion] = {}
        self._versions: dict[str, dict[int, SchemaVersion]] = {}
        for path in sorted(schema_dir.glob("*.avsc")):
            m = _FILE_RE.match(path.name)
            if not m:
                raise ValueError(f"{path.name}: schema files must be named <name>.v<N>.avsc")
            raw = json.loads(path.read_text(encoding="utf-8"))
            parsed = fastavro.parse_schema(raw, _write_hint=False)
            fp = bytes.fromhex(fingerprint(to_parsing_canonical_form(parsed), "CRC-64-AVRO"))
            sv = SchemaVersion(
                m["name"],
                int(m["version"]),
                parsed,
                fp,
                path,
                fastavro.parse_schema(raw),
                fastavro.parse_schema(without_logical_types(raw)),
            )
            if fp in self._by_fingerprint:
                raise ValueError(f"{path.name} has the same fingerprint as {self._by_fingerprint[fp].path.name}")
            self._by_fingerprint[fp] = sv
            self._versions.setdefault(sv.name, {})[sv.version] = sv
        if not self._versions:
            raise ValueError(f"no Avro schemas found in {schema_dir}")
        self._latest = {name: versions[max(versions)] for name, versions in self._versions.items()}

    def names(self) -> list[str]:
        return sorted(self._versions)

    def versions(self, name: str) -> list[SchemaVersion]:
        return [self._versions[name][v] for v in sorted(self._versions[name])]

    def latest(self, name: str) -> SchemaVersion:
        return self._latest[name]

    def by_fingerprint(self, fp: bytes) -> SchemaVersion | None:
        return self._by_fingerprint.get(fp)

    def writer_name(self, data: bytes) -> str | None:
        """The schema name of the writer of ``data`` (from its fingerprint), or None if it is not one of ours."""
        if len(data) < HEADER_LEN or data[:2] != MAGIC:
            return None
        writer = self._by_fingerprint.get(bytes(data[2:HEADER_LEN]))
        return None if writer is None else writer.name

    def encode(self, name: str, record: dict[str, Any], version: int | None = None) -> bytes:
        sv = self.latest(name) if version is None else self._versions[name][version]
        buf = io.BytesIO()
        buf.write(MAGIC)
        buf.write(sv.fingerprint)
        fastavro.schemaless_writer(buf, sv.fast, record)
        return buf.getvalue()

    def _versions_of(self, data: bytes, expected: str) -> tuple[bytes, SchemaVersion, SchemaVersion]:
        """``data`` as bytes, its writer schema and the reader schema (the latest ``expected``), or
        UndecodableMessage when the header does not name a known version of ``expected``."""
        if not isinstance(data, bytes | bytearray | memoryview):
            raise UndecodableMessage("undecodable", f"expected bytes, got {type(data).__name__}")
        data = bytes(data)
        if not data:
            raise UndecodableMessage(
                "undecodable",
                "empty message (a null or empty value, e.g. a Kafka tombstone): every message is an Avro "
                "single-object event; to remove a feature, send its event with operation DELETE",
            )
        if len(data) < HEADER_LEN or data[:2] != MAGIC:
            raise UndecodableMessage(
                "undecodable", "not an Avro single-object message (missing C3 01 marker or too short)"
            )
        writer = self._by_fingerprint.get(data[2:HEADER_LEN])
        if writer is None:
            raise UndecodableMessage("unknown_schema", f"unknown writer schema fingerprint {data[2:HEADER_LEN].hex()}")
        if writer.name != expected:
            raise UndecodableMessage(
                "wrong_schema", f"message is a {writer.name} v{writer.version}, expected {expected}"
            )
        return data, writer, self.latest(expected)

    def decode(self, data: bytes, expected: str) -> dict[str, Any]:
        """Decode ``data`` written with any known version of schema ``expected`` into its latest version."""
        data, writer, reader = self._versions_of(data, expected)
        return self._read(data, writer, writer.fast, None if reader is writer else reader.fast)

    def decode_plain(self, data: bytes, expected: str) -> dict[str, Any]:
        """``decode`` without fastavro's logical types: a uuid is its text as sent and a timestamp-millis its long,
        for the caller to convert (services/contract/codecs.py). Raises UndecodableMessage as ``decode`` does for a
        header or a body that does not read; a caller that needs ``decode``'s exact wording for a body (a logical
        value that does not convert fails there first) asks ``decode`` after a failure here."""
        data, writer, reader = self._versions_of(data, expected)
        return self._read(data, writer, writer.plain, None if reader is writer else reader.plain)

    @staticmethod
    def _read(data: bytes, writer: SchemaVersion, writer_schema: Any, reader_schema: Any) -> dict[str, Any]:
        body = io.BytesIO(data[HEADER_LEN:])
        try:
            # Same version: no resolution (fastavro would compare the two schemas deeply on every call).
            record = fastavro.schemaless_reader(body, writer_schema, reader_schema)
        except Exception as exc:
            raise UndecodableMessage(
                "undecodable", f"Avro body does not match {writer.name} v{writer.version}: {exc}"
            ) from exc
        if body.tell() != len(data) - HEADER_LEN:
            raise UndecodableMessage("undecodable", "trailing bytes after the Avro body")
        if not isinstance(record, dict):
            raise UndecodableMessage("undecodable", "Avro body is not a record")
        return record


def without_logical_types(schema: Any) -> Any:
    """A copy of a schema's JSON with every "logicalType" key removed (Avro's parsing canonical form drops them,
    so the copy has the same canonical form and fingerprint, and the same binary encoding)."""
    if isinstance(schema, dict):
        return {k: without_logical_types(v) for k, v in schema.items() if k != "logicalType"}
    if isinstance(schema, list):
        return [without_logical_types(v) for v in schema]
    return schema
