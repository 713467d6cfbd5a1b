"""Byte ranges on the exports (issue #15 point 8): the RFC 9110 reading of a Range header (pure), and the export
routes answering 206 / multipart / 416 / 200 with If-Range, from a file written once (a fake read model that counts
how often the export is read), and the export files' directory staying within its bound."""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry

from services.contract.datasets.catalogue import DatasetCatalogue
from services.publish.adapters.export_files import LocalExportFiles
from services.publish.domain.api_documents import VersionRecord
from services.publish.domain.byte_ranges import Parts, Unsatisfiable, Whole, requested_ranges
from services.publish.domain.dcat import VersionSummary
from services.publish.domain.feature_documents import StoredFeature
from services.publish.entrypoints.http_api import build_api
from services.publish.metrics import PublishMetrics

# -- the pure reading of the header --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "size", "expected"),
    [
        (None, 100, Whole()),
        ("bytes=0-9", 100, Parts(((0, 9),))),
        ("bytes=90-", 100, Parts(((90, 99),))),
        ("bytes=-10", 100, Parts(((90, 99),))),
        ("bytes=-1000", 100, Parts(((0, 99),))),  # a suffix longer than the document: all of it
        ("bytes=50-5000", 100, Parts(((50, 99),))),  # last clamped
        ("Bytes = 0-0 , 5-6", 100, Parts(((0, 0), (5, 6)))),  # case, spaces, several
        ("bytes=0-1,,2-3", 100, Parts(((0, 1), (2, 3)))),  # empty list elements allowed
        ("bytes=100-", 100, Unsatisfiable(100)),
        ("bytes=100-200", 100, Unsatisfiable(100)),
        ("bytes=-0", 100, Unsatisfiable(100)),
        ("bytes=0-", 0, Unsatisfiable(0)),
        ("bytes=0-4,200-300", 100, Parts(((0, 4),))),  # the unsatisfiable one dropped
        ("bytes=9-5", 100, Whole()),  # last < first: invalid, ignored
        ("items=0-5", 100, Whole()),
        ("bytes=abc", 100, Whole()),
        ("bytes=-", 100, Whole()),
        ("bytes=", 100, Whole()),
        ("bytes 0-5", 100, Whole()),
        ("bytes=0-5;x", 100, Whole()),
        ("bytes=" + ",".join(f"{i}-{i}" for i in range(17)), 100, Whole()),  # too many
    ],
)
def test_a_range_header_reads_as_rfc_9110_says(header: str | None, size: int, expected: object) -> None:
    assert requested_ranges(header, size) == expected


def test_parts_render_a_canonical_header() -> None:
    assert Parts(((0, 9), (20, 29))).header() == "bytes=0-9,20-29"


# -- the export routes --------------------------------------------------------------------------------------

DATASET = "public_toilets"
PUBLISHED = datetime(2026, 12, 1, 8, 30, tzinfo=UTC)


class SnapshotReadModel:
    """A fake of the read model's two queries the export routes use, counting snapshot reads."""

    def __init__(self, n: int) -> None:
        self.features = [
            StoredFeature(
                "69123",
                f"wc-{i:05d}",
                json.dumps({"type": "Point", "coordinates": [4.8 + i / 1e5, 45.7]}),
                json.dumps({"gid": i, "adresse": f"{i} place " + "é" * (i % 23), "codinsee": "69123"}),
            )
            for i in range(n)
        ]
        self.reads = 0

    async def version(self, dataset: str, version: int) -> VersionRecord | None:
        if dataset != DATASET or version != 1:
            return None
        summary = VersionSummary(1, PUBLISHED, len(self.features), len(self.features), 0, 0, "ab" * 32)
        return VersionRecord(DATASET, summary, 1, len(self.features))

    async def snapshot(self, dataset: str, version: int) -> AsyncIterator[StoredFeature]:
        self.reads += 1
        for f in self.features:
            yield f


@pytest.fixture
def api(tmp_path: Path) -> tuple[TestClient, SnapshotReadModel]:
    read_model = SnapshotReadModel(2000)  # a GeoJSON of ~250 KB: several 64 KiB writes
    registry = CollectorRegistry()
    app = build_api(
        base_url="http://odc.test",
        catalogue=DatasetCatalogue.load(),
        read_model=read_model,  # type: ignore[arg-type]
        subscriptions=None,  # type: ignore[arg-type]
        delivery_store_factory=None,  # type: ignore[arg-type]
        resolver=None,  # type: ignore[arg-type]
        clock=None,  # type: ignore[arg-type]
        metrics=PublishMetrics(registry),
        registry=registry,
        health={"database": True},
        tokens=None,  # type: ignore[arg-type]
        export_files=LocalExportFiles(tmp_path / "exports"),
    )
    return TestClient(app), read_model


URLS = [f"/datasets/{DATASET}/versions/1/features.geojson", f"/datasets/{DATASET}/versions/1/features.csv"]


@pytest.mark.parametrize("url", URLS)
def test_a_single_range_answers_206_with_its_content_range(api: tuple[TestClient, SnapshotReadModel], url: str) -> None:
    client, read_model = api
    whole = client.get(url)
    assert whole.status_code == 200 and whole.headers["accept-ranges"] == "bytes"
    size = len(whole.content)
    assert int(whole.headers["content-length"]) == size > 1 << 16  # more than one 64 KiB write
    for header, (first, last) in [
        ("bytes=0-99", (0, 99)),
        (f"bytes={size - 10}-", (size - 10, size - 1)),
        ("bytes=-7", (size - 7, size - 1)),
        (f"bytes=70000-{size * 2}", (70000, size - 1)),
    ]:
        r = client.get(url, headers={"Range": header})
        assert r.status_code == 206, header
        assert r.headers["content-range"] == f"bytes {first}-{last}/{size}"
        assert r.content == whole.content[first : last + 1]
        assert int(r.headers["content-length"]) == last - first + 1
        assert r.headers["etag"] == whole.headers["etag"]
    assert read_model.reads == 1  # written once, every range served from the file


@pytest.mark.parametrize("url", URLS)
def test_an_unsatisfiable_range_answers_416_with_the_size(api: tuple[TestClient, SnapshotReadModel], url: str) -> None:
    client, _ = api
    size = len(client.get(url).content)
    for header in (f"bytes={size}-", f"bytes={size + 5}-{size + 10}", "bytes=-0"):
        r = client.get(url, headers={"Range": header})
        assert r.status_code == 416, header
        assert r.headers["content-range"] == f"bytes */{size}"


@pytest.mark.parametrize("header", ["bytes=9-5", "items=0-5", "bytes=abc", "bytes 0-5", "bytes="])
def test_an_invalid_range_is_ignored(api: tuple[TestClient, SnapshotReadModel], header: str) -> None:
    client, _ = api
    whole = client.get(URLS[0]).content
    r = client.get(URLS[0], headers={"Range": header})
    assert r.status_code == 200 and r.content == whole and "content-range" not in r.headers


def test_if_range_with_the_etag_or_the_date_gives_the_range_and_with_anything_else_the_whole(
    api: tuple[TestClient, SnapshotReadModel],
) -> None:
    client, _ = api
    whole = client.get(URLS[0])
    etag, modified = whole.headers["etag"], whole.headers["last-modified"]
    assert modified == "Tue, 01 Dec 2026 08:30:00 GMT"  # the version's publication, not the file's time
    for if_range in (etag, modified):
        r = client.get(URLS[0], headers={"Range": "bytes=10-19", "If-Range": if_range})
        assert r.status_code == 206 and r.content == whole.content[10:20]
    for if_range in ('"some-other-version"', "W/" + etag, "Mon, 30 Nov 2026 08:30:00 GMT"):
        r = client.get(URLS[0], headers={"Range": "bytes=10-19", "If-Range": if_range})
        assert r.status_code == 200 and r.content == whole.content, if_range


def test_several_ranges_answer_multipart_byteranges(api: tuple[TestClient, SnapshotReadModel]) -> None:
    client, _ = api
    whole = client.get(URLS[1]).content
    r = client.get(URLS[1], headers={"Range": "bytes=0-9,100-109"})
    assert r.status_code == 206
    media, _, boundary = r.headers["content-type"].partition("; boundary=")
    assert media == "multipart/byteranges"
    parts = [p for p in r.content.split(b"--" + boundary.encode()) if p.strip(b"-\r\n")]
    assert len(parts) == 2
    for part, (first, last) in zip(parts, [(0, 9), (100, 109)], strict=True):
        head, _, body = part.partition(b"\r\n\r\n")
        assert f"Content-Range: bytes {first}-{last}/{len(whole)}".lower() in head.decode().lower()
        assert body.rstrip(b"\r\n") == whole[first : last + 1].rstrip(b"\r\n")


@pytest.mark.parametrize("suffix", ["csvt", "prj"])
def test_the_csv_sidecar_files_answer_ranges_too(api: tuple[TestClient, SnapshotReadModel], suffix: str) -> None:
    client, read_model = api
    url = f"/datasets/{DATASET}/versions/1/features.{suffix}"
    whole = client.get(url)
    assert whole.status_code == 200 and whole.headers["etag"] and whole.headers["accept-ranges"] == "bytes"
    r = client.get(url, headers={"Range": "bytes=2-5", "If-Range": whole.headers["etag"]})
    assert r.status_code == 206 and r.content == whole.content[2:6]
    assert r.headers["content-range"] == f"bytes 2-5/{len(whole.content)}"
    assert client.get(url, headers={"If-None-Match": whole.headers["etag"]}).status_code == 304
    assert read_model.reads == (1 if suffix == "csvt" else 0)


def test_the_csvt_has_the_widest_value_of_the_version_in_utf8_bytes(api: tuple[TestClient, SnapshotReadModel]) -> None:
    client, read_model = api
    header = client.get(URLS[1]).text.split("\r\n")[0].split(",")
    types = dict(
        zip(header, client.get(f"/datasets/{DATASET}/versions/1/features.csvt").text.strip().split(","), strict=True)
    )
    widest = max(len(json.loads(f.attributes_json)["adresse"].encode("utf-8")) for f in read_model.features)
    assert (types["gid"], types["adresse"], types["codinsee"], types["WKT"]) == (
        "Integer64",
        f"String({widest})",
        "String(5)",
        "WKT",
    )


def test_head_and_304_are_unchanged_and_a_head_is_served_from_the_file(
    api: tuple[TestClient, SnapshotReadModel],
) -> None:
    client, read_model = api
    head = client.head(URLS[0])
    assert head.status_code == 200 and head.content == b"" and head.headers["accept-ranges"] == "bytes"
    whole = client.get(URLS[0])
    assert int(head.headers["content-length"]) == len(whole.content)
    assert client.get(URLS[0], headers={"If-None-Match": whole.headers["etag"]}).status_code == 304
    assert read_model.reads == 1


def test_the_export_files_stay_within_their_bound_least_recently_used_first(tmp_path: Path) -> None:
    files = LocalExportFiles(tmp_path, max_bytes=2500, keep_seconds=0)

    def produce(n: int) -> AsyncIterator[bytes]:
        async def chunks() -> AsyncIterator[bytes]:
            for _ in range(n):
                yield b"x" * 100

        return chunks()

    async def scenario() -> None:
        a = await files.file("a", lambda: produce(10))
        b = await files.file("b", lambda: produce(10))
        past = time.time() - 60
        os.utime(a, (past, past))
        os.utime(b, (past - 60, past - 60))
        assert await files.file("a", lambda: produce(99)) == a  # kept: not produced again (size unchanged)
        assert a.stat().st_size == 1000
        await files.file("c", lambda: produce(10))  # 3000 bytes > 2500: b, used least recently, goes

    asyncio.run(scenario())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "c"]


def test_a_failed_export_leaves_no_file(tmp_path: Path) -> None:
    files = LocalExportFiles(tmp_path)

    async def failing() -> AsyncIterator[bytes]:
        yield b"half"
        raise ConnectionError("database gone")

    with pytest.raises(ConnectionError):
        asyncio.run(files.file("broken", failing))
    assert list(tmp_path.iterdir()) == []
