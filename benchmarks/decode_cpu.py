"""Avro decode CPU per event (issue #16, fourth session): the normaliser's ``decode_change_events`` and the
publisher's ``decode_feature_changes``, the way before (``*_reference``: fastavro's logical types, enum calls)
against the way now (the schemas read without logical types, uuid and timestamp-millis converted by the codecs,
enum members by lookup), on the messages the stream carries: public toilets (points) and parks (polygons) in the
single and the bulk form, and a feature_change_batch of --changes changes. Each pair is checked equal. Then the
candidates measured before choosing: fastavro with and without logical types, fastavro's OCF block reader, cavro
(not a dependency: give its directory with --cavro-path, e.g. after ``pip install --target /tmp/cavro_t cavro``),
and the publisher's record path (decode -> ReceivedChange -> the store's arrays) against a columnar decode.

CPU time of this process (``time.process_time``, not wall time: the machine is shared), best of --repeat,
µs per event (per change for the publisher). Run: ``.venv/bin/python -m benchmarks.decode_cpu`` (no stack needed).
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import io
import json
import platform
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import fastavro

from benchmarks.pipeline_throughput import build_events
from benchmarks.validation_columns import best_of
from services.contract.avro_catalogue import HEADER_LEN
from services.contract.codecs import Codecs
from services.contract.messages import ChangeEvent, ChangeKind, FeatureChange, FeatureState
from services.publish.adapters.postgis_store import _state_arrays
from services.publish.service_layer.handlers import to_received

SLICE = 100  # events per bulk message (odc send's default is larger; the worker prepares ~120 toilets at once)


def feature_changes(events: Sequence[ChangeEvent]) -> list[FeatureChange]:
    """Changes as the normaliser's relay sends them for a first load: creations, GeoJSON and canonical JSON."""
    applied = datetime.now(UTC).replace(microsecond=0)
    out = []
    for i, ev in enumerate(events):
        attributes = json.dumps(ev.attributes, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
        geometry = ev.geometry.value.decode() if ev.geometry is not None else None
        digest = hashlib.sha256(f"{geometry}|{attributes}".encode()).hexdigest()
        out.append(
            FeatureChange(
                change_id=1_000_000 + i,
                event_id=ev.event_id,
                dataset=ev.dataset,
                commune=ev.commune,
                feature_id=ev.feature_id,
                kind=ChangeKind.CREATED,
                sequence=ev.sequence,
                occurred_at=ev.occurred_at.replace(microsecond=ev.occurred_at.microsecond // 1000 * 1000)
                + timedelta(milliseconds=i % 7),
                applied_at=applied,
                before=None,
                after=FeatureState(geometry, attributes, digest),
            )
        )
    return out


def pair(label: str, old: Callable[[], object], new: Callable[[], object], n: int, repeat: int) -> None:
    same = old() == new()
    print(
        f"  {label}: before {best_of(old, n, repeat):6.2f} -> now {best_of(new, n, repeat):6.2f} µs/event"
        f" ({'same' if same else 'DIFFERENT'})"
    )


def record_arrays(changes: Sequence[Any]) -> dict[str, Any]:
    """What postgis_store.record_changes builds from the ReceivedChanges (the dedup on change_id included)."""
    unique = list({c.change_id: c for c in reversed(changes)}.values())[::-1]
    return {
        "ids": [c.change_id for c in unique],
        "ds": [c.dataset for c in unique],
        "cs": [c.commune for c in unique],
        "fs": [c.feature_id for c in unique],
        "ks": [c.kind.value for c in unique],
        **_state_arrays(("bg", "ba", "bh"), [c.before for c in unique]),
        **_state_arrays(("ag", "aa", "ah"), [c.after for c in unique]),
    }


def columnar_arrays(codecs: Codecs, value: bytes) -> dict[str, Any]:
    """The candidate of issue #16 item 1 for the publisher: the same arrays straight from the records fastavro
    reads (no FeatureChange, no ReceivedChange). A prototype for the measurement only."""
    records = codecs.catalogue.decode_plain(value, "feature_change_batch")["changes"]
    unique = list({r["change_id"]: r for r in reversed(records)}.values())[::-1]
    out: dict[str, Any] = {
        "ids": [r["change_id"] for r in unique],
        "ds": [r["dataset"] for r in unique],
        "cs": [r["commune"] for r in unique],
        "fs": [r["feature_id"] for r in unique],
        "ks": [r["kind"] for r in unique],
    }
    for side, names in (("before", ("bg", "ba", "bh")), ("after", ("ag", "aa", "ah"))):
        states = [r[side] for r in unique]
        for key, name in zip(("geometry", "attributes", "content_hash"), names, strict=True):
            out[name] = [None if s is None else s[key] for s in states]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=2000, help="toilet events (parks: a quarter of it)")
    parser.add_argument("--changes", type=int, default=1000, help="changes in the feature_change_batch")
    parser.add_argument("--repeat", type=int, default=9)
    parser.add_argument("--cavro-path", default="/tmp/cavro_t", help="a directory holding cavro (not a dependency)")
    args = parser.parse_args()
    print(f"machine: {platform.processor() or platform.machine()}, python {platform.python_version()}")
    print(f"fastavro {fastavro.__version__}")
    codecs = Codecs()
    r = args.repeat
    toilets = build_events("public_toilets", args.events, 1)
    parks = build_events("parks_gardens", max(1, args.events // 4), 1)

    print("normaliser: decode_change_events (per event)")
    for name, events in (("public_toilets", toilets), ("parks_gardens", parks)):
        singles = [codecs.encode_change_event(e) for e in events]
        bulks = [
            codecs.encode_change_event_batch(events[0].dataset, events[0].commune, events[s : s + SLICE])
            for s in range(0, len(events), SLICE)
        ]
        size = sum(map(len, singles)) // len(singles)
        n = len(events)
        pair(
            f"{name}, {n} single messages of ~{size} B",
            lambda v=singles: [codecs.decode_change_events_reference(x) for x in v],
            lambda v=singles: [codecs.decode_change_events(x) for x in v],
            n,
            r,
        )
        pair(
            f"{name}, bulk messages of {SLICE}",
            lambda v=bulks: [codecs.decode_change_events_reference(x) for x in v],
            lambda v=bulks: [codecs.decode_change_events(x) for x in v],
            n,
            r,
        )

    print(f"publisher: decode_feature_changes (per change, a feature_change_batch of {args.changes})")
    changes = feature_changes(build_events("public_toilets", args.changes, 1))
    batch = codecs.encode_feature_change_batch("public_toilets", changes)
    nc = len(changes)
    assert codecs.decode_feature_changes(batch) == changes
    pair(
        f"public_toilets, {len(batch) // nc} B per change",
        lambda: codecs.decode_feature_changes_reference(batch),
        lambda: codecs.decode_feature_changes(batch),
        nc,
        r,
    )
    before = record_arrays([to_received(c) for c in codecs.decode_feature_changes_reference(batch)])
    now = record_arrays([to_received(c) for c in codecs.decode_feature_changes(batch)])
    columnar = columnar_arrays(codecs, batch)
    print(
        "  decode + to_received + the store's arrays:"
        f" before {best_of(lambda: record_arrays([to_received(c) for c in codecs.decode_feature_changes_reference(batch)]), nc, r):6.2f}"
        f" -> now {best_of(lambda: record_arrays([to_received(c) for c in codecs.decode_feature_changes(batch)]), nc, r):6.2f}"
        f" -> columnar (prototype) {best_of(lambda: columnar_arrays(codecs, batch), nc, r):6.2f} µs/change"
        f" ({'same' if before == now == columnar else 'DIFFERENT'})"
    )

    print("candidates, the Avro body alone (public toilets, single form, per event)")
    singles = [codecs.encode_change_event(e) for e in toilets]
    bodies = [io.BytesIO(v[HEADER_LEN:]) for v in singles]
    sv = codecs.catalogue.latest("change_event")
    n = len(singles)

    def fastavro_read(schema: Any) -> Callable[[], object]:
        def run() -> list[Any]:
            out = []
            for b in bodies:
                b.seek(0)
                out.append(fastavro.schemaless_reader(b, schema, None))
            return out

        return run

    print(f"  fastavro.schemaless_reader, logical types: {best_of(fastavro_read(sv.fast), n, r):6.2f} µs/event")
    print(f"  fastavro.schemaless_reader, without:       {best_of(fastavro_read(sv.plain), n, r):6.2f} µs/event")
    ocf = []
    for s in range(0, n, SLICE):
        buf = io.BytesIO()
        fastavro.writer(buf, sv.fast, [codecs._change_event_to_wire(e) for e in toilets[s : s + SLICE]])
        ocf.append(buf.getvalue())
    print(
        f"  fastavro OCF reader, blocks of {SLICE}, logical types:"
        f" {best_of(lambda: [list(fastavro.reader(io.BytesIO(b))) for b in ocf], n, r):6.2f} µs/event"
    )
    sys.path.append(args.cavro_path)
    try:
        cavro: Any = importlib.import_module("cavro")
    except ImportError:
        print(f"  cavro: not found in {args.cavro_path}")
        return
    raw = json.loads(sv.path.read_text(encoding="utf-8"))
    payloads = [v[HEADER_LEN:] for v in singles]
    for label, schema in (
        ("logical types", cavro.Schema(raw, record_decodes_to_dict=True)),
        ("without", cavro.Schema(raw, record_decodes_to_dict=True, logical_types=())),
    ):
        first = schema.binary_decode(payloads[0])
        expected = codecs.catalogue.decode(singles[0], "change_event")
        agrees = first == expected if label == "logical types" else first["event_id"] == str(expected["event_id"])
        print(
            f"  cavro {getattr(cavro, '__version__', '')} binary_decode, {label}:"
            f" {best_of(lambda s=schema: [s.binary_decode(p) for p in payloads], n, r):6.2f} µs/event"
            f" ({'same record' if agrees else 'a DIFFERENT record'})"
        )


if __name__ == "__main__":
    main()
