"""Which real file goes to which canonical dataset, for which commune; and which files are left out, why.

Paths are relative to the real-data folder (``/work/shared/data/real`` by default). ``commune`` None means
the commune is read per record (the dataset's commune field, or the file's INSEE column).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Entry:
    path: str
    dataset: str
    commune: str | None = None
    note: str = ""


@dataclass(frozen=True)
class Excluded:
    path: str
    reason: str


MONTPELLIER = "34172"
ENTRIES: tuple[Entry, ...] = (
    # Métropole de Lyon layers
    Entry("grandlyon-itineraire-fraicheur/toilettes.geojson", "public_toilets"),
    Entry("grandlyon-itineraire-fraicheur/parcs.geojson", "parks_gardens"),
    Entry("grandlyon-parcs-jardins-2021/com_donnees_communales.comparcjardin_1_0_0.geojson", "parks_gardens"),
    Entry("grandlyon-itineraire-fraicheur/fontaines_potables.geojson", "drinking_fountains"),
    Entry("grandlyon-marches/eco_economie.ecomarcheinstance_latest.json", "markets"),
    # national car-sharing base, three real versions in order
    Entry("bnlc-lieux-covoiturage/bnlc-_2020-11-09_initial.csv", "carpool_places"),
    Entry("bnlc-lieux-covoiturage/bnlc-_2026-05-19.csv", "carpool_places"),
    Entry("bnlc-lieux-covoiturage/bnlc-_2026-05-21.csv", "carpool_places"),
    # delivery areas (CEREMA)
    Entry("cerema-aires-livraison/exemple-grand-lyon.csv", "delivery_areas", "69123"),
    Entry("cerema-aires-livraison/antibes/antibes_aires_livraison.csv", "delivery_areas", "06004"),
    Entry("cerema-aires-livraison/antibes/antibes_aires_livraison--mr.csv", "delivery_areas", "06004"),
    Entry("cerema-aires-livraison/hauts-de-seine/aires-de-livraison.csv", "delivery_areas"),
    # Montpellier 2014, into the datasets that have a national schema
    Entry("montpellier-opendata-2014/VilleMTP_MTP_Defibrillateurs/VilleMTP_MTP_Defibrillateurs.csv", "defibrillators", MONTPELLIER),
    Entry("montpellier-opendata-2014/VilleMTP_MTP_Defibrillateurs/VilleMTP_MTP_Defibrilateurs.geojson", "defibrillators", MONTPELLIER),
    Entry("montpellier-opendata-2014/VilleMTP_MTP_FontainesPublic/VilleMTP_MTP_FontainesPublic.csv", "drinking_fountains", MONTPELLIER),
    Entry("montpellier-opendata-2014/VilleMTP_MTP_FontainesPublic/VilleMTP_MTP_FontainesPublic.geojson", "drinking_fountains", MONTPELLIER),
    Entry("montpellier-opendata-2014/VilleMTP_MTP_ParkingOuvrage/VilleMTP_MTP_ParkingOuv.csv", "parking", MONTPELLIER),
    Entry("montpellier-opendata-2014/VilleMTP_MTP_EtabliPublic/VilleMTP_MTP_EtabliPublic.csv", "public_facilities", MONTPELLIER),
    Entry("montpellier-opendata-2014/VilleMTP_MTP_EtabliPublic/VilleMTP_MTP_EtabliPublic.geojson", "public_facilities", MONTPELLIER),
    # the schema authors' own example files, into the catalogue's datasets
    Entry("schema-repo-examples/etalab--schema-lieux-covoiturage/exemple-valide.csv", "carpool_places"),
    Entry("schema-repo-examples/etalab--schema-lieux-covoiturage/exemple-invalide.csv", "carpool_places"),
    Entry("schema-repo-examples/etalab--schema-stationnement/exemple-valide.csv", "parking"),
    Entry("schema-repo-examples/etalab--schema-stationnement/exemple-invalide.csv", "parking"),
    Entry("schema-repo-examples/openmaraude--schema-stationstaxi/exemple-valide.csv", "taxi_ranks"),
    Entry("schema-repo-examples/openmaraude--schema-stationstaxi/exemple-non-valide.csv", "taxi_ranks"),
    Entry("schema-repo-examples/datagouv--schema-fontaine-eau/exemple-valide.csv", "drinking_fountains"),
    Entry("schema-repo-examples/betagouv--SCDL-Subvention-DataSubvention/exemples/exemple_valide.csv", "subsidies", "06004"),
    Entry(
        "schema-repo-examples/betagouv--SCDL-Subvention-DataSubvention/exemples/exemple_invalide_erreurs_cellules.csv",
        "subsidies",
        "06004",
    ),
    Entry(
        "schema-repo-examples/betagouv--SCDL-Subvention-DataSubvention/exemples/exemple_invalide_erreurs_colonnes.csv",
        "subsidies",
        "06004",
    ),
    Entry("schema-repo-examples/betagouv--SCDL-Subvention-DataSubvention/exemple-duplicate-column.csv", "subsidies", "06004"),
)

EXCLUDED: tuple[Excluded, ...] = (
    Excluded("grandlyon-velov-snapshots/*", "Vélo'v availability feed: not one of the programme's datasets (a real-time connector's input, issue 5)."),
    Excluded("bnlc-lieux-covoiturage/datasets.csv, disabled_datasets.csv", "lists of the BNLC's source datasets, not places."),
    Excluded("cerema-aires-livraison/schema.json, schemas-schema-data-gouv-fr/*", "schemas, not data (the catalogue copies the published ones)."),
    Excluded("montpellier-opendata-2014/VilleMTP_MTP_AttribSub/*.ods", "an OpenDocument spreadsheet: odc send reads CSV, GeoJSON and JSON; export the sheet as CSV first."),
    Excluded("montpellier-opendata-2014/VilleMTP_MTP_PlacesGIG/*", "the CSV has neither identifier nor position (positions only in the KML, which odc send does not read)."),
    Excluded("montpellier-opendata-2014/VilleMTP_MTP_PlacesReserv/*", "one layer mixing disabled, delivery and taxi kerb places with only a date, a type and a position: no canonical dataset takes it whole and it has no identifier."),
    Excluded(
        "montpellier-opendata-2014/VilleMTP_MTP_EspacesVertsGlobal, BureauxVote, OSM_MTP_Recyclage",
        "outside the Métropole de Lyon: parks, polling stations and recycling points have no national schema, their canonical schema and area are the Métropole's own.",
    ),
    Excluded(
        "schema-repo-examples/etalab--schema-irve, -stationnement-cyclable, MTES-MCT--acceslibre-schema, FuturoCite--*",
        "examples of schemas the programme does not use (EV charging, bicycle parking, building accessibility, Belgian standards); they are still checked against frictionless by tests/conformance.",
    ),
)
