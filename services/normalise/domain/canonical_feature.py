"""A change event turned into a canonical feature candidate, or a rejection. Pure."""

from __future__ import annotations

import hashlib
import json
import re
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from functools import cached_property
from typing import cast

import numpy as np
import shapely
from shapely.geometry import Point
from shapely.geometry.base import BaseGeometry

from services.contract.conformance_levels import CONFORMANCE, DROPPED, INCOMPLETE, MISSING, level_of
from services.contract.datasets.catalogue import DatasetCatalogue, DatasetDefinition, GeometrySpec
from services.contract.datasets.field_names import NameMapping, stated_commune
from services.contract.messages import ChangeEvent, FieldError, GeometryEncoding, Operation, RawGeometry
from services.normalise.domain.attribute_columns import ColumnarSchema
from services.normalise.domain.attribute_validation import AttributeResult, Canonical, CompiledSchema
from services.normalise.domain.commune_boundary import CommuneBoundaries
from services.normalise.domain.conformance import judge_conformance
from services.normalise.domain.geometry_normalisation import (
    GeometryRejected,
    NormalisedGeometry,
    normalise_geometries,
    normalise_geometry,
)

_INSEE = re.compile(r"^(\d{5}|2[AB]\d{3})$")
MAX_ID_LEN = 200


@dataclass(frozen=True)
class FeatureKey:
    dataset: str
    commune: str
    feature_id: str


@dataclass(frozen=True)
class CanonicalFeature:
    """What the store holds for a live feature (geometry in WGS84)."""

    attributes: dict[str, Canonical]
    geometry: BaseGeometry | None
    content_hash: str
    corrections: tuple[str, ...] = ()

    @classmethod
    def build(
        cls, attributes: dict[str, Canonical], geometry: BaseGeometry | None, corrections: tuple[str, ...] = ()
    ) -> CanonicalFeature:
        """A new feature with its content hash, computed from the same JSON and WKB the store will write."""
        text = canonical_json(attributes)
        wkb = None if geometry is None else wkb_2d(geometry)
        feature = cls(attributes, geometry, _hash_of(text, wkb), corrections)
        feature.__dict__.update(_attributes_json=text, wkb=wkb)  # seed the cached properties below
        return feature

    # Each representation is computed once per feature: the hash, the store and the outbox all need them.
    @cached_property
    def _geojson(self) -> str | None:
        return None if self.geometry is None else shapely.to_geojson(self.geometry)

    @cached_property
    def _attributes_json(self) -> str:
        return canonical_json(self.attributes)

    @cached_property
    def wkb(self) -> bytes | None:
        """2D little-endian WKB without SRID (what the store loads and the content hash covers)."""
        return None if self.geometry is None else wkb_2d(self.geometry)

    def geometry_geojson(self) -> str | None:
        return self._geojson

    def attributes_json(self) -> str:
        return self._attributes_json


@dataclass(frozen=True)
class Candidate:
    """A valid event, ready for the dedup decision."""

    event: ChangeEvent
    key: FeatureKey
    feature: CanonicalFeature | None  # None for a delete
    warnings: tuple[FieldError, ...] = ()  # values left out of the record (docs/validation.md), for the sender

    @property
    def level(self) -> str:
        """``conforming`` or ``incomplete`` (a delete is ``conforming``): see conformance.py."""
        return level_of(self.feature.attributes if self.feature is not None else {})


@dataclass(frozen=True)
class Invalid:
    event: ChangeEvent
    reason: str
    message: str
    errors: tuple[FieldError, ...]


# json.dumps with these settings builds a new encoder on every call; one built once writes the same text
_CANONICAL = json.JSONEncoder(sort_keys=True, ensure_ascii=False, separators=(",", ":"))


def seed_geojson(features: Iterable[CanonicalFeature | None]) -> None:
    """Compute the GeoJSON of many features in one GEOS call (``shapely.to_geojson`` over an array: the same
    writer, the same text as one at a time, ~4x cheaper per point), for those that have not computed it yet."""
    todo = [f for f in features if f is not None and f.geometry is not None and "_geojson" not in f.__dict__]
    if todo:
        texts = shapely.to_geojson(np.array([f.geometry for f in todo], dtype=object))
        for f, text in zip(todo, texts.tolist(), strict=True):
            f.__dict__["_geojson"] = text


def canonical_json(values: dict[str, Canonical]) -> str:
    """``json.dumps(values, sort_keys=True, ensure_ascii=False, separators=(",", ":"))``, byte for byte."""
    return _CANONICAL.encode(values)


_POINT_WKB = struct.Struct("<BIdd")


def wkb_2d(geometry: BaseGeometry) -> bytes:
    """shapely.to_wkb(output_dimension=2, byte_order=1, include_srid=False), packed directly for points (the
    common case: ~20x cheaper). tests/unit/test_geometry_normalisation.py checks both give the same bytes."""
    if isinstance(geometry, Point) and not geometry.is_empty:
        return _POINT_WKB.pack(1, 1, geometry.x, geometry.y)
    return shapely.to_wkb(geometry, hex=False, output_dimension=2, byte_order=1, include_srid=False)  # type: ignore[no-any-return]


def content_hash(attributes: dict[str, Canonical], geometry: BaseGeometry | None) -> str:
    return _hash_of(canonical_json(attributes), None if geometry is None else wkb_2d(geometry))


def _hash_of(attributes_json: str, wkb: bytes | None) -> str:
    h = hashlib.sha256(attributes_json.encode("utf-8"))
    h.update(b"\x00")
    if wkb is not None:
        h.update(wkb)
    return h.hexdigest()


# A NUL anywhere in a JSON document (key or value) is written \u0000 by json.dumps, after an even number of
# backslashes (an odd number means the backslash itself was escaped: the text "\u0000", not a NUL).
# The source columns a source profile maps to no field, as JSON text (services/ingest/domain/source_profiles.py)
EXTRA = "odc:extra"
_JSON_NUL = re.compile(r"(?<!\\)(?:\\\\)*\\u0000")


def has_json_nul(text: str) -> bool:
    """A NUL written inside the JSON document ``text``. The regex (a look-behind tried at every position: ~10 µs
    on a toilet's record) runs only when the text holds ``\\u0000`` at all, which every match does: same answer,
    tests/unit/test_prepare_batch_equivalence.py."""
    return "\\u0000" in text and _JSON_NUL.search(text) is not None


# Control characters no store or consumer should receive in an identifier (PostgreSQL refuses NUL outright).
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def printable(text: str) -> str:
    """For messages and reports: control characters shown as U+FFFD, so a hostile value can be quoted."""
    return _CONTROL.sub("\ufffd", text)


def _envelope_errors(ev: ChangeEvent, now: datetime, example: str = "69123") -> list[FieldError]:
    """``example``: a commune code of the territory, shown in the message on a malformed commune."""
    errs: list[FieldError] = []
    if not ev.event_id or len(ev.event_id) > MAX_ID_LEN or _CONTROL.search(ev.event_id):
        errs.append(
            FieldError(
                "event_id",
                f"event_id: must be 1 to {MAX_ID_LEN} characters without control characters (a UUID is expected)",
                f"event_id : 1 à {MAX_ID_LEN} caractères sans caractère de contrôle (un UUID est attendu)",
                "event_id",
                printable(ev.event_id[:50]),
            )
        )
    for name in ("feature_id", "source"):
        value = getattr(ev, name)
        if _CONTROL.search(value):
            errs.append(
                FieldError(
                    "control_character",
                    f"{name}: contains a control character (NUL, tab, line break...)",
                    f"{name} : contient un caractère de contrôle (NUL, tabulation, saut de ligne...)",
                    name,
                    printable(value[:50]),
                )
            )
    if not _INSEE.match(ev.commune):
        errs.append(
            FieldError(
                "insee",
                f"commune: not an INSEE code (5 characters, e.g. {example})",
                f"commune : ce n'est pas un code INSEE (5 caractères, par exemple {example})",
                "commune",
                printable(ev.commune[:50]),
            )
        )
    if not ev.feature_id.strip() or len(ev.feature_id) > MAX_ID_LEN:
        errs.append(
            FieldError(
                "feature_id",
                f"feature_id: must be 1 to {MAX_ID_LEN} characters",
                f"feature_id : doit compter de 1 à {MAX_ID_LEN} caractères",
                "feature_id",
                printable(ev.feature_id[:50]),
            )
        )
    if (ev.occurred_at - now).total_seconds() > 86_400:
        errs.append(
            FieldError(
                "future_time",
                "occurred_at: more than one day in the future",
                "occurred_at : plus d'un jour dans le futur",
                "occurred_at",
                ev.occurred_at.isoformat(),
            )
        )
    if ev.sequence < 0:
        errs.append(
            FieldError(
                "minimum",
                "sequence: must not be negative",
                "sequence : ne doit pas être négatif",
                "sequence",
                str(ev.sequence),
            )
        )
    return errs


def _coordinate_text(value: object) -> str:
    return str(value).strip().replace(",", ".")


def carrier_geometry(spec: GeometrySpec, values: dict[str, object], missing: frozenset[str]) -> RawGeometry | None:
    """The position a record carries in its attributes, the way its schema carries it."""

    def present(v: object) -> bool:
        return v is not None and not (isinstance(v, str) and v.strip() in missing)

    if spec.carrier == "xy" and spec.x_field and spec.y_field:
        x, y = values.get(spec.x_field), values.get(spec.y_field)
        if present(x) and present(y):
            return RawGeometry(
                GeometryEncoding.WKT, f"POINT ({_coordinate_text(x)} {_coordinate_text(y)})".encode(), None
            )
    elif spec.carrier == "geopoint" and spec.field:
        v = values.get(spec.field)
        if present(v):
            parts = str(v).strip().strip("[]").split(",")
            if len(parts) == 2:
                return RawGeometry(
                    GeometryEncoding.WKT, f"POINT ({_coordinate_text(parts[0])} {_coordinate_text(parts[1])})".encode()
                )
            return RawGeometry(GeometryEncoding.WKT, str(v).encode())  # unreadable: the parser says why
    elif spec.carrier == "wkt" and spec.field:
        v = values.get(spec.field)
        if present(v):
            return RawGeometry(GeometryEncoding.WKT, str(v).strip().encode())
    return None


def write_carrier(spec: GeometrySpec, values: dict[str, object], geometry: BaseGeometry) -> None:
    """Put the corrected WGS84 position back into the columns the schema carries it in, so the canonical
    record says the same thing in its attributes as in its geometry (after an axis swap or a reprojection)."""
    if spec.carrier in ("xy", "geopoint") and geometry.geom_type == "Point":
        lon, lat = round(geometry.x, 7), round(geometry.y, 7)
        if spec.carrier == "xy" and spec.x_field and spec.y_field:
            values[spec.x_field], values[spec.y_field] = lon, lat
        elif spec.field:
            values[spec.field] = f"{lon}, {lat}"
    elif spec.carrier == "wkt" and spec.field:
        values[spec.field] = shapely.to_wkt(geometry, rounding_precision=7)


def _insee_text(value: object) -> str:
    """A commune code as a file writes it; codes stored as numbers lost their leading zero (1053 -> 01053)."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    text = str(value).strip()
    return text.zfill(5) if text.isdigit() and len(text) < 5 else text


def _area_named(e: FieldError, area_name: tuple[str, str]) -> FieldError:
    """ "outside the dataset's area" says which area (the definition's ``area_name``: en, and fr after "hors")."""
    if e.rule != "out_of_area":
        return e
    en, fr = area_name
    at = e.value or "?"
    return replace(
        e,
        message_en=f"geometry: the position ({at}, longitude, latitude) is outside {en}, the area of this dataset",
        message_fr=f"géométrie : la position ({at}, longitude, latitude) est hors {fr}, la zone de ce jeu de données",
    )


def _with_columns(
    errors: list[FieldError] | tuple[FieldError, ...], sent_as: dict[str, str], ev: ChangeEvent, spec: GeometrySpec
) -> tuple[FieldError, ...]:
    """Each problem with the column of the sender's file it came from (as the file named it), so the clerk
    finds it; a field the record lacks has none."""
    geometry_columns = [c for c in (spec.x_field, spec.y_field, spec.field) if c]

    def column(e: FieldError) -> str | None:
        if e.column is not None or e.field is None:
            return e.column
        if e.field == "geometry":
            sent = [sent_as.get(c, c) for c in geometry_columns if sent_as.get(c, c) in ev.attributes]
            return ", ".join(sent) if sent else None
        name = sent_as.get(e.field, e.field)
        return printable(name) if name in ev.attributes else None

    return tuple(replace(e, column=column(e)) for e in errors)


def _commune_mismatch(column: str, stated: str, sent_for: str) -> FieldError:
    return FieldError(
        "commune_mismatch",
        f"{column}: the record names commune {stated} but was sent for commune {sent_for}; send it for commune "
        f"{stated} (a file of several communes is sent with an admin key and no --commune: each record then "
        "goes under its own commune)",
        f"{column} : l'enregistrement indique la commune {stated} mais a été envoyé pour la commune {sent_for} ; "
        f"envoyez-le pour la commune {stated} (un fichier de plusieurs communes s'envoie avec une clé "
        "administrateur et sans --commune : chaque enregistrement va alors à sa propre commune)",
        column,
        stated,
    )


@dataclass
class _Pending:
    """An upsert part-way: checked up to its attributes, which are validated next (per record or per batch)."""

    ev: ChangeEvent
    definition: DatasetDefinition
    key: FeatureKey
    envelope: list[FieldError]
    schema: CompiledSchema
    named: NameMapping
    values: dict[str, object]
    corrections: list[str]
    errors: list[FieldError]
    geometry: BaseGeometry | None
    raw_geometry: RawGeometry | None


class EventNormaliser:
    """Compiles every dataset's schema once, then turns events into candidates or rejections."""

    def __init__(self, catalogue: DatasetCatalogue) -> None:
        self.catalogue = catalogue
        self._schemas = {
            d.id: CompiledSchema(d.table_schema, d.aliases, pattern_words=d.pattern_words) for d in catalogue
        }
        self._columns = {d.id: ColumnarSchema(self._schemas[d.id]) for d in catalogue}
        self._boundaries = CommuneBoundaries(catalogue.commune_boundaries)
        # a problem in these fields refuses the record (conformance.py): identity and commune. A national
        # primary key that is not the stream's identity (delivery_areas: UUID, identity ID) is a required field
        # like the others: without a valid value the record is incomplete, and the national CSV leaves it out
        self._protected = {
            d.id: frozenset((*d.identity_fields, *([d.commune_field] if d.commune_field else []))) for d in catalogue
        }

    def normalise(self, ev: ChangeEvent, now: datetime) -> Candidate | Invalid:
        step = self._before_attributes(ev, now)
        if not isinstance(step, _Pending):
            return step
        self._place(step, self._normalise_geometry(step))
        return self._after_attributes(
            step, step.schema.validate_mapped(step.values, step.named.ignored, step.named.renamed)
        )

    def normalise_batch(self, events: Sequence[ChangeEvent], now: datetime) -> list[Candidate | Invalid]:
        """``[normalise(ev, now) for ev in events]``, with each dataset's attributes validated over the batch
        as columns (attribute_columns.py); a Hypothesis test holds the two to the same results."""
        steps = [self._before_attributes(ev, now) for ev in events]
        by_dataset: dict[str, list[int]] = {}
        for i, step in enumerate(steps):
            if isinstance(step, _Pending):
                by_dataset.setdefault(step.ev.dataset, []).append(i)
        done: dict[int, Candidate | Invalid] = {}
        for dataset, positions in by_dataset.items():
            pending = [cast(_Pending, steps[i]) for i in positions]  # grouped per dataset: one schema each
            definition = pending[0].definition
            spec = definition.geometry
            with_geometry = [p for p in pending if p.raw_geometry is not None]
            outcomes = (
                normalise_geometries(
                    [cast(RawGeometry, p.raw_geometry) for p in with_geometry],
                    spec.type,
                    definition.boxes,
                    out_of_area=spec.out_of_area,
                    placeholder=spec.placeholder,
                    area_name=definition.area_name,
                )
                if with_geometry and spec.type != "None"
                else []
            )
            placed = dict(zip(map(id, with_geometry), outcomes, strict=True))
            for p in pending:
                self._place(p, placed.get(id(p)))
            results = self._columns[dataset].validate_rows(
                [p.values for p in pending], [p.named.ignored for p in pending], [p.named.renamed for p in pending]
            )
            for i, p, result in zip(positions, pending, results, strict=True):
                done[i] = self._after_attributes(p, result)
        return [step if not isinstance(step, _Pending) else done[i] for i, step in enumerate(steps)]

    def _before_attributes(self, ev: ChangeEvent, now: datetime) -> Candidate | Invalid | _Pending:
        """Everything before the attribute check: envelope, names, commune fill, geometry."""
        definition = self.catalogue.get(ev.dataset)
        if definition is None:
            return Invalid(
                ev,
                "unknown_dataset",
                f"unknown dataset {printable(ev.dataset[:100])!r}",
                (
                    FieldError(
                        "unknown_dataset",
                        f"dataset {printable(ev.dataset[:100])!r} is not in the catalogue",
                        f"le jeu de données {printable(ev.dataset[:100])!r} n'est pas au catalogue",
                        "dataset",
                        printable(ev.dataset[:100]),
                    ),
                ),
            )
        envelope = _envelope_errors(ev, now, self.catalogue.territory.example)
        if envelope and ev.operation is Operation.DELETE:
            return Invalid(ev, "invalid_envelope", "; ".join(e.message_en for e in envelope), tuple(envelope))
        key = FeatureKey(ev.dataset, ev.commune, ev.feature_id)
        if ev.operation is Operation.DELETE:
            return Candidate(ev, key, None)
        identity = ", ".join(definition.identity_fields)
        envelope = [
            replace(
                e,
                message_en=f"feature_id: no usable value in the identity field {identity} (1 to {MAX_ID_LEN} characters)",
                message_fr=f"feature_id : pas de valeur utilisable dans le champ identifiant {identity} (1 à {MAX_ID_LEN} caractères)",
            )
            if e.rule == "feature_id"
            else e
            for e in envelope
        ]

        schema = self._schemas[ev.dataset]
        named = schema.matcher.map(ev.attributes)
        values: dict[str, object] = dict(named.values)
        corrections: list[str] = [f"renamed:{printable(a)}->{b}" for a, b in named.renamed]
        commune_field = definition.commune_field
        if commune_field and schema.is_missing(values.get(commune_field)):
            values[commune_field] = ev.commune  # the sender said which commune the record belongs to
            corrections.append(f"filled:{commune_field}=commune")

        spec = definition.geometry
        raw_geometry = (ev.geometry or carrier_geometry(spec, values, schema.missing)) if spec.type != "None" else None
        return _Pending(ev, definition, key, envelope, schema, named, values, corrections, [], None, raw_geometry)

    def _normalise_geometry(self, p: _Pending) -> NormalisedGeometry | GeometryRejected | None:
        spec, definition = p.definition.geometry, p.definition
        if p.raw_geometry is None:
            return None
        try:
            return normalise_geometry(
                p.raw_geometry,
                spec.type,
                definition.boxes,
                out_of_area=spec.out_of_area,
                placeholder=spec.placeholder,
                area_name=definition.area_name,
            )
        except GeometryRejected as bad:
            return bad

    def _place(self, p: _Pending, ng: NormalisedGeometry | GeometryRejected | None) -> None:
        """The geometry's outcome on the record: its position, corrections and problems."""
        ev, definition, values, corrections, errors = p.ev, p.definition, p.values, p.corrections, p.errors
        spec = definition.geometry
        if spec.type == "None":
            return
        if ng is None:
            if not spec.nullable:
                errors.append(
                    FieldError(
                        "geometry_required", "a geometry is required", "une géométrie est obligatoire", "geometry"
                    )
                )
        elif isinstance(ng, GeometryRejected):
            errors.extend(
                _area_named(
                    FieldError(b.rule, f"geometry: {b.en}", f"géométrie : {b.fr}", "geometry", b.value),
                    definition.area_name,
                )
                for b in (ng, *ng.also)
            )
        else:
            p.geometry = geometry = ng.geometry
            corrections.extend(ng.corrections)
            write_carrier(spec, values, geometry)
            verdict = self._boundaries.judge(ev.commune, geometry, spec)
            corrections.extend(verdict.flags)
            errors.extend(verdict.errors)

    def _after_attributes(self, p: _Pending, result: AttributeResult) -> Candidate | Invalid:
        """The record's verdict once its attributes are validated (``result``)."""
        ev, definition, key, envelope, schema, named = p.ev, p.definition, p.key, p.envelope, p.schema, p.named
        corrections, errors, geometry = p.corrections, p.errors, p.geometry
        commune_field = definition.commune_field
        spec = definition.geometry
        errors[:0] = [*envelope, *result.errors]  # everything wrong with the record, reported at once
        if commune_field and result.values.get(commune_field) not in (None, ev.commune):
            errors.append(_commune_mismatch(commune_field, str(result.values[commune_field]), ev.commune))
        elif "filled:" + str(commune_field) + "=commune" in corrections or not commune_field:
            # the schema's commune field is absent: a commune-like column of the file may still name another
            # commune (a département's file sent with --commune): refuse it rather than relabel it
            found = stated_commune({k: ev.attributes[k] for k in named.ignored if k in ev.attributes})
            if found is not None and _insee_text(found[1]) != ev.commune:
                errors.append(_commune_mismatch(printable(found[0]), printable(_insee_text(found[1])[:20]), ev.commune))
        kept: dict[str, Canonical] = dict(result.values)
        if isinstance(ev.attributes.get(EXTRA), str):
            # the source columns no field takes (a source profile's odc:extra): kept with the record, published
            # in the Métropole's own outputs, never in the national-layout CSV (schema columns only)
            kept[EXTRA] = ev.attributes[EXTRA]
        feature = CanonicalFeature.build(kept, geometry, tuple(corrections))
        if has_json_nul(feature.attributes_json()):
            # a NUL inside a JSON value (array, object, any): no store accepts it
            errors.append(
                FieldError(
                    "control_character",
                    "a value contains a NUL character",
                    "une valeur contient un caractère NUL",
                )
            )
        conformance = judge_conformance(
            result.errors,
            [e for e in errors if e not in result.errors],
            protected=self._protected[ev.dataset],
            required=schema.required_fields,
        )
        sent_as = {field: sent for sent, field in named.renamed}
        if conformance.refused:
            geometric = all(e.field == "geometry" for e in conformance.refusing)
            reason = "invalid_envelope" if envelope else "invalid_geometry" if geometric else "invalid_attributes"
            return Invalid(
                ev, reason, "; ".join(e.message_en for e in errors[:5]), _with_columns(errors, sent_as, ev, spec)
            )
        if conformance.missing or conformance.dropped:
            published: dict[str, Canonical] = dict(kept)
            for name in conformance.dropped:
                published[name] = None  # a value that breaks its field's rule is never published as it was sent
            if conformance.missing:
                published[CONFORMANCE] = INCOMPLETE
                published[MISSING] = cast(str, list(conformance.missing))  # a JSON array, like odc:provenance
            if conformance.dropped:
                published[DROPPED] = cast(str, list(conformance.dropped))
            corrections.extend(f"dropped:{e.field}:{e.rule}" for e in conformance.warnings if e.rule != "required")
            feature = CanonicalFeature.build(published, geometry, tuple(corrections))
        return Candidate(ev, key, feature, _with_columns(conformance.warnings, sent_as, ev, spec))
