"""A compressed batch that expands past the bound is refused whole, and the stream goes on (kafka_decompression.py).

Through the real broker as a commune's client would send them: a batch of a few KiB that expands to 48 MiB (one
record of zeros) in zstd, lz4 and gzip, and one record of 2 MB (over size_limits.MAX_RECORD_BYTES, under the
bound). Without the bound, aiokafka decompressed each whole (a 300 MiB one took the normaliser from 138 to 752 MB
and left it at 445 MB) and the 48 MiB records reached the decoder as `undecodable`."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from aiokafka import AIOKafkaProducer

from deploy.local.kafka_access import COMMUNE_USERS
from services.contract import size_limits
from tests.integration.pipeline_harness import TOPICS, Pipeline, toilet_event

pytestmark = pytest.mark.integration

BOMB_BYTES = 48 * 1024 * 1024  # past the normaliser's 32 MiB bound
# snappy expands ~21x at most: a batch the broker takes (1 MiB) cannot pass 32 MiB (its bound: unit tests)
CODECS = ("zstd", "lz4", "gzip")


def peak_rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmHWM"))


def send_one_batch(pipeline: Pipeline, codec: str, value: bytes, partition: int) -> tuple[int, int]:
    """One record in one batch compressed with ``codec``, as a commune's client may build it (a batch is bounded
    by the broker only as compressed); its partition and offset."""

    async def go() -> tuple[int, int]:
        producer = AIOKafkaProducer(
            bootstrap_servers=pipeline.broker.bootstrap,
            **{**pipeline.broker.security(COMMUNE_USERS[0]).producer_kwargs(), "compression_type": codec},
        )
        await producer.start()
        try:
            batch = producer.create_batch()
            assert batch.append(key=b"public_toilets/69266/bomb", value=value, timestamp=None) is not None
            sent = await (await producer.send_batch(batch, TOPICS["input"], partition=partition))
            return sent.partition, sent.offset
        finally:
            await producer.stop()

    return asyncio.run(go())


def test_a_batch_expanding_past_the_bound_is_refused_whole_and_the_stream_goes_on(pipeline: Pipeline) -> None:
    pid = pipeline.services["normalise"].pid()
    assert pid is not None
    peak_before = peak_rss_kb(pid)
    before = pipeline.metric("normalise", "odc_events_received_total")
    bombs = {codec: send_one_batch(pipeline, codec, b"\0" * BOMB_BYTES, i) for i, codec in enumerate(CODECS)}
    big = send_one_batch(pipeline, "zstd", b"\0" * 2_000_000, 4)  # under the bound, over one record's limit
    after = toilet_event(f"after-bombs-{uuid.uuid4().hex[:8]}", seq=1, adresse="still flowing")
    pipeline.produce_events([after])
    pipeline.settle("public_toilets", before, len(bombs) + 2)

    for codec, at in bombs.items():
        refused = pipeline.rejection_at(*at)
        assert refused is not None and refused[0] == "batch_too_large", (codec, refused)
        assert f"a {codec}-compressed record batch (offsets {at[1]} to {at[1]})" in refused[1]
        assert "expands past 32 MiB" in refused[1]
    too_large = pipeline.rejection_at(*big)
    assert too_large is not None and too_large[0] == "record_too_large"
    assert (
        f"a record of 2,000,000 bytes (decompressed), over the limit of {size_limits.MAX_RECORD_BYTES:,}"
        in (too_large[1])
    )
    assert pipeline.sql(
        "SELECT attributes->>'adresse' FROM canonical_feature WHERE feature_id = %s", after.feature_id
    ) == [("still flowing",)]
    assert pipeline.services["normalise"].pid() == pid  # the same process: nothing crashed
    # each bomb is decompressed at most to the bound (32 MiB written, then refused), never whole: without the
    # bound, four 48 MiB batches (each copied twice by aiokafka) raise the peak by well over 100 MB
    assert peak_rss_kb(pid) - peak_before < 80 * 1024
