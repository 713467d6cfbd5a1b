"""Coverage-guided fuzz targets (atheris) for everything that reads bytes from outside.

Each target feeds fuzzer bytes to one entry point; the only exceptions allowed out are the specific
rejections that entry point documents. Anything else — a crash, another exception — is a finding.
Run: ``python -m fuzz.run TARGET SECONDS`` (``make fuzz`` runs them all); crashes are saved in
``fuzz/findings/``.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

import atheris

with atheris.instrument_imports():
    from services.contract.avro_catalogue import SchemaCatalogue, UndecodableMessage
    from services.contract.codecs import Codecs
    from services.contract.datasets.catalogue import DatasetCatalogue
    from services.contract.event_signature import EventAuthenticator, SigningKey
    from services.contract.messages import GeometryEncoding, RawGeometry
    from services.ingest.domain.source_records import UnreadableFile, read_csv, read_geojson
    from services.normalise.domain.canonical_feature import EventNormaliser
    from services.normalise.domain.geometry_normalisation import GeometryRejected, normalise_geometry

CODECS = Codecs(SchemaCatalogue())
CATALOGUE = DatasetCatalogue.load()
NORMALISER = EventNormaliser(CATALOGUE)
NOW = datetime(2026, 11, 22, tzinfo=UTC)
LYON = CATALOGUE.get("public_toilets").bounds  # type: ignore[union-attr]
FINGERPRINT = SchemaCatalogue().latest("change_event").fingerprint
AUTH = EventAuthenticator({"k1": SigningKey("k1", b"secret", "69266"), "admin": SigningKey("admin", b"s2", None)})


def change_event_bytes(data: bytes) -> None:
    """Raw Kafka values: decode, then normalise whatever decodes (the normaliser's whole pure path)."""
    for candidate in (data, b"\xc3\x01" + FINGERPRINT + data):
        try:
            event = CODECS.decode_change_event(candidate)
        except UndecodableMessage:
            continue
        NORMALISER.normalise(event, NOW)  # returns Candidate | Invalid; must never raise


def geometry_bytes(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    encoding = fdp.PickValueInList(list(GeometryEncoding))
    crs = fdp.PickValueInList([None, "EPSG:4326", "EPSG:2154", "EPSG:3946", "urn:ogc:def:crs:OGC:1.3:CRS84", "x"])
    kind = fdp.PickValueInList(["Point", "MultiPolygon", "LineString"])
    raw = RawGeometry(encoding, fdp.ConsumeBytes(fdp.remaining_bytes()), crs)
    try:
        normalise_geometry(raw, kind, LYON)
    except GeometryRejected:
        pass


def structured_geometry(data: bytes) -> None:
    """GeoJSON built from fuzzed numbers (NaN, inf, huge, tiny) rather than random text."""
    fdp = atheris.FuzzedDataProvider(data)
    kind = fdp.PickValueInList(["Point", "Polygon", "MultiPolygon", "LineString"])
    n = fdp.ConsumeIntInRange(0, 40)
    coords = [
        [
            fdp.ConsumeRegularFloat() if fdp.ConsumeBool() else fdp.ConsumeFloat(),
            fdp.ConsumeRegularFloat() if fdp.ConsumeBool() else fdp.ConsumeFloat(),
        ]
        for _ in range(n)
    ]
    body = {
        "Point": coords[0] if coords else [],
        "LineString": coords,
        "Polygon": [coords],
        "MultiPolygon": [[coords]],
    }[kind]
    text = json.dumps({"type": kind, "coordinates": body}).encode()
    try:
        normalise_geometry(RawGeometry(GeometryEncoding.GEOJSON, text, None), "MultiPolygon", LYON)
    except GeometryRejected:
        pass


def source_files(data: bytes) -> None:
    for reader in (read_geojson, read_csv):
        try:
            for _ in reader(data):
                pass
        except UnreadableFile:
            pass


def attributes(data: bytes) -> None:
    """Every dataset's compiled validator on fuzzed attribute maps (any JSON-like value per field)."""
    fdp = atheris.FuzzedDataProvider(data)
    definitions = list(CATALOGUE)
    definition = definitions[fdp.ConsumeIntInRange(0, len(definitions) - 1)]
    attrs: dict[str, object] = {}
    for name in definition.field_names:
        if fdp.ConsumeBool():
            attrs[name] = fdp.PickValueInList(
                [
                    None,
                    fdp.ConsumeUnicode(30),
                    fdp.ConsumeInt(8),
                    fdp.ConsumeFloat(),
                    fdp.ConsumeBool(),
                    "",
                    "oui",
                    "31/02/2024",
                    "1,5",
                    "NaN",
                    "69266",
                ]
            )
    from services.normalise.domain.attribute_validation import CompiledSchema

    CompiledSchema(definition.table_schema).validate(attrs)


def signatures(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    headers = [
        (fdp.PickValueInList(["odc-key-id", "odc-signature", "x"]), fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 80)))
        for _ in range(fdp.ConsumeIntInRange(0, 4))
    ]
    AUTH.check(fdp.ConsumeBytes(200), headers, fdp.ConsumeUnicode(6))


TARGETS = {
    "change_event": change_event_bytes,
    "geometry": geometry_bytes,
    "structured_geometry": structured_geometry,
    "source_files": source_files,
    "attributes": attributes,
    "signatures": signatures,
}
