"""``make bench``: end-to-end throughput and send-to-notification latency on real data.

Builds N change events from the bundled real files (fresh feature ids, so every event is a creation),
runs them through a throwaway stack (real Kafka, real PostGIS, the three services as processes) and
measures:

- throughput: events/s from the first send to the moment every feature is committed in PostGIS
  (polled every 20 ms), for a point dataset (toilets) and a polygon dataset (parks);
- latency: at a steady send rate, the time from each event's send to the arrival of the version
  notification that includes it (p50 / p99 / max).

Prints a table and appends it, with the machine's description, to docs/benchmarks.md; raw numbers go to
docs/benchmarks/<timestamp>.json. Not part of ``make test``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
import uuid
from collections import deque
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import shapely
import shapely.geometry
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from benchmarks.stack import PROCESSED_EVENTS_SQL, BenchStack, machine_description, wait_until_counted
from deploy.local.kafka import KafkaBroker
from services.contract.codecs import Codecs
from services.contract.datasets.catalogue import DatasetCatalogue
from services.contract.event_signature import SigningKey, sign
from services.contract.messages import ChangeEvent, GeometryEncoding, RawGeometry
from services.contract.size_limits import MAX_RECORD_BYTES
from services.infrastructure.database import make_engine
from services.infrastructure.signing_keys import named_admin_key
from services.ingest.adapters.kafka_event_publisher import bulk_messages, event_key
from services.ingest.domain.change_events import upsert_events
from services.ingest.domain.source_records import read_geojson

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = {
    "public_toilets": ROOT / "samples/grandlyon/toilettes.geojson",
    "parks_gardens": ROOT / "samples/grandlyon/parcs.geojson",
}
INPUT_TOPIC = "odc.change-events"
LINGER_MS = 20  # the load generator batches for 20 ms: at 5 ms the broker spent 0.48 core on its stream alone (benchmarks/broker_cost.py); the wait counts in the latency measured from each send
VERSIONS_TOPIC = "odc.dataset-versions"


def build_events(dataset: str, n: int, seq: int) -> list[ChangeEvent]:
    definition = DatasetCatalogue.load().get(dataset)
    assert definition is not None
    records = list(read_geojson(SAMPLES[dataset].read_bytes()))
    base = list(
        upsert_events(
            records,
            definition,
            commune=None,
            source="bench",
            sequence=seq,
            occurred_at=datetime.now(UTC),
            new_id=lambda: str(uuid.uuid4()),
        )
    )
    out: list[ChangeEvent] = []
    round_ = 0
    while len(out) < n:
        for ev in base:
            if len(out) >= n:
                break
            out.append(
                replace(
                    ev,
                    event_id=str(uuid.uuid4()),
                    feature_id=f"{ev.feature_id}-b{round_}",
                    geometry=shifted(ev.geometry, round_),
                )
            )
        round_ += 1
    return out


STEP_DEGREES = 0.0004  # 31 m of longitude, 44 m of latitude at Lyon


def _centred(i: int) -> int:
    """0, 1, -1, 2, -2, ... 10, -10."""
    return (i + 1) // 2 * (1 if i % 2 else -1)


def shifted(geometry: RawGeometry | None, round_: int) -> RawGeometry | None:
    """Each replica round moves the whole layer by a few tens of metres (441 distinct offsets, at most
    ~440 m): replicas are distinct places, as 200k real features would be, instead of hundreds of one
    commune's features stacked on one point (which the same-place lookup would have to wade through, a
    pathological case measured separately in docs/benchmarks.md). Round 0 is the file as published.
    Both axes move by the same kind of step, so the file's own axis order does not matter."""
    if geometry is None or round_ == 0 or geometry.encoding is not GeometryEncoding.GEOJSON:
        return geometry
    dx, dy = _centred(round_ % 21) * STEP_DEGREES, _centred((round_ // 21) % 21) * STEP_DEGREES

    def move(c: Any) -> Any:
        if c and isinstance(c[0], int | float):
            return [c[0] + dx, c[1] + dy, *c[2:]]
        return [move(x) for x in c]

    obj = json.loads(geometry.value)
    obj["coordinates"] = move(obj["coordinates"])
    return replace(geometry, value=json.dumps(obj).encode())


SPREAD_CELL_DEGREES = 0.0005  # the free-place grid: 39 m of longitude, 56 m of latitude at Lyon
SPREAD_TRIES = 30


def build_spread_events(dataset: str, n: int, seq: int, seed: int = 16) -> list[ChangeEvent]:
    """N events from the file's records, each replica laid on a free place of the dataset's area with a fresh
    name (issue #16). Round 0 is the file as published; in later rounds each record keeps its shape but moves
    to a uniformly random position inside the territory's communes where its bounding box meets no feature
    placed before (a grid of ~50 m cells); after ``SPREAD_TRIES`` positions without a free one it takes the
    last (an area fuller than it can hold is dense anyway). The replica belongs to the commune it lands in
    (event commune and the dataset's commune field), and the values of the same-place match fields get the
    round's suffix, as distinct real things have distinct names. ``build_events`` (replicas within 440 m of
    the original, same names and commune) is the dense stress case."""
    catalogue = DatasetCatalogue.load()
    definition = catalogue.get(dataset)
    assert definition is not None
    n_file = sum(1 for _ in read_geojson(SAMPLES[dataset].read_bytes()))
    base = build_events(dataset, min(n, n_file), seq)
    rng = np.random.default_rng(seed)
    occupied: set[tuple[int, int]] = set()
    boxes = [_bbox(e.geometry) for e in base]
    for b in boxes:
        if b is not None:
            occupied.update(_cells(b))
    places = _Places(catalogue.commune_boundaries, definition.bounds, rng)
    names, commune_field = definition.same_place.match_fields, definition.commune_field
    out: list[ChangeEvent] = list(base[:n])
    recent: deque[bool] = deque(maxlen=200)  # placements that found no free place
    round_ = 1
    while len(out) < n:
        for ev, box in zip(base, boxes, strict=True):
            if len(out) >= n:
                break
            attrs = dict(ev.attributes)
            for f in names:
                if isinstance(attrs.get(f), str) and attrs[f]:
                    attrs[f] = f"{attrs[f]} {round_}"
            geometry, commune = ev.geometry, ev.commune
            if box is not None and geometry is not None:
                cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
                # once the area is full (most of the recent placements found no free place), stop searching
                tries = SPREAD_TRIES if sum(recent) < 0.9 * len(recent) or len(recent) < 100 else 1
                for _ in range(tries):
                    px, py, commune = places.draw()
                    moved = (box[0] + px - cx, box[1] + py - cy, box[2] + px - cx, box[3] + py - cy)
                    free = not any(c in occupied for c in _cells(moved))
                    if free:
                        break
                recent.append(not free)
                occupied.update(_cells(moved))
                geometry = _moved(geometry, px - cx, py - cy)
                if commune_field and commune_field in attrs:
                    attrs[commune_field] = type(attrs[commune_field])(commune)
                commune = commune or ev.commune
            out.append(
                replace(
                    ev,
                    event_id=str(uuid.uuid4()),
                    feature_id=f"{ev.feature_id}-s{round_}",
                    commune=commune,
                    geometry=geometry,
                    attributes=attrs,
                )
            )
        round_ += 1
    return out


def _bbox(geometry: RawGeometry | None) -> tuple[float, float, float, float] | None:
    if geometry is None or geometry.encoding is not GeometryEncoding.GEOJSON:
        return None
    b = shapely.from_geojson(geometry.value).bounds
    return (b[0], b[1], b[2], b[3])


def _cells(box: tuple[float, float, float, float]) -> Iterator[tuple[int, int]]:
    c = SPREAD_CELL_DEGREES
    for i in range(int(box[0] // c), int(box[2] // c) + 1):
        for j in range(int(box[1] // c), int(box[3] // c) + 1):
            yield (i, j)


class _Places:
    """Uniformly random positions inside the territory's communes, with the commune each falls in (drawn
    in vectorised blocks); without boundaries, inside the dataset's bounds and no commune ("")."""

    def __init__(self, boundaries: dict[str, Any], bounds: tuple[float, float, float, float], rng: Any) -> None:
        self._codes = list(boundaries)
        self._areas = [shapely.geometry.shape(boundaries[c]) for c in self._codes]
        for a in self._areas:
            shapely.prepare(a)
        self._bounds = shapely.total_bounds(self._areas) if self._areas else bounds
        self._rng = rng
        self._pool: list[tuple[float, float, str]] = []

    def draw(self) -> tuple[float, float, str]:
        while not self._pool:
            x0, y0, x1, y1 = self._bounds
            xs, ys = self._rng.uniform(x0, x1, 4096), self._rng.uniform(y0, y1, 4096)
            if not self._areas:
                self._pool.extend((x, y, "") for x, y in zip(xs.tolist(), ys.tolist(), strict=True))
            for code, area in zip(self._codes, self._areas, strict=True):
                inside = shapely.contains_xy(area, xs, ys)
                self._pool.extend((x, y, code) for x, y in zip(xs[inside].tolist(), ys[inside].tolist(), strict=True))
            self._rng.shuffle(self._pool)
        return self._pool.pop()


def _moved(geometry: RawGeometry, dx: float, dy: float) -> RawGeometry:
    def move(c: Any) -> Any:
        if c and isinstance(c[0], int | float):
            return [round(c[0] + dx, 7), round(c[1] + dy, 7), *c[2:]]
        return [move(x) for x in c]

    obj = json.loads(geometry.value)
    obj["coordinates"] = move(obj["coordinates"])
    return replace(geometry, value=json.dumps(obj).encode())


def bench_key(stack: BenchStack) -> SigningKey:
    """The Métropole's signing key in the bench database (the normaliser accepts only signed events)."""
    assert stack.db is not None

    async def go() -> SigningKey:
        engine = make_engine(stack.db.dsn)  # type: ignore[union-attr]
        try:
            return await named_admin_key(engine, "bench-admin", "make bench")
        finally:
            await engine.dispose()

    return asyncio.run(go())


INPUT_FORMS = ("bulk", "single")
BULK_WINDOW = 500  # events per window, as `odc send` and the connectors send (services/ingest/entrypoints)


def signed_values(
    stack: BenchStack, events: list[ChangeEvent], form: str = "single"
) -> list[tuple[bytes, bytes, list[tuple[str, bytes]]]]:
    """The events as signed messages on the input topic: one per event (``single``, a live stream of edits), or
    ChangeEventBatch messages per dataset, commune and window of 500 events as `odc send` sends a file
    (``bulk``, built by the ingest's own ``bulk_messages``)."""
    codecs, key = Codecs(), bench_key(stack)
    encoded = [(e, codecs.encode_change_event(e)) for e in events]
    if form == "single":
        return [(event_key(e), value, sign(value, key)) for e, value in encoded]
    if form != "bulk":
        raise ValueError(f"input form {form!r}: one of {INPUT_FORMS}")
    out = []
    for start in range(0, len(encoded), BULK_WINDOW):
        for msg in bulk_messages(encoded[start : start + BULK_WINDOW], codecs, MAX_RECORD_BYTES):
            out.append((msg.key, msg.value, sign(msg.value, key)))
    return out


async def produce(
    broker: KafkaBroker, values: list[tuple[bytes, bytes, list[tuple[str, bytes]]]], rate: float | None = None
) -> list[float]:
    """Send all values (as the broker's admin: a load generator, not a rate-limited commune); return each
    one's send time (monotonic). With ``rate``, pace to events/s."""
    producer = AIOKafkaProducer(
        bootstrap_servers=broker.bootstrap,
        enable_idempotence=True,
        acks="all",
        linger_ms=LINGER_MS,
        max_batch_size=1 << 20,
        **broker.admin_security().producer_kwargs(),
    )
    await producer.start()
    sent_at: list[float] = []
    try:
        futures = []
        start = time.monotonic()
        for i, (key, value, headers) in enumerate(values):
            if rate is not None:
                due = start + i / rate
                delay = due - time.monotonic()
                if delay > 0.005:  # pace in ticks of 5 ms: one wake-up per event would cost the load generator
                    await asyncio.sleep(delay)  # a third of a core on the machine it shares with the pipeline
            sent_at.append(time.monotonic())
            futures.append(await producer.send(INPUT_TOPIC, value=value, key=key, headers=headers))
        for f in futures:
            await f
    finally:
        await producer.stop()
    return sent_at


def run_throughput(stack: BenchStack, dataset: str, n: int) -> dict[str, Any]:
    events = build_events(dataset, n, seq=time.time_ns() // 1000)
    values = signed_values(stack, events)
    ids = [e.feature_id for e in events]
    # applied events, not features: a record that is the same place as another commune's feature is linked to it
    before = int(stack.sql(PROCESSED_EVENTS_SQL)[0][0])
    assert stack.broker is not None
    t0 = time.monotonic()
    asyncio.run(produce(stack.broker, values))
    t_sent = time.monotonic()
    wait_until_counted(
        lambda: int(stack.sql(PROCESSED_EVENTS_SQL)[0][0]) - before,
        len(ids),
        started=t0,
        timeout=1800,
        what="events applied",
    )
    t1 = time.monotonic()
    return {
        "dataset": dataset,
        "events": n,
        "seconds": t1 - t0,
        "send_seconds": t_sent - t0,
        "events_per_second": n / (t1 - t0),
    }


async def _collect_versions(broker: KafkaBroker, stop_after_change: int, deadline: float) -> list[tuple[float, Any]]:
    codecs = Codecs()
    consumer = AIOKafkaConsumer(
        VERSIONS_TOPIC,
        bootstrap_servers=broker.bootstrap,
        group_id=None,
        auto_offset_reset="latest",
        enable_auto_commit=False,
        **broker.admin_security().client_kwargs(),
    )
    await consumer.start()
    out: list[tuple[float, Any]] = []
    try:
        while time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=200)
            now = time.monotonic()
            for records in batch.values():
                for r in records:
                    data = codecs.decode_dataset_version(r.value)
                    out.append((now, data))
            if out and max(d.last_change_id for _, d in out) >= stop_after_change:
                break
    finally:
        await consumer.stop()
    return out


def run_latency(stack: BenchStack, dataset: str, rate: float, seconds: float, tag: str = "lat") -> dict[str, Any]:
    """Steady ``rate`` events/s for ``seconds``; latency = notification arrival - send, per event."""
    n = int(rate * seconds)
    # fresh ids: a re-sent feature with identical content is 'unchanged' and would cut no version
    events = [
        replace(e, feature_id=f"{e.feature_id}-{tag}") for e in build_events(dataset, n, seq=time.time_ns() // 1000)
    ]
    values = signed_values(stack, events)
    assert stack.broker is not None
    broker = stack.broker

    async def go() -> tuple[list[float], list[tuple[float, Any]]]:
        max_change = int(stack.sql("SELECT coalesce(max(change_id), 0) FROM feature_change_outbox")[0][0])
        collector = asyncio.create_task(_collect_versions(broker, max_change + n, time.monotonic() + seconds + 120))
        await asyncio.sleep(1.0)  # let the consumer get its assignment
        sent = await produce(broker, values, rate=rate)
        return sent, await collector

    sent, versions = asyncio.run(go())
    event_ids = [e.event_id for e in events]
    change_of = dict(
        stack.sql("SELECT event_id, change_id FROM feature_change_outbox WHERE event_id = ANY(%s)", event_ids)
    )  # type: ignore[arg-type]
    latencies: list[float] = []
    for i, eid in enumerate(event_ids):
        cid = change_of.get(eid)
        if cid is None:
            continue
        arrival = next((t for t, d in versions if d.first_change_id <= cid <= d.last_change_id), None)
        if arrival is not None:
            latencies.append(arrival - sent[i])
    latencies.sort()
    if not latencies:
        raise RuntimeError(
            f"no version notification matched the events sent ({len(versions)} notifications "
            f"received, {len(change_of)} of {n} events found in the outbox)"
        )

    def pct(p: float) -> float:
        return latencies[min(len(latencies) - 1, int(p * len(latencies)))]

    return {
        "dataset": dataset,
        "rate": rate,
        "seconds": seconds,
        "events": n,
        "matched": len(latencies),
        "p50": statistics.median(latencies),
        "p99": pct(0.99),
        "max": latencies[-1],
        "versions": len(versions),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--points", type=int, default=50_000, help="events for the point dataset")
    parser.add_argument("--polygons", type=int, default=20_000, help="events for the polygon dataset")
    parser.add_argument("--rate", type=float, default=500.0, help="steady send rate for the latency run")
    parser.add_argument("--latency-seconds", type=float, default=30.0)
    parser.add_argument(
        "--max-delay",
        type=float,
        default=0.5,
        help="publisher max delay before a version is cut under a steady stream (s)",
    )
    parser.add_argument("--no-write", action="store_true", help="print only; do not append to docs/")
    args = parser.parse_args()

    stack = BenchStack()
    print(f"starting a throwaway stack in {stack.root} ...", flush=True)
    stack.start(extra_env={"ODC_PUBLISH_MAX_DELAY_SECONDS": str(args.max_delay)})
    try:
        results: dict[str, Any] = {
            "machine": machine_description(),
            "settings": vars(args),
            "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        print(f"throughput: {args.points} point events ...", flush=True)
        results["throughput_points"] = run_throughput(stack, "public_toilets", args.points)
        print(f"throughput: {args.polygons} polygon events ...", flush=True)
        results["throughput_polygons"] = run_throughput(stack, "parks_gardens", args.polygons)
        print(f"latency: {args.rate:.0f} events/s for {args.latency_seconds:.0f} s ...", flush=True)
        results["latency"] = run_latency(stack, "public_toilets", args.rate, args.latency_seconds)
    finally:
        stack.stop()
    table = render(results)
    print(table)
    if not args.no_write:
        out_dir = ROOT / "docs" / "benchmarks"
        out_dir.mkdir(parents=True, exist_ok=True)
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        (out_dir / f"{stamp}.json").write_text(json.dumps(results, indent=2, default=str))
        with (ROOT / "docs" / "benchmarks.md").open("a", encoding="utf-8") as fh:
            fh.write(f"\n## Run {stamp}\n\n{table}\nRaw numbers: `docs/benchmarks/{stamp}.json`.\n")
        print(f"appended to docs/benchmarks.md (raw: docs/benchmarks/{stamp}.json)")


def render(r: dict[str, Any]) -> str:
    m = r["machine"]
    tp, tg, lat = r["throughput_points"], r["throughput_polygons"], r["latency"]
    return "\n".join(
        [
            f"Machine: {m['cpu']}, {m['cores']} cores, {m['memory']} RAM, Linux {m['kernel']}, Python {m['python']}, "
            f"{m['postgres']}, {m['kafka']}.",
            "",
            "| measure | value |",
            "|---|---|",
            f"| end-to-end throughput, points ({tp['events']} toilets events, fresh ids) | "
            f"{tp['events_per_second']:,.0f} events/s ({tp['seconds']:.1f} s; sending took {tp['send_seconds']:.1f} s) |",
            f"| end-to-end throughput, polygons ({tg['events']} parks events, fresh ids) | "
            f"{tg['events_per_second']:,.0f} events/s ({tg['seconds']:.1f} s; sending took {tg['send_seconds']:.1f} s) |",
            f"| send → version notification at {lat['rate']:.0f} events/s for {lat['seconds']:.0f} s, p50 | "
            f"{lat['p50'] * 1000:,.0f} ms |",
            f"| same, p99 | {lat['p99'] * 1000:,.0f} ms |",
            f"| same, max | {lat['max'] * 1000:,.0f} ms ({lat['matched']} of {lat['events']} events matched, "
            f"{lat['versions']} versions) |",
            "",
            f"Publisher max delay under a steady stream: {r['settings']['max_delay']} s.",
            "",
        ]
    )


if __name__ == "__main__":
    main()
