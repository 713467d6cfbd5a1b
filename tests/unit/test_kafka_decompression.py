"""Bounded decompression of Kafka record batches (services/infrastructure/kafka_decompression.py): the bounded
decoders give exactly aiokafka's output within the bound and refuse past it; a batch past it becomes one refused
record at its last offset between the batches around it."""

from __future__ import annotations

import gzip

import pytest
from aiokafka import codec
from aiokafka.record.default_records import DefaultRecordBatch, DefaultRecordBatchBuilder
from aiokafka.record.memory_records import MemoryRecords
from aiokafka.structs import TopicPartition
from hypothesis import given, settings
from hypothesis import strategies as st

from services.contract.messages import RefusedBatch
from services.infrastructure import kafka_decompression as kd

LIMIT = 64 * 1024
ENCODERS = {
    "gzip_decode": codec.gzip_encode,
    "snappy_decode": codec.snappy_encode,  # xerial framing, as Kafka's Java client writes it
    "lz4_decode": codec.lz4_encode,
    "zstd_decode": codec.zstd_encode,
}
ORIGINAL = {name: getattr(codec, name) for name in ENCODERS}


@settings(max_examples=60, deadline=None)
@given(
    st.sampled_from(sorted(ENCODERS)),
    st.one_of(st.binary(min_size=1, max_size=LIMIT), st.integers(4, LIMIT).map(lambda n: b"odc " * (n // 4))),
)
def test_within_the_bound_the_output_is_aiokafkas(name: str, payload: bytes) -> None:
    compressed = ENCODERS[name](payload)  # (a Kafka batch is never empty: aiokafka cannot read its empty snappy)
    assert kd.bounded_decoders(LIMIT)[name](compressed) == ORIGINAL[name](compressed) == payload


@pytest.mark.parametrize("name", sorted(ENCODERS))
def test_past_the_bound_it_refuses_without_expanding_it_all(name: str) -> None:
    compressed = ENCODERS[name](b"\0" * (LIMIT + 1))
    with pytest.raises(kd.DecompressedTooLarge) as refused:
        kd.bounded_decoders(LIMIT)[name](compressed)
    assert refused.value.limit == LIMIT and refused.value.codec == name.removesuffix("_decode")
    assert kd.bounded_decoders(LIMIT + 1)[name](compressed) == b"\0" * (LIMIT + 1)  # exactly at the bound: read


def test_raw_snappy_and_several_gzip_members_are_read_as_aiokafka_reads_them() -> None:
    raw = codec.snappy_encode(b"raw snappy " * 100, xerial_compatible=False)
    assert kd.bounded_decoders(LIMIT)["snappy_decode"](raw) == codec.snappy_decode(raw)
    members = gzip.compress(b"first ") + gzip.compress(b"second")
    assert kd.bounded_decoders(LIMIT)["gzip_decode"](members) == codec.gzip_decode(members) == b"first second"
    with pytest.raises(kd.DecompressedTooLarge):
        kd.bounded_decoders(10)["gzip_decode"](members)  # 12 bytes across the two members


def test_corrupt_data_is_still_an_error_not_a_refusal_for_size() -> None:
    bad = codec.zstd_encode(b"x" * 1000)[:-7] + b"\x00" * 7
    with pytest.raises(Exception) as error:
        kd.bounded_decoders(LIMIT)["zstd_decode"](bad)
    assert not isinstance(error.value, kd.DecompressedTooLarge)


def _batch(base_offset: int, values: list[bytes], compression: int) -> bytes:
    builder = DefaultRecordBatchBuilder(
        magic=2,
        compression_type=compression,
        is_transactional=0,
        producer_id=-1,
        producer_epoch=-1,
        base_sequence=-1,
        batch_size=1 << 30,
    )
    for i, value in enumerate(values):
        builder.append(i, timestamp=None, key=None, value=value, headers=[])
    buffer = builder.build()
    buffer[0:8] = base_offset.to_bytes(8, "big")  # the broker assigns the offsets
    return bytes(buffer)


def test_a_batch_past_the_bound_becomes_one_refused_record_between_the_others() -> None:
    zstd = DefaultRecordBatch.CODEC_ZSTD
    fetched = MemoryRecords(
        _batch(10, [b"a", b"b"], zstd) + _batch(12, [b"\0" * (LIMIT + 1), b"c"], zstd) + _batch(14, [b"d"], zstd)
    )
    kd.install(LIMIT)
    try:  # (then aiokafka's own decoders are put back for the other tests)
        records = kd.BoundedPartitionRecords(TopicPartition("t", 3), fetched, [], 10, None, None, True, 0)
        got = list(records)
    finally:
        for module in (kd.py_default_records, kd.py_legacy_records, kd.c_default_records, kd.c_legacy_records):
            for name, decode in ORIGINAL.items():
                if module is not None and hasattr(module, name):
                    setattr(module, name, decode)
        kd.fetcher.PartitionRecords = kd.BoundedPartitionRecords.__mro__[1]
    assert [(r.offset, r.value) for r in got] == [(10, b"a"), (11, b"b"), (13, b""), (14, b"d")]
    refused = got[2].value
    assert isinstance(refused, kd.RefusedValue)
    assert refused.batch == RefusedBatch("zstd", LIMIT, 12, 13)
    assert (got[2].topic, got[2].partition) == ("t", 3)
    assert records.next_fetch_offset == 15
