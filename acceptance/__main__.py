"""``make acceptance``: every programme-relevant real file through ``odc send --profile`` on a throwaway stack (a
real Kafka broker, a real PostGIS, the normaliser and the publisher as processes), then docs/data-quality.md.

Each file goes through the profile ``odc profile suggest`` proposes for it (with the confirmed edits the
manifest keeps), under the territory its data belongs to: files are grouped by territory and the normaliser
and publisher are restarted with that ``ODC_TERRITORY`` for each group (acceptance/manifest.py).
Per file: records in, conforming and incomplete (by missing field, from the normaliser's counters and the
stored ``odc:missing``), repaired by kind, refused by reason and by field and rule (the ``rejection`` rows the
file produced). Files go one at a time, each with its own sequence, so every figure belongs to exactly one
file. After each group, the latest version of every dataset with a national schema is downloaded as the
national-layout CSV and validated with frictionless against that schema. ``--data`` points at the
real-data folder (default ../shared/data/real beside the checkout; ``make acceptance DATA=folder``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from frictionless import Resource, Schema

from acceptance.manifest import BELOW_TARGET_WHY, ENTRIES, EXCLUDED, Entry
from deploy.local.kafka import KafkaBroker
from deploy.local.kafka_access import SERVICE_USERS
from deploy.local.ports import free_port
from deploy.local.postgres import PostgresCluster
from deploy.local.services import ServiceProcess, service_env
from services.contract.datasets.catalogue import DEFINITIONS_DIR, DatasetCatalogue
from services.ingest.domain.source_profiles import profile_from_dict, profile_to_dict
from services.ingest.domain.source_records import UnreadableFile
from services.ingest.entrypoints.profile_commands import suggestion_for
from services.ingest.entrypoints.send_command import send_file
from services.ingest.settings import IngestSettings

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "real"  # shared/ sits beside the checkout
REPORT = ROOT / "docs" / "data-quality.md"


@dataclass
class FileResult:
    entry: Entry
    records: int = 0
    accepted: Counter[str] = field(default_factory=Counter)  # outcome -> count
    levels: Counter[str] = field(default_factory=Counter)  # conforming / incomplete -> records taken in
    missing: Counter[str] = field(default_factory=Counter)  # field -> incomplete features (of this file) lacking it
    repaired: Counter[str] = field(default_factory=Counter)  # correction kind -> features
    rejected: Counter[str] = field(default_factory=Counter)  # reason -> records
    rules: Counter[tuple[str, str]] = field(default_factory=Counter)  # (field, rule) -> records
    mapped: int = 0  # source columns the suggested profile maps to a field (plus id and position columns)
    extra_columns: tuple[str, ...] = ()  # columns kept under odc:extra
    required_missing: tuple[str, ...] = ()  # required schema fields nothing in the file maps to
    position: str = ""
    examples: dict[tuple[str, str], str] = field(default_factory=dict)
    refused_file: str | None = None

    @property
    def accepted_total(self) -> int:
        return sum(self.accepted.values())


@dataclass
class ExportCheck:
    """The national-layout CSV of a dataset's latest version, validated with frictionless against the national
    schema (the catalogue's copy of it)."""

    dataset: str
    version: int = 0
    rows: int = 0
    left_out: str = ""
    valid: bool = False
    errors: list[str] = field(default_factory=list)


def _metrics(base_url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(f"{base_url}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    out: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        head, value = line.rsplit(" ", 1)
        name, _, labels = head.partition("{")
        pairs = tuple(sorted(tuple(p.split("=", 1)) for p in labels.rstrip("}").split(",") if "=" in p))
        out[(name, tuple((k, v.strip('"')) for k, v in pairs))] = float(value)
    return out


def _sum(m: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return sum(v for (n, ls), v in m.items() if n == name and all((k, v2) in ls for k, v2 in labels.items()))


def _correction_kind(c: str) -> str:
    return c.split(":", 1)[0] if c.startswith(("renamed:", "filled:", "outside_commune:")) else c


def run_file(
    entry: Entry, data: Path, broker: KafkaBroker, db: PostgresCluster, normaliser: ServiceProcess, seq: int
) -> FileResult:
    result = FileResult(entry)
    path = data / entry.path
    with psycopg.connect(db.dsn) as conn:
        last_rejection = conn.execute("SELECT coalesce(max(seq), 0) FROM rejection").fetchone()[0]  # type: ignore[index]
    before = _metrics(normaliser.base_url)
    # the sender's signing key is registered in the stack's own database, as `odc send` does on a real one
    settings = IngestSettings(
        # as the ingest service's principal: the corpus is loaded at full speed, not at a commune's byte-rate quota
        kafka_bootstrap=broker.bootstrap,
        database_url=db.dsn,
        **broker.access.settings_kwargs(SERVICE_USERS["ingest"]),
        **{"ODC_TERRITORY": entry.territory},  # type: ignore[arg-type]
    )
    try:
        suggestion = suggestion_for(path, entry.dataset, territory=entry.territory)
        profile = profile_from_dict({**profile_to_dict(suggestion.profile), **entry.profile_edit})
        result.mapped = len(profile.used_columns)
        result.extra_columns = tuple(c for c in suggestion.unmapped_columns if c not in profile.used_columns)
        result.required_missing = tuple(f for f, required in suggestion.missing_fields if required)
        result.position = suggestion.geometry_why
        summary = asyncio.run(
            send_file(
                path,
                entry.dataset,
                entry.commune,
                settings,
                sequence=seq,
                source=f"acceptance:{path.name}",
                profile=profile,
            )
        )
    except UnreadableFile as bad:
        result.refused_file = str(bad)
        return result
    result.records = summary.events
    deadline = time.monotonic() + 600
    target = _sum(before, "odc_events_received_total") + summary.events
    while _sum(_metrics(normaliser.base_url), "odc_events_received_total") < target:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{entry.path}: the normaliser did not read all {summary.events} events")
        time.sleep(0.5)
    after = _metrics(normaliser.base_url)
    for outcome in ("created", "updated", "unchanged", "deleted", "linked"):
        n = _sum(after, "odc_events_accepted_total", dataset=entry.dataset, outcome=outcome) - _sum(
            before, "odc_events_accepted_total", dataset=entry.dataset, outcome=outcome
        )
        if n:
            result.accepted[outcome] = int(n)
    for level in ("conforming", "incomplete"):
        n = _sum(after, "odc_records_conformance_total", dataset=entry.dataset, level=level) - _sum(
            before, "odc_records_conformance_total", dataset=entry.dataset, level=level
        )
        if n:
            result.levels[level] = int(n)
    for name, label in (
        ("odc_events_stale_total", "stale (same key twice in the file)"),
        ("odc_events_duplicate_total", "duplicate event"),
    ):
        n = _sum(after, name, dataset=entry.dataset) - _sum(before, name, dataset=entry.dataset)
        if n:
            result.rejected[label] = int(n)
    with psycopg.connect(db.dsn) as conn:
        for reason, errors in conn.execute(
            "SELECT reason, errors FROM rejection WHERE seq > %s ORDER BY seq", (last_rejection,)
        ):
            result.rejected[reason] += 1
            for e in {(e.get("field") or "", e.get("rule") or ""): e for e in errors}.values():
                key = (e.get("field") or "", e.get("rule") or "")
                result.rules[key] += 1
                result.examples.setdefault(key, "" if e.get("value") is None else str(e.get("value"))[:60])
        for corrections, missing in conn.execute(
            "SELECT corrections, attributes -> 'odc:missing' FROM canonical_feature "
            "WHERE dataset = %s AND sequence = %s AND NOT deleted",
            (entry.dataset, seq),
        ):
            for kind in {_correction_kind(c) for c in corrections}:
                result.repaired[kind] += 1
            for name in missing or ():
                result.missing[str(name)] += 1
    return result


def check_export(dataset: str, db: PostgresCluster, publisher: ServiceProcess) -> ExportCheck:
    """Wait until the publisher's latest version holds every stored feature of DATASET, then validate its
    national-layout CSV with frictionless against the national schema."""
    check = ExportCheck(dataset)
    with psycopg.connect(db.dsn) as conn:
        stored = conn.execute(
            "SELECT count(*) FROM canonical_feature WHERE dataset = %s AND NOT deleted", (dataset,)
        ).fetchone()[0]  # type: ignore[index]
    if not stored:
        check.errors.append("nothing stored: no version to export")
        return check
    deadline = time.monotonic() + 180
    while True:
        with urllib.request.urlopen(f"{publisher.base_url}/datasets/{dataset}", timeout=10) as resp:
            doc = json.loads(resp.read())
        if doc["feature_count"] == stored and doc["latest_version"]:
            break
        if time.monotonic() > deadline:
            check.errors.append(f"the publisher did not publish the {stored} stored features within 180 s")
            return check
        time.sleep(1)
    check.version = doc["latest_version"]
    url = f"{publisher.base_url}/datasets/{dataset}/versions/{check.version}/features.csv"
    with urllib.request.urlopen(url, timeout=60) as resp:
        body = resp.read()
        check.left_out = resp.headers.get("X-Odc-Left-Out") or ""
    schema = Schema.from_descriptor(json.loads((DEFINITIONS_DIR / dataset / "schema.json").read_text(encoding="utf-8")))
    report = Resource(body, format="csv", schema=schema).validate()
    check.rows = report.tasks[0].stats.get("rows") or 0 if report.tasks else 0
    check.valid = report.valid
    check.errors += [
        f"row {r[0]}, {r[1]}: {r[2]} ({r[3]})" for r in report.flatten(["rowNumber", "fieldName", "type", "note"])[:5]
    ]
    return check


def _by_count(c: Counter[Any]) -> list[tuple[Any, int]]:
    """Most common first, ties by key: the same run writes the same report."""
    return sorted(c.items(), key=lambda kv: (-kv[1], kv[0]))


def _fmt(c: Counter[str]) -> str:
    return ", ".join(f"{k} {v}" for k, v in _by_count(c)) or "—"


def _missing(r: FileResult) -> str:
    if not r.levels.get("incomplete"):
        return "0"
    by_field = ", ".join(f"{k} {v}" for k, v in _by_count(r.missing))
    return f"{r.levels['incomplete']} ({by_field})" if by_field else str(r.levels["incomplete"])


def write_report(results: list[FileResult], exports: list[ExportCheck], seconds: float, path: Path) -> None:
    lines = [
        "# Data quality: the real files through the pipeline",
        "",
        "Produced by `make acceptance` (acceptance/__main__.py): each file below went through `odc send --profile` into a",
        "throwaway stack (real Kafka broker, real PostGIS, normaliser and publisher as processes), one file at a time,",
        "through the source profile `odc profile suggest` proposed for it (plus the confirmed edits the manifest keeps,",
        "with why), under the territory its data belongs to: the normaliser and the publisher were started with that",
        "`ODC_TERRITORY` and the profile was suggested under it (*territory* column; acceptance/manifest.py says why",
        'the national files run under the default deployment: the setting cannot say "all of France", and a national',
        "dataset's positions and commune codes are checked against France and the whole COG whatever the territory).",
        "",
        "*profile* counts the file's columns the profile uses (fields, identity, commune, position), the columns kept",
        "with each record under `odc:extra` because no field takes them, and the national schema's required fields",
        "nothing in the file maps to. *conforming* and *incomplete* are the records taken in (created, updated,",
        "identical to what was stored, or linked to another commune's feature of the same place); an *incomplete*",
        "record has a valid identity, commune and position but lacks fields the national schema requires: it is",
        "stored and published in the GeoJSON, OGC API and changes feed with `odc:missing`, and left out of the",
        "national-layout CSV (docs/validation.md). Its breakdown counts, per missing field, the incomplete features",
        "the file wrote. *refused* counts refused records by reason, then by field and rule below (one record may",
        "break several rules). *in* is (conforming + incomplete) / records. Explanations follow the table; they are",
        f"part of the manifest (acceptance/manifest.py). Run time: {seconds:.0f} s.",
        "",
        "| file | territory | dataset | profile: used / extra / required missing | records | conforming | incomplete (by missing field) | refused (by reason) | in | repaired (features, by kind) |",
        "|---|---|---|---|---:|---:|---|---|---:|---|",
    ]
    for r in results:
        t = r.entry.territory
        if r.refused_file:
            lines.append(
                f"| `{r.entry.path}` | {t} | {r.entry.dataset} | — | — | — | — | file refused: {r.refused_file} | — | — |"
            )
            continue
        taken = r.levels.get("conforming", 0) + r.levels.get("incomplete", 0)
        share = f"{taken / r.records:.0%}" if r.records else "—"
        prof = f"{r.mapped} / {len(r.extra_columns)} / {len(r.required_missing)}"
        lines.append(
            f"| `{r.entry.path}` | {t} | {r.entry.dataset} | {prof} | {r.records} | {r.levels.get('conforming', 0)} "
            f"| {_missing(r)} | {_fmt(r.rejected)} | {share} | {_fmt(r.repaired)} |"
        )
    counted = [r for r in results if r.records]
    taken_of = {id(r): r.levels.get("conforming", 0) + r.levels.get("incomplete", 0) for r in counted}
    met = [r for r in counted if taken_of[id(r)] >= 0.9 * r.records]
    total_in = sum(r.records for r in counted)
    total_ok = sum(taken_of.values())
    lines += [
        "",
        f"Files with at least 90% of their records in: {len(met)} of {len(counted)} (plus {len(results) - len(counted)} "
        f"refused as a file); records in overall: {total_ok} of {total_in} ({(total_ok / total_in if total_in else 0):.0%}).",
        "Below 90%: "
        + (", ".join(f"`{r.entry.path}` ({taken_of[id(r)]} of {r.records})" for r in counted if r not in met) or "none")
        + "; each is explained below.",
        "",
        BELOW_TARGET_WHY,
        "",
        "## National-layout exports against their national schemas",
        "",
        "After the last file of each dataset, the publisher's latest version of every dataset with a national schema",
        "was downloaded as CSV (`/datasets/{id}/versions/{n}/features.csv`) and validated with frictionless against",
        "the national schema (the catalogue's copy, services/contract/datasets/definitions/{id}/schema.json).",
        "",
        "| dataset | version | CSV rows | left out (X-Odc-Left-Out) | frictionless |",
        "|---|---:|---:|---|---|",
    ]
    for x in exports:
        verdict = "valid" if x.valid else ("INVALID: " if x.version else "") + "; ".join(x.errors)
        left_out = x.left_out.split(":", 1)[0]  # the count; the rest names the throwaway stack's URL
        lines.append(f"| {x.dataset} | {x.version} | {x.rows} | {left_out or '—'} | {verdict} |")
    lines += ["", "## Refusals by field and rule, and why", ""]
    for r in results:
        if (
            not r.rules
            and not r.repaired
            and not r.entry.note
            and not r.refused_file
            and not r.required_missing
            and not r.extra_columns
        ):
            continue
        lines.append(f"### `{r.entry.path}` → {r.entry.dataset}")
        lines.append("")
        if r.rules:
            lines += ["| field | rule | records | example value |", "|---|---|---:|---|"]
            for (fld, rule), n in _by_count(r.rules):
                lines.append(f"| {fld} | {rule} | {n} | `{r.examples.get((fld, rule), '')}` |")
            lines.append("")
        if r.position or r.extra_columns or r.required_missing:
            lines.append(f"Profile: position from {r.position or '—'}.")
            if r.extra_columns:
                lines.append(f"Columns kept under `odc:extra` (no field takes them): {', '.join(r.extra_columns)}.")
            if r.required_missing:
                lines.append(f"Required fields nothing in the file maps to: {', '.join(r.required_missing)}.")
            if r.entry.profile_edit:
                lines.append(
                    f"Confirmed edit of the suggestion: `{json.dumps(r.entry.profile_edit, ensure_ascii=False)}` — {r.entry.edit_why}"
                )
            lines.append("")
        if r.entry.note:
            lines += [r.entry.note, ""]
    lines += ["## Files left out", "", "| file | why |", "|---|---|"]
    lines += [f"| `{x.path}` | {x.reason} |" for x in EXCLUDED]
    lines.append("")
    path.write_text("\n".join(lines), encoding="utf-8")


def start_services(work: Path, broker: KafkaBroker, db: PostgresCluster, territory: str) -> list[ServiceProcess]:
    """The normaliser and the publisher, as processes, under TERRITORY (ODC_TERRITORY)."""
    services: list[ServiceProcess] = []
    for name in ("normalise", "publish"):
        port = free_port()
        env = service_env(
            name,
            kafka_bootstrap=broker.bootstrap,
            kafka_access=broker.access,
            database_url=db.dsn,
            port=port,
            # odc send here stands for the commune itself; the path authorisation is not what is measured
            extra={"ODC_NORMALISE_REQUIRE_SIGNED_EVENTS": "false", "ODC_TERRITORY": territory},
        )
        svc = ServiceProcess(name, work / "run", port, env)
        svc.start()
        services.append(svc)
    for svc in services:
        svc.wait_ready(timeout=120)
    return services


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--report", type=Path, default=REPORT)
    parser.add_argument("--only", help="only the files whose path contains this text")
    args = parser.parse_args()
    if not args.data.is_dir():
        print(f"no real-data folder at {args.data}: nothing to accept", file=sys.stderr)
        return 0
    entries = [e for e in ENTRIES if (args.data / e.path).is_file() and (not args.only or args.only in e.path)]
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="odc-acceptance-") as tmp:
        work = Path(tmp)
        (work / "kafka").mkdir()
        (work / "pg").mkdir()
        (work / "run").mkdir()
        broker = KafkaBroker(work / "kafka", free_port(), free_port())
        db = PostgresCluster(work / "pg", free_port())
        broker.start(timeout=120)
        results: list[FileResult] = []
        exports: dict[str, ExportCheck] = {}
        try:
            db.start(timeout=120)
            try:
                # one territory at a time (the manifest's order kept within each): the normaliser and the
                # publisher are started under that territory's ODC_TERRITORY, as a deployment serving it would be
                territories = list(dict.fromkeys(e.territory for e in entries))
                for territory in territories:
                    group = [e for e in entries if e.territory == territory]
                    services = start_services(work, broker, db, territory)
                    try:
                        for entry in group:
                            seq = 1_000_000 + entries.index(entry) + 1
                            r = run_file(entry, args.data, broker, db, services[0], seq=seq)
                            print(
                                json.dumps(
                                    {
                                        "file": entry.path,
                                        "territory": territory,
                                        "in": r.records,
                                        "accepted": r.accepted_total,
                                        "levels": dict(r.levels),
                                        "rejected": dict(r.rejected),
                                        "refused": r.refused_file,
                                    },
                                    ensure_ascii=False,
                                ),
                                flush=True,
                            )
                            results.append(r)
                        catalogue = DatasetCatalogue.load(territory=territory)
                        for dataset in dict.fromkeys(e.dataset for e in group):
                            definition = catalogue.get(dataset)
                            if definition is not None and definition.national_schema is not None:
                                exports[dataset] = check_export(dataset, db, services[1])
                                print(json.dumps(exports[dataset].__dict__, ensure_ascii=False), flush=True)
                    finally:
                        for svc in services:
                            svc.stop()
            finally:
                db.stop()
        finally:
            broker.stop()
    results.sort(key=lambda r: entries.index(r.entry))
    write_report(results, sorted(exports.values(), key=lambda x: x.dataset), time.monotonic() - started, args.report)
    print(f"wrote {args.report}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
