"""Per-row cost of the stream's compiled validator against frictionless (the reference), on the same rows.

Run: .venv/bin/python -m tests.conformance.validator_benchmark   (figures go into docs/validation.md by hand,
with the machine they ran on). Rows: the BNLC sample (carpool places, 0.2.8 schema, 19 columns) repeated.
"""

from __future__ import annotations

import json
import platform
import tempfile
import time
import warnings
from pathlib import Path

from frictionless import Detector, Resource, Schema

from services.ingest.domain.source_records import read_csv
from services.normalise.domain.attribute_validation import CompiledSchema

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "bnlc" / "bnlc-sample.csv"
SCHEMA = Path(__file__).resolve().parents[2] / "services/contract/datasets/definitions/carpool_places/schema.json"


def main() -> None:
    warnings.simplefilter("ignore")
    data = FIXTURE.read_bytes()
    schema = json.loads(SCHEMA.read_text(encoding="utf-8"))
    records = [r.attributes for r in read_csv(data)]
    rows = records * max(1, 20_000 // len(records))

    started = time.perf_counter()
    compiled = CompiledSchema(schema)
    compile_s = time.perf_counter() - started
    started = time.perf_counter()
    invalid = sum(1 for r in rows if compiled.validate(r).errors)
    ours = (time.perf_counter() - started) / len(rows)

    with tempfile.TemporaryDirectory() as tmp:
        body = data.split(b"\n", 1)
        big = body[0] + b"\n" + b"".join([body[1].rstrip(b"\n") + b"\n"] * max(1, 20_000 // len(records)))
        (Path(tmp) / "rows.csv").write_bytes(big)
        resource = Resource(
            path="rows.csv", basepath=tmp, schema=Schema.from_descriptor(schema), detector=Detector(schema_sync=True)
        )
        started = time.perf_counter()
        report = resource.validate(limit_errors=1_000_000)
        ref_rows = int(report.tasks[0].stats["rows"])
        ref = (time.perf_counter() - started) / ref_rows

    print(f"machine: {platform.processor() or platform.machine()}, python {platform.python_version()}")
    print(f"compile once: {compile_s * 1e3:.2f} ms")
    print(f"compiled validator: {ours * 1e6:.1f} µs/row over {len(rows)} rows ({invalid} invalid)")
    print(f"frictionless 5.21 validate: {ref * 1e6:.1f} µs/row over {ref_rows} rows (reading the CSV included)")
    print(f"ratio: {ref / ours:.0f}x")


if __name__ == "__main__":
    main()
