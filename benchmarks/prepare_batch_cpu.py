"""The normaliser's CPU per event on a point batch, second pass (issue #16): ``prepare_batch`` as the worker
calls it (slices of 100 signed Avro messages of public toilets: decode, signature,
envelope, names, geometry, attributes, boundary, canonical JSON, hash), then each item cut, old way against
new way on the same inputs, with the results compared (the unit tests hold them equal in general:
tests/unit/test_prepare_batch_equivalence.py).

CPU time of this process (``time.process_time``, not wall time: the machine is shared), best of --repeat,
µs per event. Run: ``.venv/bin/python -m benchmarks.prepare_batch_cpu`` (no stack needed).
"""

from __future__ import annotations

import argparse
import cProfile
import json
import platform
import pstats
import re
import time
from collections.abc import Callable
from datetime import UTC, datetime

from benchmarks.pipeline_throughput import build_events
from benchmarks.validation_columns import best_of
from services.contract.codecs import Codecs
from services.contract.datasets.catalogue import DatasetCatalogue
from services.contract.datasets.field_names import fold
from services.contract.event_signature import EventAuthenticator, SigningKey, sign
from services.contract.messages import SourcePosition
from services.normalise.domain import canonical_feature as cf
from services.normalise.service_layer.process_batch import InboundMessage, prepare_batch

SLICE = 100  # about what the worker prepares between yields (kafka_worker.py PREPARE_SLICE_BYTES: 64 KiB, ~120 toilets)
# the ways replaced, kept here to measure against
_OLD_JSON_NUL = re.compile(r"(?<!\\)(?:\\\\)*\\u0000")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=9)
    parser.add_argument("--profile", action="store_true", help="print cProfile's top functions of prepare_batch")
    args = parser.parse_args()
    print(f"machine: {platform.processor() or platform.machine()}, python {platform.python_version()}")
    catalogue = DatasetCatalogue.load()
    norm, codecs = cf.EventNormaliser(catalogue), Codecs()
    key = SigningKey("bench-admin", b"s" * 32, None)
    events = build_events("public_toilets", args.events, 1)
    messages = []
    for i, ev in enumerate(events):
        value = codecs.encode_change_event(ev)
        messages.append(InboundMessage(value, SourcePosition("odc.change-events", 0, i), tuple(sign(value, key))))
    authenticator = EventAuthenticator({key.key_id: key})
    now = datetime.now(UTC)
    n = len(messages)

    def prepare() -> None:
        for start in range(0, n, SLICE):
            prepare_batch(
                messages[start : start + SLICE], codecs=codecs, normaliser=norm, now=now, authenticator=authenticator
            )

    prepare()
    print(f"public_toilets, {n} signed messages in slices of {SLICE}")
    print(f"  prepare_batch, whole: {best_of(prepare, n, args.repeat):7.2f} µs/event")
    print(
        f"  Avro decode (decode_change_event): {best_of(lambda: [codecs.decode_change_event(m.value) for m in messages], n, args.repeat):7.2f} µs/event"
    )

    print(
        f"  EventAuthenticator.check: {best_of(lambda: [authenticator.check(m.value, m.headers, '69123') for m in messages], n, args.repeat):6.2f} µs/event"
    )

    prepared = [
        c
        for s in range(0, n, SLICE)
        for c in prepare_batch(
            messages[s : s + SLICE], codecs=codecs, normaliser=norm, now=now, authenticator=authenticator
        ).candidates
    ]
    attrs = [c.feature.attributes for c in prepared if c.feature is not None]
    texts = [cf.canonical_json(a) for a in attrs]
    same = texts == [json.dumps(a, sort_keys=True, ensure_ascii=False, separators=(",", ":")) for a in attrs]
    print(
        f"  canonical JSON: json.dumps(...) {best_of(lambda: [json.dumps(a, sort_keys=True, ensure_ascii=False, separators=(',', ':')) for a in attrs], n, args.repeat):6.2f}"
        f" -> canonical_json() {best_of(lambda: [cf.canonical_json(a) for a in attrs], n, args.repeat):6.2f} µs/event ({'same' if same else 'DIFFERENT'})"
    )
    same = [bool(_OLD_JSON_NUL.search(t)) for t in texts] == [cf.has_json_nul(t) for t in texts]
    print(
        f"  NUL in JSON: regex search {best_of(lambda: [_OLD_JSON_NUL.search(t) for t in texts], n, args.repeat):6.2f}"
        f" -> has_json_nul() {best_of(lambda: [cf.has_json_nul(t) for t in texts], n, args.repeat):6.2f} µs/event ({'same' if same else 'DIFFERENT'})"
    )
    schema = norm._schemas["public_toilets"]
    matcher = schema.matcher

    def old_target(sent: str) -> str | None:
        if sent in matcher._exact:
            return sent
        return matcher._alias.get(sent) or matcher._folded.get(fold(sent))

    sent_names = [list(e.attributes) for e in events]
    same = [[old_target(k) for k in ks] for ks in sent_names] == [[matcher.target(k) for k in ks] for ks in sent_names]
    print(
        f"  field names: target() folding each name {best_of(lambda: [[old_target(k) for k in ks] for ks in sent_names], n, args.repeat):6.2f}"
        f" -> target() {best_of(lambda: [[matcher.target(k) for k in ks] for ks in sent_names], n, args.repeat):6.2f} µs/event ({'same' if same else 'DIFFERENT'})"
    )
    features = [c.feature for c in prepared if c.feature is not None and c.feature.geometry is not None]

    def fresh() -> list[cf.CanonicalFeature]:
        return [cf.CanonicalFeature(f.attributes, f.geometry, f.content_hash) for f in features]

    def timed(fn: Callable[[list[cf.CanonicalFeature]], object]) -> float:  # fresh features each time, untimed
        best = float("inf")
        for _ in range(args.repeat):
            batch = fresh()
            started = time.process_time()
            fn(batch)
            best = min(best, time.process_time() - started)
        return best / len(features) * 1e6

    one, many = fresh(), fresh()
    cf.seed_geojson(many)
    same = [f.geometry_geojson() for f in one] == [f.geometry_geojson() for f in many]
    print(
        f"  outbox GeoJSON (adapter): geometry_geojson() each {timed(lambda b: [f.geometry_geojson() for f in b]):6.2f}"
        f" -> seed_geojson() per batch {timed(cf.seed_geojson):6.2f} µs/event ({'same' if same else 'DIFFERENT'})"
    )
    if args.profile:
        profile = cProfile.Profile()
        profile.enable()
        prepare()
        profile.disable()
        pstats.Stats(profile).sort_stats("tottime").print_stats(25)


if __name__ == "__main__":
    main()
