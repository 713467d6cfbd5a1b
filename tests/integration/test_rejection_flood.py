"""A flood of large junk leaves the rejection table bounded (issue #13, point 3), on the session's real
broker, PostGIS and services: each rejection keeps a 16 KiB prefix of the original with the SHA-256 and size
of the whole, the rejected topic carries the same, ``odc report`` still explains the commune's rejections,
and pruning past the retention deletes the rows in batches."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import subprocess
import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest

from services.contract.size_limits import REJECTION_ORIGINAL_PREFIX_BYTES
from services.infrastructure.database import make_engine
from services.normalise.adapters.outbox_pruning import prune_rejections
from services.normalise.domain.rejection_retention import retention_cutoff
from tests.integration.pipeline_harness import Pipeline, toilet_event, wait_for

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
JUNK_BYTES = 900_000  # under the broker's 1 MiB, 55 times the kept prefix
JUNK_MESSAGES = 24
LARGE_EVENTS = 6


def test_a_flood_of_large_junk_keeps_a_bounded_prefix_reports_still_work_and_old_rows_are_pruned(
    pipeline: Pipeline,
) -> None:
    p = pipeline
    junk = [uuid.uuid4().bytes + b"\xfe junk " * (JUNK_BYTES // 7) for _ in range(JUNK_MESSAGES)]
    junk = [j[:JUNK_BYTES].ljust(JUNK_BYTES, b"\x00") for j in junk]
    fids = [str(950_000 + uuid.uuid4().int % 40_000) for _ in range(LARGE_EVENTS)]
    # refused (a NUL character refuses the record; an over-long value alone is only left out since conformance
    # levels) and large: 400 KB each, 25 times the kept prefix
    large = [toilet_event(f, seq=1, adresse="\x00" + "A" * 400_000) for f in fids]
    p.produce(junk)
    p.produce_events(large)
    shas = [hashlib.sha256(j).hexdigest() for j in junk]

    rows = wait_for(
        "every junk message and large event rejected and relayed",
        lambda: (
            (
                r := p.sql(
                    "SELECT octet_length(original), original_size, original_sha256, "
                    "(txid, seq) <= (SELECT txid, last_id FROM outbox_cursor WHERE outbox = 'rejection') FROM rejection "
                    "WHERE original_sha256 = ANY(%s) OR (feature_id = ANY(%s) AND commune = '69266')",
                    shas,
                    fids,
                )
            )
            and len(r) == JUNK_MESSAGES + LARGE_EVENTS
            and all(sent for *_, sent in r)
            and r
        ),
        180,
    )
    assert {sha for _, _, sha, _ in rows} >= set(shas)
    for kept, size, _, _ in rows:
        assert kept == min(size, REJECTION_ORIGINAL_PREFIX_BYTES) and size > REJECTION_ORIGINAL_PREFIX_BYTES
    assert {size for kept, size, sha, _ in rows if sha in shas} == {JUNK_BYTES}

    # the rejected topic carries the prefix with the hash and size of the whole
    on_topic = {r.original_sha256: r for r in p.rejections() if r.original_sha256 in shas}
    assert set(on_topic) == set(shas)
    for sha, r in on_topic.items():
        whole = junk[shas.index(sha)]
        assert r.reason == "undecodable" and r.original == whole[:REJECTION_ORIGINAL_PREFIX_BYTES]
        assert r.original_size == JUNK_BYTES

    # odc report still explains the commune's rejected records
    env = {**os.environ, "ODC_DATABASE_URL": p.db.dsn}
    command = ["report", "--commune", "69266", "--dataset", "public_toilets", "--json"]
    done = subprocess.run(
        [sys.executable, "-m", "services.cli.main", *command],
        check=False,
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    reported = {r["feature_id"]: r for r in json.loads(done.stdout)["records"]}
    assert set(fids) <= set(reported)
    assert all(reported[f]["errors"] for f in fids)  # per-field errors, as before the bound

    # past the retention (made old here), relayed rows are pruned in batches; nothing else is touched
    mine = "original_sha256 = ANY(%s) OR (feature_id = ANY(%s) AND commune = '69266')"
    p.sql(f"UPDATE rejection SET rejected_at = now() - interval '400 days' WHERE {mine} RETURNING 1", shas, fids)
    others_before = p.sql("SELECT count(*) FROM rejection")[0][0] - JUNK_MESSAGES - LARGE_EVENTS

    async def prune() -> int:
        engine = make_engine(p.db.dsn, pool_size=1)
        try:
            return await prune_rejections(engine, retention_cutoff(datetime.now(UTC), 365), batch_rows=7)
        finally:
            await engine.dispose()

    assert asyncio.run(prune()) == JUNK_MESSAGES + LARGE_EVENTS
    assert p.sql(f"SELECT count(*) FROM rejection WHERE {mine}", shas, fids)[0][0] == 0
    assert p.sql("SELECT count(*) FROM rejection")[0][0] == others_before
