"""Issue #15: a QGIS user adding our OGC API - Features as a layer. A headless QGIS (Debian's python3-qgis, with
its "OAPIF" provider; installed like GDAL, by deploy/local/qgis.py) loads a collection of the real stack, reads its
features with their attributes and applies a layer filter."""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from deploy.local.qgis import SYSTEM_PYTHON, ensure_qgis_installed
from tests.integration.pipeline_harness import Pipeline, toilet_event

pytestmark = pytest.mark.integration
CLIENT = Path(__file__).with_name("qgis_oapif_client.py")
TOILETS = "public_toilets"


@pytest.fixture(scope="module")
def published(pipeline: Pipeline) -> Iterator[tuple[str, str, list[str]]]:
    """Four toilets with an address of their own (so a filter on it finds exactly them), in a box of their own."""
    tag = f"qgis-{uuid.uuid4().hex[:8]}"
    ids = [str(930_000 + uuid.uuid4().int % 30_000 + i) for i in range(4)]
    before = pipeline.metric("normalise", "odc_events_received_total")
    pipeline.produce_events(
        [
            toilet_event(f, seq=1, lon=4.7551 + i / 1000, lat=45.6551, adresse=f"{tag} {i % 2}")
            for i, f in enumerate(ids)
        ]
    )
    pipeline.settle(TOILETS, before, len(ids))
    yield pipeline.services["publish"].base_url, tag, ids


@pytest.fixture(scope="module")
def qgis_installed() -> None:
    ensure_qgis_installed()


def qgis(url: str, collection: str, subset: str | None = None) -> dict[str, Any]:
    """QGIS (Debian's Python, headless) reading the collection; its own profile and runtime directory (0700)."""
    with tempfile.TemporaryDirectory(prefix="qgis-") as home:
        env = {**os.environ, "QT_QPA_PLATFORM": "offscreen", "XDG_RUNTIME_DIR": home, "HOME": home}
        args = [SYSTEM_PYTHON, str(CLIENT), url, collection, *([subset] if subset is not None else [])]
        done = subprocess.run(args, capture_output=True, text=True, timeout=300, env=env, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    out: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return out


def server_items(api: str) -> dict[str, dict[str, Any]]:
    """Every feature of the collection as the server pages them, by id."""
    items: dict[str, dict[str, Any]] = {}
    url: str | None = f"{api}/ogc/collections/{TOILETS}/items?limit=500"
    while url:
        page = httpx.get(url, timeout=60).json()
        items.update({f["id"]: f for f in page["features"]})
        url = next((link["href"] for link in page["links"] if link["rel"] == "next"), None)
    return items


def as_qgis_reads(value: Any, qgis_type: str | None) -> list[Any]:
    """What QGIS 3.22 may show for a server value. It types a field from the first 10 features of the first page
    (it reads no JSON Schema): a field null in all of them is a String, and a value of another type is then
    text (``true``, ``1``, a list as its text). Which fields that hits depends on what else the collection holds
    (docs/api.md, QGIS)."""
    if qgis_type == "String" and value is not None and not isinstance(value, str):
        return [json.dumps(value), str(value)]
    return [value]


def by_id(out: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {f["attributes"]["id"]: f for f in out["features"]}


def test_qgis_loads_the_collection_with_every_feature_its_attributes_and_types(
    published: tuple[str, str, list[str]], qgis_installed: None
) -> None:
    api, tag, ids = published
    out = qgis(f"{api}/ogc", TOILETS)
    assert out["valid"] and not out["provider_errors"], out
    assert out["qgis"].startswith("3.")
    # the OGC API as QGIS walks it: landing page, API definition (for limit's maximum), collection, items
    assert out["requests"][:3] == [f"{api}/ogc", f"{api}/ogc/api", f"{api}/ogc/collections/{TOILETS}"], out["requests"]
    assert all(u.startswith(f"{api}/ogc/collections/{TOILETS}/items?") for u in out["requests"][3:])
    # every feature the server has, no more, with the server's attributes and positions
    server = server_items(api)
    assert out["feature_count"] == len(server) == len(out["features"])
    seen = by_id(out)
    assert set(seen) == set(server)
    for fid, f in server.items():
        got = {k: v for k, v in seen[fid]["attributes"].items() if k != "id"}
        # a QGIS layer has one set of fields, from its 10-feature sample: a member another feature has is a null
        # field here, and an optional member of the service (`odc:…`) no sampled feature had is not in the layer
        assert all(got[k] is None for k in set(got) - set(f["properties"])), fid
        missing = set(f["properties"]) - set(got)
        assert all(k.startswith("odc:") for k in missing), (fid, missing)
        for k, v in f["properties"].items():
            if k in missing:
                continue
            assert got[k] in as_qgis_reads(v, out["fields"].get(k)), (fid, k, got[k], v)
        kind, _, xy = seen[fid]["wkt"].partition(" (")
        assert kind == "Point"
        assert [float(c) for c in xy.rstrip(")").split()] == pytest.approx(f["geometry"]["coordinates"], abs=1e-7)
    ours = [seen[f"69266.{i}"] for i in ids]
    assert [f["attributes"]["adresse"] for f in ours] == [f"{tag} {i % 2}" for i in range(4)]
    assert out["fields"]["gid"] == "Integer" and out["fields"]["adresse"] == "String"


def test_a_qgis_layer_filter_selects_exactly_the_matching_features(
    published: tuple[str, str, list[str]], qgis_installed: None
) -> None:
    """QGIS 3.22 evaluates a layer filter itself over the features it pages in (its OGC API provider sends no
    filter to the server before QGIS 3.28/3.32: see docs/api.md, QGIS); the answer is still exactly right."""
    api, tag, ids = published
    out = qgis(f"{api}/ogc", TOILETS, f'"adresse" = \'{tag} 1\' AND "gid" > 0')
    assert out["valid"] and out["subset_accepted"], out
    assert sorted(by_id(out)) == sorted(f"69266.{ids[i]}" for i in (1, 3))
