"""Log lines about one event carry its id, dataset and commune as JSON fields: the JSON output of the
normaliser's batch handler, as configured by services/infrastructure/logging_setup.py, is captured and
parsed."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest

from services.infrastructure.logging_setup import JsonFormatter
from services.normalise.service_layer import process_batch as process_batch_module
from tests.fakes.normalise_store import InMemoryNormaliseStore
from tests.unit.test_process_batch import run, toilet


@pytest.fixture
def json_lines() -> Iterator[io.StringIO]:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(JsonFormatter())
    logger = process_batch_module.log
    level, propagate = logger.level, logger.propagate
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    yield out
    logger.removeHandler(handler)
    logger.setLevel(level)
    logger.propagate = propagate


def parsed(out: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.getvalue().splitlines()]


async def test_a_rejected_and_an_accepted_event_are_logged_with_their_ids(json_lines: io.StringIO) -> None:
    store = InMemoryNormaliseStore()
    good = toilet(1, commune="69266")
    bad = toilet(2, commune="69123", coords=(0.0, 0.0))  # placeholder position: rejected
    report = await run(store, good, bad)
    assert report.outcomes[("public_toilets", "created")] == 1 and sum(report.rejections.values()) == 1
    lines = parsed(json_lines)
    by_event = {line.get("event_id"): line for line in lines}
    rejected = by_event[bad.event_id]
    assert rejected["level"] == "info" and rejected["logger"] == "odc.normalise"
    assert (rejected["dataset"], rejected["commune"], rejected["feature_id"]) == ("public_toilets", "69123", "2")
    assert rejected["reason"] and rejected["reason"] in rejected["message"] and rejected["source"] == "in/0/1"
    accepted = by_event[good.event_id]
    assert (accepted["dataset"], accepted["commune"], accepted["outcome"]) == ("public_toilets", "69266", "created")
    assert {line["event_id"] for line in lines} == {good.event_id, bad.event_id}


async def test_dedup_decisions_are_logged_per_event(json_lines: io.StringIO) -> None:
    store = InMemoryNormaliseStore()
    first = toilet(1, seq=2)
    await run(store, first)
    older = toilet(1, seq=1, adresse="older")
    await run(store, first, older)  # the same event again, then an older one
    lines = parsed(json_lines)[1:]
    outcomes = {(line["event_id"], line["outcome"]) for line in lines}
    assert outcomes == {(first.event_id, "duplicate"), (older.event_id, "stale")}
    assert all(line["dataset"] == "public_toilets" and line["commune"] == "69266" for line in lines)


async def test_an_undecodable_message_is_logged_with_its_position(json_lines: io.StringIO) -> None:
    await run(InMemoryNormaliseStore(), b"\x00garbage")
    (line,) = parsed(json_lines)
    assert line["reason"] and line["source"] == "in/0/0" and "event_id" not in line


async def test_per_event_lines_cost_nothing_at_info(json_lines: io.StringIO) -> None:
    process_batch_module.log.setLevel(logging.INFO)
    await run(InMemoryNormaliseStore(), toilet(1), toilet(2))
    assert parsed(json_lines) == []
