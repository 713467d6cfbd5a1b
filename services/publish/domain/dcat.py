"""DCAT (W3C Data Catalog Vocabulary 3, in the DCAT-AP profile) as an RDF graph, for the national portal's harvester
(data.gouv.fr's udata ``dcat`` backend) and any other: the catalogue of the datasets, paged with Hydra, each dataset
with what that harvester reads, and the OGC API as a ``dcat:DataService``. Serialised as Turtle, RDF/XML or JSON-LD
from the same graph (``serialize``); the format is chosen by ``?format=`` or the Accept header (``negotiate``).

What the harvester reads, per dataset: ``dct:identifier``, ``dct:title``, ``dct:description`` (fr/en),
``dct:conformsTo`` (the IRI of the national schema's version on schema.data.gouv.fr), ``dcat:keyword``,
``dcat:theme`` (EU data themes, labelled), ``dct:spatial`` (the territory, as a WKT and a GeoJSON polygon),
``dcat:contactPoint`` (vCard), ``dct:issued``/``dct:modified``, ``dct:accrualPeriodicity`` (EU frequency IRI), and
distributions with ``dcat:downloadURL``/``dcat:accessURL``, ``dcat:mediaType`` (IANA IRI) and ``dct:format`` (EU
file-type IRI). Paging: the catalogue is a ``hydra:Collection`` whose ``hydra:view`` is typed both
``hydra:PartialCollectionView`` (``hydra:next``...) and the older ``hydra:PagedCollection`` (``hydra:nextPage``...),
the two udata follows.

Pure: plain data in, a graph or bytes out."""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlencode

from rdflib import Graph, Literal, Namespace, URIRef
from rdflib.namespace import DCTERMS, FOAF, RDF, SKOS, XSD

from services.contract.datasets.catalogue import DatasetDefinition
from services.contract.territories import Territory

# DCAT 3 (rdflib's closed DCAT namespace is DCAT 2: no dcat:version, dcat:hasVersion...)
DCAT = Namespace("http://www.w3.org/ns/dcat#")
ADMS = Namespace("http://www.w3.org/ns/adms#")
HYDRA = Namespace("http://www.w3.org/ns/hydra/core#")
LOCN = Namespace("http://www.w3.org/ns/locn#")
VCARD = Namespace("http://www.w3.org/2006/vcard/ns#")
EU_FREQUENCY = Namespace("http://publications.europa.eu/resource/authority/frequency/")
EU_THEME = Namespace("http://publications.europa.eu/resource/authority/data-theme/")
EU_FILE_TYPE = Namespace("http://publications.europa.eu/resource/authority/file-type/")
IANA_MEDIA_TYPES = "https://www.iana.org/assignments/media-types/"
GEOJSON_LITERAL = URIRef(IANA_MEDIA_TYPES + "application/vnd.geo+json")
WKT_LITERAL = URIRef("http://www.opengis.net/ont/geosparql#wktLiteral")
OGC_FEATURES_CORE = URIRef("http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/core")
SCHEMA_DATA_GOUV = "https://schema.data.gouv.fr/schemas"
LICENSE = URIRef("https://www.etalab.gouv.fr/licence-ouverte-open-licence/")
DEFAULT_TERRITORY_NAME = "Métropole de Lyon"
# Labels of the EU data themes (fr, en): udata turns a theme into a tag from its skos:prefLabel.
THEME_LABELS: dict[str, tuple[str, str]] = {
    "AGRI": ("Agriculture, pêche, sylviculture et alimentation", "Agriculture, fisheries, forestry and food"),
    "ECON": ("Économie et finances", "Economy and finance"),
    "EDUC": ("Éducation, culture et sport", "Education, culture and sport"),
    "ENER": ("Énergie", "Energy"),
    "ENVI": ("Environnement", "Environment"),
    "GOVE": ("Gouvernement et secteur public", "Government and public sector"),
    "HEAL": ("Santé", "Health"),
    "INTR": ("Questions internationales", "International issues"),
    "JUST": ("Justice, système juridique et sécurité publique", "Justice, legal system and public safety"),
    "REGI": ("Régions et villes", "Regions and cities"),
    "SOCI": ("Population et société", "Population and society"),
    "TECH": ("Science et technologie", "Science and technology"),
    "TRAN": ("Transports", "Transport"),
}
JSONLD_CONTEXT: dict[str, Any] = {
    "dcat": str(DCAT),
    "dct": str(DCTERMS),
    "foaf": str(FOAF),
    "vcard": str(VCARD),
    "hydra": str(HYDRA),
    "locn": str(LOCN),
    "skos": str(SKOS),
    "adms": str(ADMS),
    "xsd": str(XSD),
}


@dataclass(frozen=True)
class Format:
    name: str  # rdflib's serializer name
    media_type: str
    param: str  # the ``?format=`` value links carry


TURTLE = Format("turtle", "text/turtle", "ttl")
RDF_XML = Format("xml", "application/rdf+xml", "rdf")
JSON_LD = Format("json-ld", "application/ld+json", "jsonld")
FORMATS: dict[str, Format] = {
    "ttl": TURTLE,
    "turtle": TURTLE,
    "rdf": RDF_XML,
    "xml": RDF_XML,
    "rdfxml": RDF_XML,
    "jsonld": JSON_LD,
    "json-ld": JSON_LD,
    "json": JSON_LD,
}
MEDIA_TYPES: dict[str, Format] = {
    "text/turtle": TURTLE,
    "application/x-turtle": TURTLE,
    "application/rdf+xml": RDF_XML,
    "application/xml": RDF_XML,
    "text/xml": RDF_XML,
    "application/ld+json": JSON_LD,
    "application/json": JSON_LD,
}


class UnknownFormat(ValueError):
    pass


def negotiate(format_param: str | None, accept: str | None) -> Format:
    """``?format=`` (ttl, rdf, jsonld...) wins; else the Accept header's preferred type we serve (quality values
    honoured, wildcards and anything else give JSON-LD, the default). An unknown ``?format=`` is an error."""
    if format_param:
        fmt = FORMATS.get(format_param.strip().lower())
        if fmt is None:
            raise UnknownFormat(f"format {format_param[:40]!r} is not one of {', '.join(sorted(FORMATS))}")
        return fmt
    best: tuple[float, int, Format] | None = None
    for position, part in enumerate((accept or "").split(",")):
        media, *params = (p.strip() for p in part.split(";"))
        fmt = MEDIA_TYPES.get(media.lower())
        if fmt is None:
            continue
        q = 1.0
        for p in params:
            key, _, value = p.partition("=")
            if key.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        if q > 0 and (best is None or (q, -position) > (best[0], -best[1])):
            best = (q, position, fmt)
    return best[2] if best else JSON_LD


@dataclass(frozen=True)
class ContactPoint:
    """Who users write to (dcat:contactPoint, a vCard): data.gouv.fr keeps a contact point that has an e-mail."""

    name: str
    email: str
    url: str = ""


# The Métropole's open-data team and portal (settings ODC_PUBLISH_DCAT_CONTACT_NAME/_EMAIL/_URL; another territory
# sets its own). The address is the deployment's to confirm: data.gouv.fr shows it to every user of the datasets.
DEFAULT_CONTACT = ContactPoint(
    "Métropole de Lyon — OpenData des communes", "opendata@grandlyon.com", "https://data.grandlyon.com"
)


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


@dataclass(frozen=True)
class DatasetEntry:
    """One dataset as the catalogue shows it: ``versions`` newest first (possibly only the latest ones),
    ``total_versions`` all of them, ``first_published`` when version 1 was published (dct:issued)."""

    definition: DatasetDefinition
    versions: Sequence[VersionSummary]
    total_versions: int
    first_published: datetime | None = None


@dataclass(frozen=True)
class Page:
    number: int
    size: int
    total_items: int

    @property
    def last(self) -> int:
        return max(1, math.ceil(self.total_items / self.size))


def national_schema_json(ns: Any) -> dict[str, Any] | None:
    """The dataset definition's national schema reference as plain JSON (a dataclass or a mapping)."""
    if ns is None:
        return None
    if dataclasses.is_dataclass(ns) and not isinstance(ns, type):
        return dataclasses.asdict(ns)
    return dict(ns)


def national_schema_url(ns: Any) -> str | None:
    """The national schema's version on schema.data.gouv.fr (what data.gouv.fr's schema catalogue lists as that
    version's ``schema_url``), e.g. https://schema.data.gouv.fr/schemas/etalab/schema-stationnement/0.1.5/schema.json."""
    schema = national_schema_json(ns)
    if not schema or not schema.get("name") or not schema.get("version"):
        return None
    return f"{SCHEMA_DATA_GOUV}/{schema['name']}/{schema['version']}/schema.json"


def media_type_iri(media_type: str) -> URIRef:
    return URIRef(IANA_MEDIA_TYPES + media_type)


def _time(t: datetime) -> Literal:
    return Literal(t.isoformat().replace("+00:00", "Z"), datatype=XSD.dateTime)


def new_graph() -> Graph:
    g = Graph()
    for prefix, ns in JSONLD_CONTEXT.items():
        g.bind(prefix, Namespace(ns), override=True)
    return g


def territory_polygon(territory: Territory) -> list[list[list[float]]]:
    w, s, e, n = territory.area
    return [[[w, s], [e, s], [e, n], [w, n], [w, s]]]


def _spatial(g: Graph, base: str, territory: Territory) -> URIRef:
    """The territory as a dct:Location: its name and its area as a WKT and a GeoJSON polygon (udata reads either)."""
    node = URIRef(f"{base}/catalog#territory")
    if (node, RDF.type, DCTERMS.Location) in g:
        return node
    ring = territory_polygon(territory)
    wkt = "POLYGON((" + ", ".join(f"{x} {y}" for x, y in ring[0]) + "))"
    g.add((node, RDF.type, DCTERMS.Location))
    g.add((node, SKOS.prefLabel, Literal(territory.name, lang="fr")))
    g.add((node, DCAT.bbox, Literal(wkt, datatype=WKT_LITERAL)))
    g.add(
        (node, LOCN.geometry, Literal(json.dumps({"type": "Polygon", "coordinates": ring}), datatype=GEOJSON_LITERAL))
    )
    return node


def _contact(g: Graph, base: str, contact: ContactPoint) -> URIRef:
    node = URIRef(f"{base}/catalog#contact")
    if (node, RDF.type, VCARD.Organization) in g:
        return node
    g.add((node, RDF.type, VCARD.Organization))
    g.add((node, VCARD.fn, Literal(contact.name)))
    g.add((node, VCARD.hasEmail, URIRef(f"mailto:{contact.email}")))
    if contact.url:
        g.add((node, VCARD.hasURL, URIRef(contact.url)))
    return node


def _publisher(g: Graph, base: str, territory_name: str) -> URIRef:
    node = URIRef(f"{base}/catalog#publisher")
    g.add((node, RDF.type, FOAF.Organization))
    g.add((node, FOAF.name, Literal(f"{territory_name} — OpenData des communes")))
    return node


def _distribution(
    g: Graph, iri: str, title: str, url: str, media_type: str, file_type: str, *, download: bool
) -> URIRef:
    node = URIRef(iri)
    g.add((node, RDF.type, DCAT.Distribution))
    g.add((node, DCTERMS.title, Literal(title)))
    g.add((node, DCAT.accessURL, URIRef(url)))
    if download:
        g.add((node, DCAT.downloadURL, URIRef(url)))
    g.add((node, DCAT.mediaType, media_type_iri(media_type)))
    g.add((node, DCTERMS.format, EU_FILE_TYPE[file_type]))
    g.add((node, DCTERMS.license, LICENSE))
    return node


def add_dataset(g: Graph, base: str, entry: DatasetEntry, territory: Territory, contact: ContactPoint) -> URIRef:
    """One dataset with its distributions and (as ``dcat:hasVersion``) its latest numbered versions."""
    d = entry.definition
    url = f"{base}/datasets/{d.id}"
    node = URIRef(url)
    g.add((node, RDF.type, DCAT.Dataset))
    g.add((node, DCTERMS.identifier, Literal(d.id)))
    g.add((node, DCTERMS.title, Literal(d.title_fr, lang="fr")))
    g.add((node, DCTERMS.title, Literal(d.title_en, lang="en")))
    if d.description_fr:
        g.add((node, DCTERMS.description, Literal(d.description_fr, lang="fr")))
    if d.description_en:
        g.add((node, DCTERMS.description, Literal(d.description_en, lang="en")))
    for keyword in d.keywords:
        g.add((node, DCAT.keyword, Literal(keyword, lang="fr")))
    for theme in d.themes:
        theme_iri = EU_THEME[theme]
        g.add((node, DCAT.theme, theme_iri))
        fr, en = THEME_LABELS.get(theme, (theme, theme))
        g.add((theme_iri, SKOS.prefLabel, Literal(fr, lang="fr")))
        g.add((theme_iri, SKOS.prefLabel, Literal(en, lang="en")))
    schema_url = national_schema_url(d.national_schema)
    if schema_url is not None and d.national_schema is not None:
        standard = URIRef(schema_url)
        g.add((node, DCTERMS.conformsTo, standard))
        g.add((standard, RDF.type, DCTERMS.Standard))
        g.add((standard, DCTERMS.title, Literal(d.national_schema.name)))
        g.add((standard, DCAT.version, Literal(d.national_schema.version)))
    g.add((node, DCTERMS.spatial, _spatial(g, base, territory)))
    g.add((node, DCAT.contactPoint, _contact(g, base, contact)))
    g.add((node, DCTERMS.publisher, _publisher(g, base, territory.name)))
    g.add((node, DCTERMS.accrualPeriodicity, EU_FREQUENCY[d.accrual_periodicity]))
    g.add((node, DCTERMS.license, LICENSE))
    g.add((node, DCAT.landingPage, node))
    latest = entry.versions[0] if entry.versions else None
    if entry.first_published is not None:
        g.add((node, DCTERMS.issued, _time(entry.first_published)))
    if latest is not None:
        g.add((node, DCTERMS.modified, _time(latest.published_at)))
        g.add((node, DCAT.version, Literal(str(latest.version))))
        g.add((node, DCAT.hasCurrentVersion, URIRef(f"{url}/versions/{latest.version}")))
    g.add((node, ADMS.versionNotes, Literal(f"{entry.total_versions} numbered versions; each lists the features added, updated and removed.", lang="en")))  # fmt: skip
    for iri, title, link, media, ftype, download in (
        (f"{url}#geojson", "GeoJSON", f"{url}/features.geojson", "application/geo+json", "GEOJSON", True),
        (f"{url}#csv", "CSV", f"{url}/features.csv", "text/csv", "CSV", True),
        (f"{url}#ogcapi", "OGC API – Features", f"{base}/ogc/collections/{d.id}", "application/geo+json", "GEOJSON", False),
    ):  # fmt: skip
        dist = _distribution(g, iri, title, link, media, ftype, download=download)
        g.add((node, DCAT.distribution, dist))
        if schema_url is not None and ftype == "CSV":
            g.add((dist, DCTERMS.conformsTo, URIRef(schema_url)))
        if iri.endswith("#ogcapi"):
            g.add((dist, DCTERMS.conformsTo, OGC_FEATURES_CORE))
    for v in entry.versions:
        # a version is a dcat:Resource (DCAT 3's range of hasVersion), not a dcat:Dataset: a harvester that takes
        # every dcat:Dataset would otherwise import each version as a dataset of its own
        vnode = URIRef(f"{url}/versions/{v.version}")
        g.add((node, DCAT.hasVersion, vnode))
        g.add((vnode, RDF.type, DCAT.Resource))
        g.add((vnode, DCTERMS.identifier, Literal(f"{d.id}:v{v.version}")))
        g.add((vnode, DCAT.version, Literal(str(v.version))))
        g.add((vnode, DCTERMS.issued, _time(v.published_at)))
        g.add((vnode, ADMS.versionNotes, Literal(f"+{v.added} ~{v.updated} -{v.removed}; {v.feature_count} features", lang="en")))  # fmt: skip
        g.add((vnode, DCAT.downloadURL, URIRef(f"{url}/versions/{v.version}/features.geojson")))
    return node


def add_data_service(g: Graph, base: str, dataset_ids: Sequence[str], contact: ContactPoint) -> URIRef:
    """The OGC API – Features endpoint as a dcat:DataService serving every dataset. Datasets on other pages of the
    catalogue are named by IRI and dct:identifier only (no title: a harvester does not take them for datasets)."""
    node = URIRef(f"{base}/ogc")
    g.add((node, RDF.type, DCAT.DataService))
    g.add((node, DCTERMS.identifier, Literal("ogcapi-features")))
    g.add((node, DCTERMS.title, Literal("OGC API – Features", lang="fr")))
    g.add((node, DCTERMS.description, Literal("Les entités de chaque jeu de données, interrogeables par emprise et paginées (OGC API – Features, partie 1).", lang="fr")))  # fmt: skip
    g.add((node, DCAT.endpointURL, node))
    g.add((node, DCAT.endpointDescription, URIRef(f"{base}/openapi.json")))
    g.add((node, DCTERMS.conformsTo, OGC_FEATURES_CORE))
    g.add((node, DCTERMS.license, LICENSE))
    g.add((node, DCAT.contactPoint, _contact(g, base, contact)))
    for dataset_id in dataset_ids:
        dataset = URIRef(f"{base}/datasets/{dataset_id}")
        g.add((node, DCAT.servesDataset, dataset))
        g.add((dataset, DCTERMS.identifier, Literal(dataset_id)))
    return node


def catalogue_page_url(base: str, page: int, size: int, fmt: Format) -> str:
    return f"{base}/catalog?{urlencode({'format': fmt.param, 'page': page, 'page_size': size})}"


def catalogue_graph(
    base: str,
    entries: Sequence[DatasetEntry],
    all_dataset_ids: Sequence[str],
    page: Page,
    fmt: Format,
    territory: Territory,
    contact: ContactPoint,
    modified: datetime | None,
) -> Graph:
    """One page of the catalogue: ``entries`` are the page's datasets; the data service is on the first page."""
    g = new_graph()
    cat = URIRef(f"{base}/catalog")
    g.add((cat, RDF.type, DCAT.Catalog))
    g.add((cat, RDF.type, HYDRA.Collection))
    g.add((cat, DCTERMS.title, Literal(f"OpenData des communes — {territory.name}", lang="fr")))
    g.add((cat, DCTERMS.title, Literal(f"Communes' open data — {territory.name}", lang="en")))
    g.add((cat, DCTERMS.description, Literal(f"Les données publiées par les communes ({territory.name}) : chaque jeu de données en versions numérotées, en GeoJSON, CSV et OGC API – Features.", lang="fr")))  # fmt: skip
    g.add((cat, DCTERMS.publisher, _publisher(g, base, territory.name)))
    g.add((cat, DCTERMS.license, LICENSE))
    g.add((cat, DCTERMS.spatial, _spatial(g, base, territory)))
    if modified is not None:
        g.add((cat, DCTERMS.modified, _time(modified)))
    for entry in entries:
        g.add((cat, DCAT.dataset, add_dataset(g, base, entry, territory, contact)))
    if page.number == 1:
        g.add((cat, DCAT.service, add_data_service(g, base, all_dataset_ids, contact)))
    g.add((cat, HYDRA.totalItems, Literal(page.total_items)))
    view = URIRef(catalogue_page_url(base, page.number, page.size, fmt))
    g.add((cat, HYDRA.view, view))
    g.add((view, RDF.type, HYDRA.PartialCollectionView))
    g.add((view, RDF.type, HYDRA.PagedCollection))
    g.add((view, HYDRA.totalItems, Literal(page.total_items)))
    g.add((view, HYDRA.itemsPerPage, Literal(page.size)))
    for number, new, old in ((1, HYDRA.first, HYDRA.firstPage), (page.last, HYDRA.last, HYDRA.lastPage)):
        target = URIRef(catalogue_page_url(base, number, page.size, fmt))
        g.add((view, new, target))
        g.add((view, old, target))
    if page.number < page.last:
        target = URIRef(catalogue_page_url(base, page.number + 1, page.size, fmt))
        g.add((view, HYDRA.next, target))
        g.add((view, HYDRA.nextPage, target))
    if page.number > 1:
        target = URIRef(catalogue_page_url(base, page.number - 1, page.size, fmt))
        g.add((view, HYDRA.previous, target))
        g.add((view, HYDRA.previousPage, target))
    return g


def dataset_graph(base: str, entry: DatasetEntry, territory: Territory, contact: ContactPoint) -> Graph:
    g = new_graph()
    add_dataset(g, base, entry, territory, contact)
    return g


def serialize(g: Graph, fmt: Format) -> bytes:
    if fmt is JSON_LD:
        text = g.serialize(format="json-ld", context=JSONLD_CONTEXT, auto_compact=True)
    else:
        text = g.serialize(format=fmt.name)
    return text.encode("utf-8")
