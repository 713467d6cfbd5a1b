"""The normaliser's outbox relay runs as a plain child process (services/normalise/entrypoints/relay_process.py):
no multiprocessing resource tracker beside it, restarted by the parent when it dies, gone when the parent is
killed -9, and the changes it relays still reach the publisher after a restart."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from tests.integration.pipeline_harness import Pipeline, toilet_event, wait_for


def _children(pid: int) -> dict[int, str]:
    out: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rpartition(")")[2].split()[1])
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, ValueError, IndexError):
            continue
        if ppid == pid:
            out[int(entry.name)] = cmdline
    return out


def _relay_child(parent: int) -> int | None:
    found = [p for p, cmd in _children(parent).items() if "services.normalise.entrypoints.relay_process" in cmd]
    return found[0] if len(found) == 1 else None


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_the_relay_child_is_one_plain_process_restarted_when_it_dies_and_gone_with_its_parent(
    pipeline: Pipeline,
) -> None:
    normaliser = pipeline.services["normalise"]
    parent = normaliser.pid()
    assert parent is not None
    child = wait_for("the relay child", lambda: _relay_child(parent))
    assert not any("resource_tracker" in cmd for cmd in _children(parent).values()), _children(parent)

    # killed -9: the parent starts another, counts it, and a change sent after it still reaches the publisher
    restarts = pipeline.metric("normalise", "odc_transient_failures_total", operation="relay_process")
    os.kill(child, signal.SIGKILL)
    second = wait_for("a new relay child", lambda: c if (c := _relay_child(parent)) not in (None, child) else None)
    assert pipeline.metric("normalise", "odc_transient_failures_total", operation="relay_process") == restarts + 1
    before = pipeline.sql("SELECT count(*) FROM change_log WHERE feature_id = 'relay-child-1'")[0][0]
    pipeline.produce_events([toilet_event("relay-child-1", seq=1, adresse="1 rue du relais")])
    wait_for(
        "the change relayed by the new child",
        lambda: (
            pipeline.sql("SELECT count(*) FROM change_log WHERE feature_id = 'relay-child-1'")[0][0] > before or None
        ),
    )
    assert wait_for("the relay healthy again", lambda: "relay" not in _unready(pipeline) or None)

    # the parent killed -9: the child does not stay behind relaying on its own
    os.kill(parent, signal.SIGKILL)
    deadline = time.monotonic() + 15
    while _alive(second) and time.monotonic() < deadline:
        time.sleep(0.2)
    try:
        assert not _alive(second), "the relay child outlived its parent"
    finally:
        wait_for("the normaliser's pid gone", lambda: not _alive(parent) or None)
        normaliser.start()  # the other tests share this pipeline
        normaliser.wait_ready(timeout=120)


def _unready(pipeline: Pipeline) -> str:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(f"{pipeline.services['normalise'].base_url}/readyz", timeout=5) as resp:
            return "" if resp.status == 200 else resp.read().decode()
    except urllib.error.HTTPError as e:
        return e.read().decode()
