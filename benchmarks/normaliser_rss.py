"""The normaliser's peak RSS stage by stage (issue #16): parent and relay child, as the suite measures it.

Starts a throwaway real stack (as the suite does), runs the suite's three throughput stages with modest sizes
(points, spread polygons, dense polygons) and after each prints the CPU per event of each process tree (as the
suite measures it), VmHWM (the suite's figure: the parent's peak plus
each child's peak), the current RSS and /proc/PID/smaps_rollup's anonymous/file split, for the parent and each
child. Usage::

    .venv/bin/python -m benchmarks.normaliser_rss --points 20000 --polygons 5000 --polygons-dense 2500
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from benchmarks import write_count
from benchmarks.pipeline_throughput import build_events, build_spread_events, signed_values
from benchmarks.profile_services import children, hwm_mb
from benchmarks.stack import BenchStack
from benchmarks.suite import THROUGHPUT_STAGES, pipeline_throughput


def status_kb(pid: int, key: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def rollup(pid: int) -> dict[str, int]:
    out: dict[str, int] = {}
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
            k, v, *_ = line.split()
            out[k.rstrip(":")] = int(v)
    except OSError:
        pass
    return out


def snapshot(pid: int) -> dict[str, Any]:
    procs = {"parent": pid} | {f"child {c}": c for c in children(pid)}
    out: dict[str, Any] = {}
    for name, p in procs.items():
        r = rollup(p)
        out[name] = {
            "hwm_mb": round(hwm_mb(p), 1),
            "rss_mb": round(status_kb(p, "VmRSS") / 1024, 1),
            "anon_mb": round(r.get("Anonymous", 0) / 1024, 1),
            "file_mb": round((r.get("Rss", 0) - r.get("Anonymous", 0)) / 1024, 1),
            "threads": status_kb(p, "Threads"),
        }
    out["suite_peak_mb"] = round(hwm_mb(pid) + sum(hwm_mb(c) for c in children(pid)), 1)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--points", type=int, default=20_000)
    parser.add_argument("--polygons", type=int, default=5_000)
    parser.add_argument("--polygons-dense", type=int, default=2_500)
    parser.add_argument("--input-form", choices=("bulk", "single"), default="single")
    parser.add_argument("--out", default="")
    parser.add_argument("--env", action="append", default=[], help="NAME=VALUE for the services (repeatable)")
    args = parser.parse_args()
    stack = BenchStack(service_roles=True)
    stack.start(extra_env={"ODC_PUBLISH_MAX_DELAY_SECONDS": "0.25", **dict(e.split("=", 1) for e in args.env)})
    result: dict[str, Any] = {"settings": vars(args)}
    try:
        assert stack.db is not None
        write_count.ensure_extension(stack.db.dsn)
        svc = stack.services["normalise"]
        pid = svc.pid()
        assert pid is not None
        time.sleep(2)
        result["idle"] = snapshot(pid)
        print("idle", json.dumps(result["idle"]), flush=True)
        seq = time.time_ns() // 1000
        for i, (label, dataset, _, option) in enumerate(THROUGHPUT_STAGES):
            n = getattr(args, option)
            if n <= 0:
                continue
            if label == "polygons":
                events = build_spread_events(dataset, n, seq=seq + 10 + i)
            else:
                events = build_events(dataset, n, seq=seq + 10 + i)
                if label == "polygons_dense":
                    events = [e.__class__(**{**e.__dict__, "feature_id": e.feature_id + "-d"}) for e in events]
            values = signed_values(stack, events, args.input_form)
            run = pipeline_throughput(stack, dataset, events, values, measure=True)
            time.sleep(1)
            cpu = {k: round(v) for k, v in run["cpu_us_per_event"].items()}
            result[label] = {"events_per_second": round(run["events_per_second"]), "cpu_us_per_event": cpu}
            result[label] |= snapshot(pid)
            print(label, json.dumps(result[label]), flush=True)
    finally:
        stack.stop()
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
