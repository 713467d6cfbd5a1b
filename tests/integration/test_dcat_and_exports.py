"""Issue #15 points 7 and 8 on the real stack: the DCAT catalogue as data.gouv.fr's harvester (udata's ``dcat``
backend) reads it, parsed with rdflib in each serialisation and walked page by page over Hydra links; the CSV export
opened with real GDAL (Debian's gdal-bin, installed like the project's other Debian packages) and Python's csv, locally and
over HTTP through GDAL's /vsicurl/ (HEAD, then byte ranges)."""

from __future__ import annotations

import csv
import io
import json
import math
import random
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from rdflib import Graph, Literal, URIRef
from rdflib.compare import isomorphic
from rdflib.namespace import DCTERMS, RDF, SKOS, XSD

from deploy.local.gdal import ensure_gdal_installed
from services.contract.datasets.catalogue import DEFINITIONS_DIR, DatasetCatalogue
from services.publish.domain.dcat import DCAT, HYDRA, VCARD
from tests.integration.pipeline_harness import Pipeline, toilet_event, wait_for
from tests.integration.test_every_dataset_end_to_end import CASES, record

pytestmark = pytest.mark.integration
CATALOGUE = DatasetCatalogue.load()
TOILETS, CARPOOL = "public_toilets", "carpool_places"
IANA = "https://www.iana.org/assignments/media-types/"
RDF_MEDIA = {"text/turtle": "turtle", "application/rdf+xml": "xml", "application/ld+json": "json-ld"}
GEOJSON_LITERAL = URIRef(IANA + "application/vnd.geo+json")
WKT_LITERAL = URIRef("http://www.opengis.net/ont/geosparql#wktLiteral")


def get(url: str, **kw: Any) -> httpx.Response:
    return httpx.get(url, timeout=60, **kw)


def parse(r: httpx.Response) -> Graph:
    assert r.status_code == 200, r.text[:500]
    media = r.headers["content-type"].split(";")[0]
    return Graph().parse(data=r.content, format=RDF_MEDIA[media])


@pytest.fixture(scope="module")
def api(pipeline: Pipeline) -> Iterator[str]:
    """The publish API with a few published toilets and one car-sharing place (a national-schema layout)."""
    ids = [str(960_000 + uuid.uuid4().int % 30_000 + i) for i in range(3)]
    before = pipeline.metric("normalise", "odc_events_received_total")
    pipeline.produce_events([toilet_event(f, seq=1, lon=4.81 + i / 1000, lat=45.72) for i, f in enumerate(ids)])
    pipeline.settle(TOILETS, before, len(ids))
    attributes = {**CASES[CARPOOL].attributes, "id_lieu": f"69123-C-{random.randint(100, 899)}"}
    place = record(CARPOOL, (4.8123, 45.7437), attributes)  # ~1 km from every other test's places
    pipeline.produce_events([place])
    wait_for(
        "the car-sharing place published",
        lambda: pipeline.sql(
            "SELECT 1 FROM published_feature WHERE dataset = %s AND feature_id = %s", CARPOOL, place.feature_id
        ),
        timeout=90,
    )
    yield pipeline.services["publish"].base_url


@pytest.fixture(scope="module")
def gdal() -> None:
    ensure_gdal_installed()


# -- DCAT ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "headers", "media"),
    [
        ("/catalog?page_size=100", {"Accept": "text/turtle"}, "text/turtle"),
        ("/catalog?page_size=100&format=rdf", {}, "application/rdf+xml"),
        ("/catalog?page_size=100", {"Accept": "application/rdf+xml;q=0.5, application/ld+json"}, "application/ld+json"),
        ("/catalog.ttl?page_size=100", {}, "text/turtle"),
    ],
)
def test_the_catalogue_has_what_the_national_harvester_reads(
    api: str, path: str, headers: dict[str, str], media: str
) -> None:
    r = get(api + path, headers=headers)
    assert r.headers["content-type"].split(";")[0] == media
    g = parse(r)
    titled = {
        str(g.value(node, DCTERMS.identifier)): node
        for node in g.subjects(RDF.type, DCAT.Dataset)
        if g.value(node, DCTERMS.title) is not None
    }
    assert set(titled) == set(CATALOGUE.ids())
    for dataset_id, node in titled.items():
        d = CATALOGUE.get(dataset_id)
        assert d is not None
        # identifier, titles and a real description (the definition's, not the developers' schema note)
        assert isinstance(node, URIRef) and str(node) == f"{api}/datasets/{dataset_id}"
        assert set(g.objects(node, DCTERMS.title)) == {Literal(d.title_fr, lang="fr"), Literal(d.title_en, lang="en")}
        descriptions = set(g.objects(node, DCTERMS.description))
        assert Literal(d.description_fr, lang="fr") in descriptions and d.schema_note not in map(str, descriptions)
        # keywords, themes (EU data-theme IRIs with a label), the EU frequency
        assert {str(k) for k in g.objects(node, DCAT.keyword)} == set(d.keywords) and d.keywords
        themes = set(g.objects(node, DCAT.theme))
        assert themes == {URIRef(f"http://publications.europa.eu/resource/authority/data-theme/{t}") for t in d.themes}
        assert all(g.value(t, SKOS.prefLabel) is not None for t in themes)
        assert g.value(node, DCTERMS.accrualPeriodicity) == URIRef(
            "http://publications.europa.eu/resource/authority/frequency/UPDATE_CONT"
        )
        # the national schema's version on schema.data.gouv.fr, as an IRI (not a blank node)
        conforms = g.value(node, DCTERMS.conformsTo)
        if d.national_schema is None:
            assert conforms is None
        else:
            assert conforms == URIRef(
                f"https://schema.data.gouv.fr/schemas/{d.national_schema.name}/{d.national_schema.version}/schema.json"
            )
            assert str(g.value(conforms, DCAT.version)) == d.national_schema.version
        # licence and distributions: download/access URL, IANA media type IRI, EU file-type IRI
        dists = list(g.objects(node, DCAT.distribution))
        assert len(dists) == 3
        for dist in dists:
            assert isinstance(g.value(dist, DCAT.accessURL), URIRef)
            media_type = g.value(dist, DCAT.mediaType)
            assert isinstance(media_type, URIRef) and str(media_type) in (
                IANA + "application/geo+json",
                IANA + "text/csv",
            )
            assert str(g.value(dist, DCTERMS.format)).startswith(
                "http://publications.europa.eu/resource/authority/file-type/"
            )
        downloads = {str(g.value(dist, DCAT.downloadURL)) for dist in dists} - {"None"}
        assert downloads == {
            f"{api}/datasets/{dataset_id}/features.geojson",
            f"{api}/datasets/{dataset_id}/features.csv",
        }

    # SPARQL, the way a harvester's mapping is usually written: spatial coverage, contact point and dates
    rows = {
        str(row.id): row
        for row in g.query(
            """SELECT ?id ?wkt ?geojson ?fn ?email ?issued ?modified WHERE {
                 ?d a dcat:Dataset ; dct:identifier ?id ; dct:spatial ?where ; dcat:contactPoint ?contact .
                 ?where dcat:bbox ?wkt ; locn:geometry ?geojson .
                 ?contact a vcard:Organization ; vcard:fn ?fn ; vcard:hasEmail ?email .
                 OPTIONAL { ?d dct:issued ?issued ; dct:modified ?modified } }""",
            initNs={"dcat": DCAT, "dct": DCTERMS, "vcard": VCARD, "locn": URIRef("http://www.w3.org/ns/locn#")},
        )
    }
    assert set(rows) == set(CATALOGUE.ids())
    toilets, carpool = rows[TOILETS], rows[CARPOOL]
    for row in (toilets, carpool):
        assert row.wkt.datatype == WKT_LITERAL and str(row.wkt).startswith("POLYGON((")
        assert row.geojson.datatype == GEOJSON_LITERAL and json.loads(str(row.geojson))["type"] == "Polygon"
        assert str(row.fn).startswith("Métropole de Lyon") and str(row.email).startswith("mailto:")
        assert row.issued.datatype == XSD.dateTime and row.issued.toPython() <= row.modified.toPython()
    # the OGC API as a data service serving every dataset
    service = URIRef(f"{api}/ogc")
    assert (service, RDF.type, DCAT.DataService) in g and g.value(service, DCAT.endpointURL) == service
    served = {str(g.value(s, DCTERMS.identifier)) for s in g.objects(service, DCAT.servesDataset)}
    assert served == set(CATALOGUE.ids())


def test_every_distribution_and_version_link_answers(api: str) -> None:
    g = parse(get(f"{api}/datasets/{CARPOOL}/dcat", headers={"Accept": "text/turtle"}))
    urls = {str(o) for p in (DCAT.downloadURL, DCAT.accessURL) for o in g.objects(None, p)}
    assert len(urls) >= 4
    for url in urls:
        assert httpx.get(url, timeout=60, follow_redirects=True).status_code == 200, url


def test_one_datasets_dcat_is_the_same_graph_in_every_format(api: str) -> None:
    url = f"{api}/datasets/{TOILETS}/dcat"
    turtle = get(url, headers={"Accept": "text/turtle"})
    graphs = [
        parse(turtle),
        parse(get(url, headers={"Accept": "application/rdf+xml"})),
        parse(get(url)),  # no Accept: JSON-LD
        parse(get(f"{url}?format=ttl", headers={"Accept": "application/ld+json"})),  # ?format= wins
    ]
    assert turtle.headers["vary"] == "Accept"
    assert all(isomorphic(graphs[0], other) for other in graphs[1:])
    assert get(f"{url}?format=n3").status_code == 400


def test_hydra_paging_walks_every_page_and_finds_every_dataset_once(api: str) -> None:
    """The way udata's harvester walks a catalogue: the first URL in a format, then each page's hydra:next,
    fetched without any Accept header and parsed in the same format."""
    url: str | None = f"{api}/catalog?page_size=4"
    headers = {"Accept": "application/rdf+xml"}
    seen: list[str] = []
    pages = 0
    while url:
        r = get(url, headers=headers)
        assert r.headers["content-type"].startswith("application/rdf+xml")
        g = parse(r)
        headers = {}
        pages += 1
        seen += [
            str(g.value(n, DCTERMS.identifier))
            for n in g.subjects(RDF.type, DCAT.Dataset)
            if g.value(n, DCTERMS.title) is not None
        ]
        view = g.value(predicate=RDF.type, object=HYDRA.PartialCollectionView)
        assert view is not None and (view, RDF.type, HYDRA.PagedCollection) in g
        assert g.value(view, HYDRA.next) == g.value(view, HYDRA.nextPage)
        assert int(g.value(URIRef(f"{api}/catalog"), HYDRA.totalItems)) == len(CATALOGUE.ids())
        nxt = g.value(view, HYDRA.next)
        url = str(nxt) if nxt is not None else None
        assert pages <= 10
    assert pages == math.ceil(len(CATALOGUE.ids()) / 4)
    assert sorted(seen) == sorted(CATALOGUE.ids())  # every dataset, each once
    assert get(f"{api}/catalog?page_size=4&page={pages + 1}").status_code == 404


# -- CSV export ----------------------------------------------------------------------------------------------


def download(url: str, to: Path) -> httpx.Response:
    r = httpx.get(url, timeout=60, follow_redirects=True)
    assert r.status_code == 200, r.text[:300]
    assert int(r.headers["content-length"]) == len(r.content)
    to.write_bytes(r.content)
    return r


def ogr_features(path: Path) -> list[dict[str, Any]]:
    """The file as GDAL reads it with no open option, converted to GeoJSON."""
    assert shutil.which("ogr2ogr")
    out = subprocess.run(
        ["ogr2ogr", "-f", "GeoJSON", "/vsistdout/", str(path)], capture_output=True, text=True, timeout=120, check=True
    )
    features: list[dict[str, Any]] = json.loads(out.stdout)["features"]
    return features


def test_gdal_and_python_read_the_csv_export_with_its_wkt_geometry(api: str, gdal: None, tmp_path: Path) -> None:
    path = tmp_path / "features.csv"
    r = download(f"{api}/datasets/{TOILETS}/features.csv", path)
    version = int(r.url.path.split("/versions/")[1].split("/")[0])
    expected = get(f"{api}/datasets/{TOILETS}/versions/{version}").json()["feature_count"]
    exported = get(f"{api}/datasets/{TOILETS}/versions/{version}/features.geojson").json()["features"]
    rows = list(csv.DictReader(io.StringIO(r.content.decode("utf-8"))))  # Python's csv, default limits
    assert len(rows) == expected and all(row["WKT"].startswith("POINT (") for row in rows)
    features = ogr_features(path)
    assert len(features) == expected
    assert {f["geometry"]["type"] for f in features} == {"Point"}

    # the same positions as the GeoJSON export, to the 7 decimals of the WKT column
    def positions(fs: list[dict[str, Any]]) -> list[tuple[float, ...]]:
        return sorted(tuple(round(c, 7) for c in f["geometry"]["coordinates"]) for f in fs)

    assert positions(features) == positions(exported)
    info = subprocess.run(["ogrinfo", "-so", "-al", str(path)], capture_output=True, text=True, check=True).stdout
    assert f"Feature Count: {expected}" in info and "Geometry: None" not in info


def test_the_national_layout_stays_valid_and_offers_its_wkt_column_on_demand(
    api: str, gdal: None, tmp_path: Path
) -> None:
    from frictionless import Resource, Schema

    d = CATALOGUE.get(CARPOOL)
    assert d is not None
    national = tmp_path / "national.csv"
    download(f"{api}/datasets/{CARPOOL}/features.csv", national)
    header = next(csv.reader(io.StringIO(national.read_text(encoding="utf-8"))))
    assert header == list(d.field_names)  # exactly the national schema's columns
    schema = Schema.from_descriptor(json.loads((DEFINITIONS_DIR / CARPOOL / "schema.json").read_text(encoding="utf-8")))
    report = Resource(path=national.name, basepath=str(tmp_path), schema=schema).validate()
    assert report.valid, report.flatten(["rowNumber", "fieldName", "type", "note"])[:5]

    with_wkt = tmp_path / "with_wkt.csv"
    r = download(f"{api}/datasets/{CARPOOL}/features.csv?geometry=wkt", with_wkt)
    assert "geometry=wkt" in str(r.url)
    rows = list(csv.DictReader(io.StringIO(r.content.decode("utf-8"))))
    assert list(rows[0]) == [*d.field_names, "WKT"]
    features = ogr_features(with_wkt)
    assert len(features) == len(rows) >= 1 and {f["geometry"]["type"] for f in features} == {"Point"}
    for f, row in zip(features, rows, strict=True):
        assert f["geometry"]["coordinates"] == pytest.approx([float(row["Xlong"]), float(row["Ylat"])], abs=1e-7)
    plain = get(f"{api}/datasets/{CARPOOL}/versions/1/features.csv").headers.get("etag")
    assert plain != get(f"{api}/datasets/{CARPOOL}/versions/1/features.csv?geometry=wkt").headers.get("etag")


def test_with_its_csvt_and_prj_gdal_reads_types_widths_and_crs_and_truncates_nothing(
    api: str, gdal: None, tmp_path: Path
) -> None:
    version = get(f"{api}/datasets/{CARPOOL}").json()["latest_version"]
    url = f"{api}/datasets/{CARPOOL}/versions/{version}/features"
    path = tmp_path / "features.csv"
    r = download(f"{url}.csv?geometry=wkt", path)
    download(f"{url}.csvt?geometry=wkt", tmp_path / "features.csvt")
    download(f"{url}.prj", tmp_path / "features.prj")
    info = subprocess.run(["ogrinfo", "-so", "-al", str(path)], capture_output=True, text=True, check=True).stdout
    for expected in (
        "nbre_pl: Integer64",
        "Xlong: Real",
        "date_maj: Date",
        "ouvert: Integer(Boolean)",
        'GEOGCRS["WGS 84"',
    ):
        assert expected in info, info
    rows = list(csv.DictReader(io.StringIO(r.content.decode("utf-8"))))
    widest = max(len(row["nom_lieu"].encode("utf-8")) for row in rows)
    assert f"nom_lieu: String ({widest}.0)" in info
    shp = subprocess.run(
        ["ogr2ogr", "-f", "ESRI Shapefile", str(tmp_path / "out.shp"), str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert shp.returncode == 0 and "truncated" not in shp.stderr.lower(), shp.stderr


# -- exports through GDAL's /vsicurl/ (HEAD, then byte ranges) ----------------------------------------------


def ogr_fields(info: str) -> dict[str, str]:
    """``name: Type (width.precision)`` lines of ``ogrinfo -so``, as {name: Type}."""
    fields: dict[str, str] = {}
    for line in info.splitlines():
        name, sep, rest = line.partition(": ")
        if sep and rest.split(" ")[0] in ("String", "Integer", "Integer64", "Real", "Date", "DateTime"):
            fields[name.strip()] = rest.split(" ")[0]
    return fields


def vsicurl(*args: str) -> subprocess.CompletedProcess[str]:
    """A GDAL tool on a /vsicurl/ URL, with the curl layer's debug lines (which ranges it asked for, what came)."""
    env = {"CPL_DEBUG": "ON", "GDAL_HTTP_TIMEOUT": "60", "CPL_VSIL_CURL_CACHE_SIZE": "0"}
    return subprocess.run(list(args), capture_output=True, text=True, timeout=180, check=True, env=env)


@pytest.mark.parametrize("export", ["features.geojson", "features.csv"])
def test_gdal_opens_each_export_over_vsicurl_with_ranges_and_reads_every_feature(
    api: str, gdal: None, tmp_path: Path, export: str
) -> None:
    version = get(f"{api}/datasets/{TOILETS}").json()["latest_version"]
    url = f"{api}/datasets/{TOILETS}/versions/{version}/{export}"
    expected = get(f"{api}/datasets/{TOILETS}/versions/{version}").json()["feature_count"]
    local = tmp_path / export
    download(url, local)
    if export.endswith(".csv"):  # the local copy with its sidecar files, as the docs tell users to save them
        download(url.replace(".csv", ".csvt"), tmp_path / "features.csvt")
        download(url.replace(".csv", ".prj"), tmp_path / "features.prj")

    remote = vsicurl("ogrinfo", "-ro", "-so", "-al", f"/vsicurl/{url}")
    assert f"Feature Count: {expected}" in remote.stdout, remote.stdout + remote.stderr[-3000:]
    # GDAL's curl layer took the size from HEAD and read the file by byte ranges, which the server honoured
    assert "206" in remote.stderr and "Downloading 0-" in remote.stderr, remote.stderr[-3000:]
    # the same fields with the same types as the file read locally (for the CSV: the .csvt next to it)
    local_info = subprocess.run(
        ["ogrinfo", "-ro", "-so", "-al", str(local)], capture_output=True, text=True, check=True
    )
    assert ogr_fields(remote.stdout) == ogr_fields(local_info.stdout) != {}
    # and every feature, converted, is the same as from the local file
    features = json.loads(vsicurl("ogr2ogr", "-f", "GeoJSON", "/vsistdout/", f"/vsicurl/{url}").stdout)["features"]
    assert len(features) == expected
    assert features == ogr_features(local)
    assert {f["geometry"]["type"] for f in features} == {"Point"}
