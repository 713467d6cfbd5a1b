"""Linked canonical features on PostGIS (the ``SamePlaceStore`` port), on the unit of work's connection.

The nearby search is one statement for the whole batch: the new records' geometries are unnested with their
dataset, commune and distance, each turned once into a box widened by exactly the distance's degrees at the
geometry's latitude (``feature_links.search_margins_deg``), and the GiST index on ``canonical_feature.geom``
returns the live features of other communes whose box meets it, with their values of the attributes the
probe's dataset compares (its ``match_fields`` and ``distinct_fields``): the service layer drops those whose
name differs before anything is locked or loaded. The exact test, in metres, is the pure core's
(``feature_links.find_link``) on the few candidates left. Measured (1,000 new parks against 3,000 stored,
replicated real polygons): ``ST_DWithin`` on geography in the statement cost 11 ms per park, planar
``ST_DWithin`` 5.5 ms (the probe's WKB re-parsed for every row); the box alone, computed once, is far below.
``dataset || ''`` keeps the planner on the spatial index alone: combined with the primary key's index on
dataset it read every row of the dataset per probe. The cost is the candidates the box holds (an index entry
and a heap row each, ~1.5 µs): the margins of the distance at Lyon's latitude instead of one degree taken as
50 km in both directions read 71 rows per park probe instead of 108, 139 µs instead of 183 (``python -m
benchmarks.same_place_search``: 500 probes, 100,000 parks and 200,000 toilets stored). A GiST index on ``(dataset,
geom)`` (btree_gist) read 40 and took 116 µs, but cost 25 µs per inserted row against 9 for the plain one, paid by
every dataset's upserts: not taken (docs/performance.md, "Same-place search"). Features of the probe's own
commune are left out (one commune's records are never linked), so a commune re-sending its own data with new ids
costs little here.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime

import shapely
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from services.normalise.domain.canonical_feature import CanonicalFeature, FeatureKey
from services.normalise.domain.feature_links import Member, search_margins_deg
from services.normalise.service_layer.ports import NearbyProbe

_LOAD_GROUPS = text("""
SELECT p.dataset, p.commune, p.feature_id, p.canonical_commune, p.canonical_feature_id, p.source, p.sequence,
  p.occurred_at, p.removed, ST_AsBinary(p.geom), p.attributes, p.content_hash, p.corrections, p.distance_m,
  p.linked_at FROM feature_provenance p
JOIN (SELECT DISTINCT q.dataset, q.canonical_commune, q.canonical_feature_id FROM feature_provenance q
      JOIN unnest(CAST(:ds AS text[]), CAST(:co AS text[]), CAST(:fi AS text[])) AS k(d, c, f)
      ON q.dataset = k.d AND q.commune = k.c AND q.feature_id = k.f) g
ON p.dataset = g.dataset AND p.canonical_commune = g.canonical_commune
   AND p.canonical_feature_id = g.canonical_feature_id
""")


# A feature written with its folded values (canonical_feature.compared_folded) is compared on them; one without
# (written before that column) has its name folded here. The SQL fold is domain.same_place's (field_names.fold): NFKD, lower case, keep [a-z0-9]; the marks NFKD
# splits off are not ASCII, so keeping [a-z0-9] drops them as Python's fold does. A property test holds the two
# equal on arbitrary text (tests/integration/test_same_place_store_contract.py). A stored value that is not
# text, or folds to nothing, is never ruled out here.
def sql_fold(expression: str) -> str:
    return f"regexp_replace(lower(normalize({expression}, NFKD)), '[^a-z0-9]', '', 'g')"


_STORED_NAME_FOLDED = sql_fold("f.attributes ->> p.n")  # a constant fragment (no value is interpolated)

_NEARBY = text(f"""
WITH k AS MATERIALIZED (
  SELECT i, d, c, ST_MakeEnvelope(x0, y0, x1, y1, 4326) AS box,
    string_to_array(names, ',') AS names, CAST(folded AS jsonb) AS folded
  FROM unnest(CAST(:ds AS text[]), CAST(:co AS text[]), CAST(:x0 AS float8[]), CAST(:y0 AS float8[]),
    CAST(:x1 AS float8[]), CAST(:y1 AS float8[]), CAST(:names AS text[]), CAST(:folded AS text[]))
    WITH ORDINALITY AS u(d, c, x0, y0, x1, y1, names, folded, i))
SELECT k.i, f.dataset, f.commune, f.feature_id, ARRAY(SELECT f.attributes -> n FROM unnest(k.names) n)
FROM k
JOIN canonical_feature f ON f.geom && k.box AND f.dataset || '' = k.d AND f.commune <> k.c AND NOT f.deleted
WHERE NOT EXISTS (
  SELECT 1 FROM jsonb_each_text(k.folded) p(n, v)
  WHERE CASE WHEN f.compared_folded IS NOT NULL THEN f.compared_folded ->> p.n <> p.v
    ELSE jsonb_typeof(f.attributes -> p.n) = 'string' AND {_STORED_NAME_FOLDED} NOT IN ('', p.v) END)
""")

_SAVE = text("""
INSERT INTO feature_provenance AS p (dataset, commune, feature_id, canonical_commune, canonical_feature_id, source,
  sequence, occurred_at, removed, geom, attributes, content_hash, corrections, distance_m, linked_at, updated_at)
VALUES (:dataset, :commune, :feature_id, :canonical_commune, :canonical_feature_id, :source, :sequence,
  :occurred_at, :removed, ST_SetSRID(ST_GeomFromWKB(:wkb), 4326), CAST(:attributes AS jsonb), :content_hash,
  CAST(:corrections AS jsonb), :distance_m, :linked_at, :updated_at)
ON CONFLICT (dataset, commune, feature_id) DO UPDATE SET
  canonical_commune = EXCLUDED.canonical_commune, canonical_feature_id = EXCLUDED.canonical_feature_id,
  source = EXCLUDED.source, sequence = EXCLUDED.sequence, occurred_at = EXCLUDED.occurred_at,
  removed = EXCLUDED.removed, geom = EXCLUDED.geom, attributes = EXCLUDED.attributes,
  content_hash = EXCLUDED.content_hash, corrections = EXCLUDED.corrections, distance_m = EXCLUDED.distance_m,
  linked_at = EXCLUDED.linked_at, updated_at = EXCLUDED.updated_at
""")


_FORGET = text("""
DELETE FROM feature_provenance p USING unnest(CAST(:ds AS text[]), CAST(:co AS text[]), CAST(:fi AS text[])) AS k(d, c, f)
WHERE p.dataset = k.d AND p.canonical_commune = k.c AND p.canonical_feature_id = k.f
""")


def _key_arrays(keys: Sequence[FeatureKey]) -> dict[str, list[str]]:
    return {"ds": [k.dataset for k in keys], "co": [k.commune for k in keys], "fi": [k.feature_id for k in keys]}


class PostgisSamePlaceStore:
    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def load_groups(self, keys: Sequence[FeatureKey]) -> dict[FeatureKey, Member]:
        if not keys:
            return {}
        rows = await self._conn.execute(_LOAD_GROUPS, _key_arrays(keys))
        out: dict[FeatureKey, Member] = {}
        for d, c, f, cc, cf, source, seq, occ, removed, wkb, attrs, chash, corr, dist, linked in rows:
            feature = None
            if not removed:
                geom = shapely.from_wkb(bytes(wkb)) if wkb is not None else None
                feature = CanonicalFeature(attrs or {}, geom, chash, tuple(corr or ()))
            key = FeatureKey(d, c, f)
            out[key] = Member(key, FeatureKey(d, cc, cf), source, seq, occ, removed, feature, dist, linked)
        return out

    async def lock_datasets(self, datasets: Sequence[str]) -> None:
        if datasets:
            await self._conn.execute(
                text(
                    "SELECT pg_advisory_xact_lock(h) FROM (SELECT DISTINCT hashtextextended('same_place/' || d, 0) "
                    "AS h FROM unnest(CAST(:ds AS text[])) AS d ORDER BY 1) s"
                ),
                {"ds": list(datasets)},
            )

    async def find_nearby(self, probes: Sequence[NearbyProbe]) -> list[tuple[int, FeatureKey, dict[str, object]]]:
        if not probes:
            return []
        # each probe's search box: its bounding box (one shapely call for all) widened by the distance's margins
        x0, y0, x1, y1 = [], [], [], []
        for p, (bx0, by0, bx1, by1) in zip(probes, shapely.bounds([p.geometry for p in probes]).tolist(), strict=True):
            dx, dy = search_margins_deg((bx0, by0, bx1, by1), float(p.distance_m))
            x0.append(bx0 - dx)
            y0.append(by0 - dy)
            x1.append(bx1 + dx)
            y1.append(by1 + dy)
        rows = await self._conn.execute(
            _NEARBY,
            {
                "ds": [p.key.dataset for p in probes],
                "co": [p.key.commune for p in probes],
                "x0": x0,
                "y0": y0,
                "x1": x1,
                "y1": y1,
                "names": [",".join(p.compared) for p in probes],
                "folded": [json.dumps(dict(p.folded)) for p in probes],
            },
        )
        out: list[tuple[int, FeatureKey, dict[str, object]]] = []
        for i, d, c, f, values in rows:
            names = probes[i - 1].compared
            out.append(
                (i - 1, FeatureKey(d, c, f), {n: v for n, v in zip(names, values, strict=True) if v is not None})
            )
        return out

    async def pending_groups(self, limit: int) -> list[FeatureKey]:
        rows = await self._conn.execute(
            text(
                "SELECT DISTINCT dataset, canonical_commune, canonical_feature_id FROM feature_provenance "
                "ORDER BY 1, 2, 3 LIMIT :limit"
            ),
            {"limit": limit},
        )
        return [FeatureKey(d, c, f) for d, c, f in rows]

    async def forget_groups(self, canonicals: Sequence[FeatureKey]) -> None:
        if canonicals:
            await self._conn.execute(_FORGET, _key_arrays(canonicals))

    async def save_members(self, members: Sequence[Member], at: datetime) -> None:
        if not members:
            return
        await self._conn.execute(
            _SAVE,
            [
                {
                    "dataset": m.key.dataset,
                    "commune": m.key.commune,
                    "feature_id": m.key.feature_id,
                    "canonical_commune": m.canonical.commune,
                    "canonical_feature_id": m.canonical.feature_id,
                    "source": m.source,
                    "sequence": m.sequence,
                    "occurred_at": m.occurred_at,
                    "removed": m.removed,
                    "wkb": None
                    if m.feature is None or m.feature.geometry is None
                    else shapely.to_wkb(m.feature.geometry, output_dimension=2, include_srid=False),
                    "attributes": None if m.feature is None else m.feature.attributes_json(),
                    "content_hash": None if m.feature is None else m.feature.content_hash,
                    "corrections": json.dumps([] if m.feature is None else list(m.feature.corrections)),
                    "distance_m": m.distance_m,
                    "linked_at": m.linked_at,
                    "updated_at": at,
                }
                for m in members
            ],
        )
