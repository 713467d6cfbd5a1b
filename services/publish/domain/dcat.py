"""DCAT (W3C Data Catalog Vocabulary, version 3) metadata as JSON-LD, for the national portal's harvester:
a catalogue of the datasets, each with its distributions (GeoJSON, CSV, OGC API – Features) and its
numbered versions (``dcat:hasVersion``, each a ``dcat:Dataset`` with its own GeoJSON download)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from services.contract.datasets.catalogue import DatasetDefinition

CONTEXT = {
    "dcat": "http://www.w3.org/ns/dcat#",
    "dct": "http://purl.org/dc/terms/",
    "foaf": "http://xmlns.com/foaf/0.1/",
    "xsd": "http://www.w3.org/2001/XMLSchema#",
    "adms": "http://www.w3.org/ns/adms#",
    "dct:issued": {"@type": "xsd:dateTime"},
    "dct:modified": {"@type": "xsd:dateTime"},
    "dcat:accessURL": {"@type": "@id"},
    "dcat:downloadURL": {"@type": "@id"},
    "dct:license": {"@type": "@id"},
}
LICENSE = "https://www.etalab.gouv.fr/licence-ouverte-open-licence/"
DEFAULT_TERRITORY_NAME = "Métropole de Lyon"


def publisher(territory_name: str = DEFAULT_TERRITORY_NAME) -> dict[str, str]:
    """The publisher: the deployment's territory (ODC_TERRITORY)."""
    return {"@type": "foaf:Organization", "foaf:name": f"{territory_name} — OpenData des communes"}


@dataclass(frozen=True)
class VersionSummary:
    version: int
    published_at: datetime
    feature_count: int
    added: int
    updated: int
    removed: int
    content_hash: str
    incomplete: int = 0  # features marked incomplete (left out of the national-layout CSV)


def national_schema_json(ns: Any) -> dict[str, Any] | None:
    """The dataset definition's national schema reference as plain JSON (a dataclass or a mapping)."""
    if ns is None:
        return None
    if dataclasses.is_dataclass(ns) and not isinstance(ns, type):
        return dataclasses.asdict(ns)
    return dict(ns)


def _iso(t: datetime) -> str:
    return t.isoformat().replace("+00:00", "Z")


def _distribution(id_: str, title: str, url: str, media_type: str, download: bool) -> dict[str, Any]:
    d: dict[str, Any] = {
        "@id": id_,
        "@type": "dcat:Distribution",
        "dct:title": title,
        "dcat:accessURL": url,
        "dcat:mediaType": media_type,
        "dct:license": LICENSE,
    }
    if download:
        d["dcat:downloadURL"] = url
    return d


def dataset_node(
    base: str,
    d: DatasetDefinition,
    versions: list[VersionSummary],
    total_versions: int,
    territory_name: str = DEFAULT_TERRITORY_NAME,
) -> dict[str, Any]:
    """One dataset; ``versions`` newest first (possibly only the latest ones), ``total_versions`` all."""
    url = f"{base}/datasets/{d.id}"
    latest = versions[0] if versions else None
    node: dict[str, Any] = {
        "@id": url,
        "@type": "dcat:Dataset",
        "dct:identifier": d.id,
        "dct:title": [{"@value": d.title_fr, "@language": "fr"}, {"@value": d.title_en, "@language": "en"}],
        "dct:description": d.schema_note or d.title_fr,
        "dct:publisher": publisher(territory_name),
        "dct:license": LICENSE,
        "dcat:landingPage": {"@id": url},
        "dcat:distribution": [
            _distribution(f"{url}#geojson", "GeoJSON", f"{url}/features.geojson", "application/geo+json", True),
            _distribution(f"{url}#csv", "CSV", f"{url}/features.csv", "text/csv", True),
            _distribution(
                f"{url}#ogcapi", "OGC API – Features", f"{base}/ogc/collections/{d.id}", "application/geo+json", False
            ),
        ],
        "adms:versionNotes": f"{total_versions} numbered versions; each lists the features added, updated and removed.",
    }
    schema = national_schema_json(d.national_schema)
    if schema and schema.get("name"):
        node["dct:conformsTo"] = {
            "@type": "dct:Standard",
            "dct:title": str(schema["name"]),
            "dcat:version": str(schema.get("version", "")),
        }
    if latest is not None:
        node["dct:modified"] = _iso(latest.published_at)
        node["dcat:version"] = str(latest.version)
        node["dcat:hasCurrentVersion"] = {"@id": f"{url}/versions/{latest.version}"}
    node["dcat:hasVersion"] = [
        {
            "@id": f"{url}/versions/{v.version}",
            "@type": "dcat:Dataset",
            "dct:identifier": f"{d.id}:v{v.version}",
            "dcat:version": str(v.version),
            "dct:issued": _iso(v.published_at),
            "adms:versionNotes": f"+{v.added} ~{v.updated} -{v.removed}; {v.feature_count} features",
            "dcat:distribution": [
                _distribution(
                    f"{url}/versions/{v.version}#geojson",
                    f"GeoJSON, version {v.version}",
                    f"{url}/versions/{v.version}/features.geojson",
                    "application/geo+json",
                    True,
                )
            ],
        }
        for v in versions
    ]
    return node


def dataset_document(
    base: str, d: DatasetDefinition, versions: list[VersionSummary], total_versions: int
) -> dict[str, Any]:
    return {"@context": CONTEXT, **dataset_node(base, d, versions, total_versions)}


def catalogue_document(
    base: str,
    datasets: list[dict[str, Any]],
    modified: datetime | None,
    territory_name: str = DEFAULT_TERRITORY_NAME,
) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "@context": CONTEXT,
        "@id": f"{base}/catalog",
        "@type": "dcat:Catalog",
        "dct:title": [
            {"@value": f"OpenData des communes — {territory_name}", "@language": "fr"},
            {"@value": f"Communes' open data — {territory_name}", "@language": "en"},
        ],
        "dct:publisher": publisher(territory_name),
        "dcat:dataset": datasets,
    }
    if modified is not None:
        doc["dct:modified"] = _iso(modified)
    return doc
