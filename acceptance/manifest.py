"""Which real file goes to which canonical dataset, for which commune; and which files are left out, why.
Every file is sent through the source profile suggested for it (``odc profile suggest``), with the confirmed
edits listed here, if any.

Paths are relative to the real-data folder (``/work/shared/data/real`` by default). ``commune`` None means
the commune is read per record (the dataset's commune field, or the file's INSEE column).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Entry:
    path: str
    dataset: str
    commune: str | None = None
    note: str = ""
    # Each file goes through the profile `odc profile suggest` proposes for it. A confirmed edit of that
    # profile (members of the profile document replaced, e.g. {"id_columns": ["ID"]}) is kept here with why.
    profile_edit: dict[str, Any] = field(default_factory=dict)
    edit_why: str = ""
    # The territory the file's data belongs to: the normaliser and publisher run under it (ODC_TERRITORY), and
    # the profile is suggested under it. See NATIONAL below for the files of national datasets.
    territory: str = "metropole-de-lyon"


@dataclass(frozen=True)
class Excluded:
    path: str
    reason: str


MONTPELLIER = "34172"
LYON_T = "metropole-de-lyon"
MONTPELLIER_T = "montpellier-mediterranee-metropole"
# The territory setting names a métropole, an EPCI, a département or a list of communes: it cannot say "all of
# France". A deployment's national datasets (area "france" in their definitions) are not bounded by it anyway:
# their positions are checked against France and their commune codes against the whole COG, whatever the
# territory; the territory only bounds the deployment's own datasets. So the national base (BNLC) and the
# schema authors' example files (fictitious places across France) run under the default deployment, the
# Métropole de Lyon, which is the closest honest setting: a Métropole that republishes the national layers.
NATIONAL = LYON_T
ENTRIES: tuple[Entry, ...] = (
    # Métropole de Lyon layers
    Entry(
        "grandlyon-itineraire-fraicheur/toilettes.geojson",
        "public_toilets",
        note="479 of 480 points are written lat,lon under a CRS84 declaration (WFS 2.0 axis order re-labelled): each is swapped back per feature (`axis_swapped`); the Givors toilet, written lon,lat, is left alone.",
    ),
    Entry(
        "grandlyon-itineraire-fraicheur/parcs.geojson",
        "parks_gardens",
        note="4 self-intersecting polygons repaired with `make_valid` (`repaired`), kept as MultiPolygon."
        " `outside_commune` 1: Square de l'Observance (PAR-69385-09003) has code_insee 69385 (Lyon 5e) but its polygon lies in Lyon 9e, 604 m from the 5e's boundary: a defect of the record's arrondissement code, flagged (the parks' policy).",
    ),
    Entry(
        "grandlyon-parcs-jardins-2021/com_donnees_communales.comparcjardin_1_0_0.geojson",
        "parks_gardens",
        note="Sent after the 2024 layer: the 343 uids in common are updates, 21 parks only the 2021 export has are created. Its features are Polygons, promoted to the dataset's MultiPolygon (`promoted_to_multi`); 19 self-intersecting ones are repaired. `eau`/`toilettes` = `nr` (non renseigné) is the layer's missing-value marker, now declared in the parks schema's missingValues (a first run refused those 13 records: a pipeline fault, fixed)."
        " `outside_commune` 1: the same Square de l'Observance as in the 2024 layer (code 69385, polygon in Lyon 9e).",
    ),
    Entry(
        "grandlyon-itineraire-fraicheur/fontaines_potables.geojson",
        "drinking_fountains",
        note="True defect: the Métropole's fountain layer (id, insee, commune, source, gid) carries none of the national schema's four required fields (type_fontaine, conditions_acces, accessible_pmr, remplissage_contenant_possible). Its suggested profile maps `id`, `insee` (to `code_commune_insee`, also the commune column) and the geometry; `identifiant`, `anneepose`, `commune`, `source`, `gid` ride along under `odc:extra`. Identity, commune and position are valid, so every record is taken in as *incomplete* (`odc:missing` the four fields): published in the GeoJSON, OGC API and changes feed, left out of the national CSV.",
    ),
    Entry("grandlyon-marches/eco_economie.ecomarcheinstance_latest.json", "markets"),
    # national car-sharing base, three real versions in order
    Entry(
        "bnlc-lieux-covoiturage/bnlc-_2020-11-09_initial.csv",
        "carpool_places",
        note="`linked` 4: four pairs of places of two communes at exactly the same coordinates (0.0 m) and of the same type, "
        "which the dataset's same-place policy (50 m, same `type`) links (the second carries `odc:same_place_as`). They are not "
        "the same place: the base copied coordinates between unrelated places (Edon 16125-C-001 and Champniers "
        "16078-C-001; Charente 16089-C-001 and Pyrénées-Orientales 66024-C-002; 16028-C-002 and 66164-C-001; "
        "66008-C-002 and 66136-C-001). A true defect of the input; the link shows it (each is still published as its "
        "own feature), and a name match in the policy would also refuse the 2026 "
        "file's true duplicates below.",
    ),
    Entry(
        "bnlc-lieux-covoiturage/bnlc-_2026-05-19.csv",
        "carpool_places",
        note="`linked` 9 (10 in the run of 7f1feeb, before the same-place name filter of 5d27359; which pair no longer links was not checked): new places within 50 m of a place of another commune, same type. 8 are one place listed "
        "twice (Eperlecques 23 m, Labourse 17 m, Lillers 16 m, Fouquières-lès-Béthune 29 m, Divion 24 m, Barlin 35 m, "
        "Quai Gailleton 2 m, Cora Ermont 0 m): linked, rightly. One is a coordinate copy across départements "
        "(35243-C-001 `ZA des estuaires` at the exact point of 33358-C-001 Romagné): a true defect, shown by the "
        "link. One pair is named after two roads, D32 and D144, 13 m apart: perhaps one area at their junction, "
        "which the policy cannot tell. Against the 2020 version: 1641 places changed, 833 new. The 2020 places absent in 2026 stay: odc send publishes upserts; mirroring deletions of a snapshot is the connectors' job (issue 5).",
    ),
    Entry(
        "bnlc-lieux-covoiturage/bnlc-_2026-05-21.csv",
        "carpool_places",
        note="Identical to 05-19 for its 2473 places (`unchanged`); the one place removed between them (63308-C-001) is not deleted, for the same reason.",
    ),
    # delivery areas (CEREMA)
    Entry(
        "cerema-aires-livraison/exemple-grand-lyon.csv",
        "delivery_areas",
        "69123",
        note="`outside_commune` 3: the file is the Métropole's and is sent here as Lyon's (69123), but GL-2304, GL-2314 "
        "and GL-2315 are in Villeurbanne (their ADRESSE says 69100 Villeurbanne), 287 to 825 m outside Lyon: flagged, "
        "as the delivery areas' policy says. A sender acting for several communes should send each record as its own.",
    ),
    Entry(
        "cerema-aires-livraison/antibes/antibes_aires_livraison.csv",
        "delivery_areas",
        "06004",
        territory="departement:06",
        note="Refused, a true defect: no position at all (GEOM_XY and GEOM_WKT are empty on every row; the addresses are free text such as `Alisiers (rue des) au droit du numéro 100`), and the dataset's geometry is required. The other problems would only make the records incomplete: the v0.1 layout has no UUID (primary key of v1.0.0) and EMPRISE_LONGUEUR (alias of LONGUEUR) is in metres (`12`) where v1.0.0 wants centimetres (minimum 100).",
    ),
    Entry(
        "cerema-aires-livraison/antibes/antibes_aires_livraison--mr.csv",
        "delivery_areas",
        "06004",
        territory="departement:06",
        note="Refused, a true defect: GEOM_XY is the placeholder `1,1` on every row and GEOM_WKT is empty, so no record has a position (the suggestion does not take `1,1` for a position, so these show as `geometry_required`). No UUID and lengths in metres, as above, would only make them incomplete.",
    ),
    Entry(
        "cerema-aires-livraison/hauts-de-seine/aires-de-livraison.csv",
        "delivery_areas",
        territory="departement:92",
        note="Taken in as incomplete. Against v1.0.0 the export has no UUID column (the national primary key; the stream's identity is ID, which the file has: `92012025`...); `type` is `LIVRAISON` (enum: aire périodique, aire permanente, zone marchandises); lengths in metres (`10.0`, minimum 100 cm), widths the placeholder `0.0`; one address contains `/`, outside the ADRESSE pattern. Those values are left out (`odc:dropped`) and the fields listed in `odc:missing`. A first run of this branch refused all 1,007 records because a missing UUID counted as an identity problem: a pipeline fault (the primary key is not this dataset's identity), fixed in services/normalise/domain/canonical_feature.py with a unit test. The suggested profile reads each position from the `geo_shape` GeoJSON cell (the lat-first `geo_point_2d` is kept under `odc:extra`) and each record's commune from its `code_insee` column (92012, 92024...): read without error.",
    ),
    # Montpellier 2014, into the datasets that have a national schema
    Entry(
        "montpellier-opendata-2014/VilleMTP_MTP_Defibrillateurs/VilleMTP_MTP_Defibrillateurs.csv",
        "defibrillators",
        MONTPELLIER,
        territory=MONTPELLIER_T,
        note="Taken in as incomplete: a 2014 export of name, address, phone and position against GéoDAE 1.0.7, which requires the operator, the model, availability... (the suggested profile takes the row number `Id` as the identifier `num_serie`); phones written `04 67 ...` where the schema wants `+33...` are left out with a warning. Positions (decimal commas in Coord_X/Coord_Y, aliases of long_coor1/lat_coor1) read without error.",
    ),
    Entry(
        "montpellier-opendata-2014/VilleMTP_MTP_Defibrillateurs/VilleMTP_MTP_Defibrilateurs.geojson",
        "defibrillators",
        MONTPELLIER,
        territory=MONTPELLIER_T,
        note="Same records, taken in as incomplete for the same missing fields (updates of the CSV's features: same ids); here the positions are Lambert-93 with no CRS declared, recognised from their range and reprojected (no geometry error).",
    ),
    Entry(
        "montpellier-opendata-2014/VilleMTP_MTP_FontainesPublic/VilleMTP_MTP_FontainesPublic.csv",
        "drinking_fountains",
        MONTPELLIER,
        territory=MONTPELLIER_T,
        note="Refused, a true defect: the CSV has no position at all (no coordinate, address or geometry column: NOM, LOCALIS, QUARTIER... are names and district labels); the GeoJSON export of the same layer below has the positions and gets in. It also has none of the required national fields.",
    ),
    Entry(
        "montpellier-opendata-2014/VilleMTP_MTP_FontainesPublic/VilleMTP_MTP_FontainesPublic.geojson",
        "drinking_fountains",
        MONTPELLIER,
        territory=MONTPELLIER_T,
        note="Taken in as incomplete: none of the required national fields; the undeclared Lambert-93 positions are read without error.",
    ),
    Entry(
        "montpellier-opendata-2014/VilleMTP_MTP_ParkingOuvrage/VilleMTP_MTP_ParkingOuv.csv",
        "parking",
        MONTPELLIER,
        territory=MONTPELLIER_T,
        note="Refused, a true defect: the identifier is the row number (`1`...`22`), where the national schema's `id` is the one the national access point issues, `<insee>-P-<nnn>`. It is the dataset's identity (how the national base tells car parks apart), so the pipeline refuses it rather than invent `34172-P-001` from a row number; the commune must ask for its car parks' national ids. Missing type_usagers, gratuit, hauteur_max, num_siret would only make them incomplete.",
    ),
    Entry(
        "montpellier-opendata-2014/VilleMTP_MTP_EtabliPublic/VilleMTP_MTP_EtabliPublic.csv",
        "public_facilities",
        MONTPELLIER,
        territory=MONTPELLIER_T,
        note="Refused, a true defect: no SCDL identifier. EQUIP_UID, the dataset's identity, is the commune's INSEE code, 8 digits and a 3-digit number (`^[0-9A-B]{5}-[0-9]{8}-[0-9]{3}`); the file's only id is a local number (`513`, taken by the suggested profile), which cannot be turned into one without inventing it. The CSV also has no position (`COORD1_05`/`COORD2_05` are map-grid cells such as `H2`) and no SCDL field but the name (LIBEL, alias of EQUIP_NOM). Latin-1, `;`, DBF headers: read correctly.",
    ),
    Entry(
        "montpellier-opendata-2014/VilleMTP_MTP_EtabliPublic/VilleMTP_MTP_EtabliPublic.geojson",
        "public_facilities",
        MONTPELLIER,
        territory=MONTPELLIER_T,
        note="Same records, refused for the same identifier (here the positions are present).",
    ),
    Entry(
        "montpellier-opendata-2014/OSM_MTP_Recyclage/OSM_MTP_Recyclage.geojson",
        "recycling_points",
        MONTPELLIER,
        territory=MONTPELLIER_T,
        note="An OpenStreetMap extract of Montpellier's recycling points, sent as the Métropole de Montpellier would publish it under its own territory (recycling_points is a territory dataset: its commune codes and area are the deployment's). Taken in as incomplete: every point's `type` is `Points Recyclage`, outside the dataset's list of types, so the value is left out with a warning (`dropped:type:enum`) and `type` is what they lack; the commune is filled from `--commune` (`filled`).",
    ),
    # the schema authors' own example files, into the catalogue's datasets
    Entry("schema-repo-examples/etalab--schema-lieux-covoiturage/exemple-valide.csv", "carpool_places"),
    Entry(
        "schema-repo-examples/etalab--schema-lieux-covoiturage/exemple-invalide.csv",
        "carpool_places",
        note="As its authors intend, the date `24-06-2019` breaks its field's rule: with conformance levels the value is left out and the record is taken in as incomplete (the date field in `odc:missing`); the other row (same id as exemple-valide) is identical to what that file stored.",
    ),
    Entry("schema-repo-examples/etalab--schema-stationnement/exemple-valide.csv", "parking"),
    Entry(
        "schema-repo-examples/etalab--schema-stationnement/exemple-invalide.csv",
        "parking",
        note="As intended: id `P-001` breaks the pattern, `inconnu` is outside tarif_pmr's enum.",
    ),
    Entry("schema-repo-examples/openmaraude--schema-stationstaxi/exemple-valide.csv", "taxi_ranks"),
    Entry(
        "schema-repo-examples/openmaraude--schema-stationstaxi/exemple-non-valide.csv",
        "taxi_ranks",
        note="Accepted, as frictionless accepts it: `lon,lat` without space is a valid geopoint, a phone without its 0 is text, the 2 extra columns are ignored. The 1 update: that phone differs from the valid file's.",
    ),
    Entry("schema-repo-examples/datagouv--schema-fontaine-eau/exemple-valide.csv", "drinking_fountains"),
    Entry(
        "schema-repo-examples/betagouv--SCDL-Subvention-DataSubvention/exemples/exemple_valide.csv",
        "subsidies",
        "06004",
    ),
    Entry(
        "schema-repo-examples/betagouv--SCDL-Subvention-DataSubvention/exemples/exemple_invalide_erreurs_cellules.csv",
        "subsidies",
        "06004",
        note="The schema authors' invalid example, 29 rows: with conformance levels most broken cells (percentages over 1, RNA `W3222`, `_` in a period) are left out with a warning and their records taken in (incomplete where the field is required). Refused, as the authors intend: row 7, whose idAttribuant is a SIREN (`218601946`) where the SIRET of 14 digits is required, and row 10, with no amount (`montant`); both are fields of the dataset's identity (attributor, date, beneficiary, object, amount), which refuse. Counted `stale`: rows 3 and 4 are one subsidy twice (same identity; one has the SIRET, the other the RNA of the beneficiary): the first wins. 26 of 29 (89.7%): the three are defects the example was written to show. Two rows they meant as invalid are taken in: the suggested profile reads `no`/`yes` in notificationUE as false/true and a `,` between two listed natures as the schema's `;` (value maps the user sees and can remove before saving). Its French dates and decimal commas are accepted by design (docs/validation.md).",
    ),
    Entry(
        "schema-repo-examples/betagouv--SCDL-Subvention-DataSubvention/exemples/exemple_invalide_erreurs_colonnes.csv",
        "subsidies",
        "06004",
        note="Same cells, same outcome; re-ordered columns and `NOM_Beneficiaire` are mapped by name (`renamed`).",
    ),
    Entry(
        "schema-repo-examples/betagouv--SCDL-Subvention-DataSubvention/exemple-duplicate-column.csv",
        "subsidies",
        "06004",
        note="Refused as a file, as frictionless refuses it: two `notificationUE` columns, no way to know which holds the value.",
    ),
)

# Why the files under the 90% target miss it (checked against the run's tables; docs/data-quality.md prints it)
BELOW_TARGET_WHY = (
    "Why the files under 90% miss it: each for defects of its data, none for a reader, a suggestion or a territory "
    "limit of ours (the one pipeline fault this run found, a missing delivery-area UUID counted as an identity "
    "problem, is fixed: the Hauts-de-Seine export went from 0 to 1,007 of 1,007). No position at all: both Antibes "
    "delivery-area files (empty GEOM_XY/GEOM_WKT, or the placeholder `1,1` on every row) and Montpellier's fountain "
    "CSV (its GeoJSON twin, with positions, gets in whole). No identifier in the national form, where the identifier "
    "is the dataset's identity: Montpellier's car parks (`1`...`22` for the national `<insee>-P-<nnn>`) and public "
    "facilities (`513` for the SCDL EQUIP_UID `<insee>-<8 digits>-<nnn>`); the pipeline will not invent one. The "
    "rest are the schema authors' own invalid examples, refused where their authors meant them to be."
)

EXCLUDED: tuple[Excluded, ...] = (
    Excluded(
        "grandlyon-velov-snapshots/*",
        "Vélo'v availability feed: not one of the programme's datasets (a real-time connector's input, issue 5).",
    ),
    Excluded(
        "bnlc-lieux-covoiturage/datasets.csv, disabled_datasets.csv", "lists of the BNLC's source datasets, not places."
    ),
    Excluded(
        "cerema-aires-livraison/schema.json, schemas-schema-data-gouv-fr/*",
        "schemas, not data (the catalogue copies the published ones).",
    ),
    Excluded(
        "montpellier-opendata-2014/VilleMTP_MTP_AttribSub/*.ods",
        "an OpenDocument spreadsheet: odc send reads CSV, GeoJSON and JSON; export the sheet as CSV first.",
    ),
    Excluded(
        "montpellier-opendata-2014/VilleMTP_MTP_PlacesGIG/*",
        "the CSV has neither identifier nor position (positions only in the KML, which odc send does not read).",
    ),
    Excluded(
        "montpellier-opendata-2014/VilleMTP_MTP_PlacesReserv/*",
        "one layer mixing disabled, delivery and taxi kerb places with only a date, a type and a position: no canonical dataset takes it whole and it has no identifier.",
    ),
    Excluded(
        "montpellier-opendata-2014/VilleMTP_MTP_EspacesVertsGlobal/*",
        "parks_gardens is the Métropole de Lyon's own canonical layout (no national schema): its identifier is the Métropole's `PAR-<insee>-<n>` uid, which Montpellier's layer (numbered `DOSSIER` 1.0, 2.0...) does not have; sending it would only measure that the two local layouts differ. The territory itself is no obstacle any more (the recycling points below run under Montpellier's).",
    ),
    Excluded(
        "montpellier-opendata-2014/VilleMTP_MTP_BureauxVote/*",
        "polling *areas* (one Polygon per bureau), not polling stations: the polling_stations dataset holds the Point where people vote, which this layer does not give.",
    ),
    Excluded(
        "schema-repo-examples/etalab--schema-irve, -stationnement-cyclable, MTES-MCT--acceslibre-schema, FuturoCite--*",
        "examples of schemas the programme does not use (EV charging, bicycle parking, building accessibility, Belgian standards); they are still checked against frictionless by tests/conformance.",
    ),
)
