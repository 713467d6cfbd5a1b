"""A compressed record batch is decompressed within a bound, and a batch past it is refused, not followed.

The broker bounds a batch by its *compressed* size (`message.max.bytes`, 1 MiB); nothing bounds what it expands
to. A client with write access to the input topic can send a batch of a few KiB that expands to gigabytes
(300 MiB of zeros compress to ~10 KB with zstd). aiokafka decompresses each batch whole, unbounded
(`aiokafka.codec.*_decode`): the normaliser's memory follows the batch, past any container's limit, and a
restarted normaliser reads the same batch again — one message would stop the stream for every commune
(tests/integration/test_decompression_bound.py showed a 300 MiB batch taking the normaliser to 752 MB).

So the normaliser installs, before its consumer starts (:func:`install`):

- bounded decoders for the four Kafka codecs in aiokafka's record parsers (the C and the Python ones): each
  writes into a buffer of ``limit + 1`` bytes (zstd, lz4: ``cramjam``'s ``decompress_into``, which stops when the
  buffer is full; gzip: ``zlib`` with ``max_length``; snappy: each block's length is read from its header before
  it is decompressed) and raises :class:`DecompressedTooLarge` past the limit. A legitimate batch is at most
  the broker's 1 MiB compressed, and the producers' own records are at most 1 MiB each;
- a ``PartitionRecords`` (aiokafka's per-partition iterator over a fetch) that turns that error into one
  record at the batch's last offset, whose value is a :class:`RefusedValue` (empty bytes carrying the
  refused batch),
  and goes on with the next batch: the worker refuses it with its offsets, commits past it and the stream
  flows. Without it the error would reach ``getmany`` and the same batch would be fetched again forever.

It relies on aiokafka internals (the module-level decoder names of its record parsers, ``PartitionRecords``'
constructor and ``_unpack_records``); aiokafka is pinned in requirements.lock and the integration test above
fails if a new version changes them.
"""

from __future__ import annotations

import mmap
import struct
import zlib
from collections.abc import Callable
from types import ModuleType
from typing import Any

import cramjam
import numpy as np
from aiokafka.consumer import fetcher
from aiokafka.record import default_records as py_default_records
from aiokafka.record import legacy_records as py_legacy_records
from aiokafka.structs import ConsumerRecord

from services.contract.messages import RefusedBatch

try:  # the C parsers aiokafka uses when its extensions are built (they are, in its wheels)
    from aiokafka.record._crecords import default_records as c_default_records
    from aiokafka.record._crecords import legacy_records as c_legacy_records
except ImportError:  # pragma: no cover - a build without extensions uses the Python parsers only
    c_default_records = c_legacy_records = None

_XERIAL_HEADER = b"\x82SNAPPY\x00"


class DecompressedTooLarge(Exception):
    """A compressed batch expands past the bound."""

    def __init__(self, codec: str, limit: int) -> None:
        super().__init__(f"a {codec} batch expands past {limit} bytes")
        self.codec = codec
        self.limit = limit


class RefusedValue(bytes):
    """The value of the one record that stands for a refused batch: empty bytes carrying what was refused."""

    batch: RefusedBatch

    @classmethod
    def of(cls, batch: RefusedBatch) -> RefusedValue:
        value = cls(b"")
        value.batch = batch
        return value


class _Scratch:
    """One reused buffer of ``limit + 1`` bytes (an anonymous mapping: a page is resident once written): a
    fresh buffer per batch cost ~65 µs more than aiokafka's own decode of a 16 KB batch, the reused one nothing.
    After a refusal its pages are given back (``MADV_DONTNEED``). A nested call (none is expected: aiokafka
    decompresses in the event loop's thread) gets a buffer of its own."""

    def __init__(self, size: int) -> None:
        self.map = mmap.mmap(-1, size)
        self.view = np.frombuffer(self.map, dtype=np.uint8)
        self.busy = False

    def release(self) -> None:
        self.map.madvise(mmap.MADV_DONTNEED)


def _into(codec: str, decompress_into: Callable[[Any, Any], int], limit: int) -> Callable[[Any], bytes]:
    scratch = _Scratch(limit + 1)

    def decode(payload: Any) -> bytes:
        own = not scratch.busy
        out = scratch.view if own else np.empty(limit + 1, dtype=np.uint8)
        scratch.busy = scratch.busy or own
        try:
            try:
                n = decompress_into(bytes(payload), out)
            except cramjam.DecompressionError as error:
                if "failed to write whole buffer" not in str(error):
                    raise
                n = limit + 1
            if n > limit:
                if own:
                    scratch.release()
                raise DecompressedTooLarge(codec, limit)
            return out[:n].tobytes()
        finally:
            if own:
                scratch.busy = False

    return decode


def _gzip(limit: int) -> Callable[[Any], bytes]:
    def decode(payload: Any) -> bytes:
        data, parts, size = bytes(payload), [], 0
        while data:
            member = zlib.decompressobj(wbits=47)  # gzip (or zlib) header; a batch may hold several members
            part = member.decompress(data, limit + 1 - size)
            size += len(part)
            if size > limit or member.unconsumed_tail:
                raise DecompressedTooLarge("gzip", limit)
            parts.append(part)
            if not member.eof:
                raise zlib.error("truncated gzip data")
            data = member.unused_data
        return b"".join(parts)

    return decode


def _snappy(limit: int) -> Callable[[Any], bytes]:
    def raw(block: bytes, room: int) -> bytes:
        if cramjam.snappy.decompress_raw_len(block) > room:
            raise DecompressedTooLarge("snappy", limit)
        return bytes(cramjam.snappy.decompress_raw(block))

    def decode(payload: Any) -> bytes:
        data = bytes(payload)
        if not data.startswith(_XERIAL_HEADER) or len(data) < 16:
            return raw(data, limit)
        parts, size, cursor = [], 0, 16  # the xerial framing Kafka's Java client writes: [length][raw block]...
        while cursor < len(data):
            (length,) = struct.unpack_from("!i", data, cursor)
            block = data[cursor + 4 : cursor + 4 + length]
            part = raw(block, limit - size)
            size += len(part)
            parts.append(part)
            cursor += 4 + length
        return b"".join(parts)

    return decode


def bounded_decoders(limit: int) -> dict[str, Callable[[Any], bytes]]:
    """aiokafka's decoder names, each bounded to ``limit`` decompressed bytes."""
    return {
        "gzip_decode": _gzip(limit),
        "snappy_decode": _snappy(limit),
        "lz4_decode": _into("lz4", cramjam.lz4.decompress_into, limit),
        "zstd_decode": _into("zstd", cramjam.zstd.decompress_into, limit),
    }


class _RememberedBatches:
    """The fetch's batches as aiokafka's iterator reads them, keeping the one being read."""

    __slots__ = ("_records", "current")

    def __init__(self, records: Any) -> None:
        self._records = records
        self.current: Any = None

    def has_next(self) -> bool:
        return bool(self._records.has_next())

    def next_batch(self) -> Any:
        self.current = self._records.next_batch()
        return self.current


class BoundedPartitionRecords(fetcher.PartitionRecords):  # type: ignore[misc]
    """aiokafka's ``PartitionRecords``; a batch past the bound becomes one :class:`RefusedValue` record."""

    def __init__(self, tp: Any, records: Any, *args: Any, **kwargs: Any) -> None:
        super().__init__(tp, _RememberedBatches(records), *args, **kwargs)

    def __next__(self) -> Any:
        try:
            return super().__next__()
        except DecompressedTooLarge as error:
            batch = self._records.current
            last = batch.next_offset - 1
            self.next_fetch_offset = batch.next_offset  # the fetch goes on past the refused batch
            self._records_iterator = self._unpack_records()  # then with the rest of this fetch
            refused = RefusedValue.of(RefusedBatch(error.codec, error.limit, batch.base_offset, last))
            return ConsumerRecord(
                self._tp.topic, self._tp.partition, last, batch.max_timestamp, 0, None, refused, None, -1, 0, ()
            )


def install(limit: int) -> None:
    """Bound every batch this process's aiokafka consumers decompress to ``limit`` bytes (module docstring)."""
    decoders = bounded_decoders(limit)
    modules: list[ModuleType | None] = [py_default_records, py_legacy_records, c_default_records, c_legacy_records]
    for module in modules:
        if module is None:
            continue
        for name, decode in decoders.items():
            if hasattr(module, name):
                setattr(module, name, decode)
    fetcher.PartitionRecords = BoundedPartitionRecords
