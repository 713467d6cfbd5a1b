"""Hostile values through the real pipeline: SQL, markup and odd Unicode in text fields are stored as
data, verbatim; oversized values are refused with a reason; the tables are intact afterwards."""

from __future__ import annotations

import uuid

import pytest

from tests.integration.pipeline_harness import Pipeline, toilet_event, wait_for

pytestmark = pytest.mark.integration

HOSTILE = [
    "'; DROP TABLE canonical_feature; --",
    "Robert'); DELETE FROM dataset_version WHERE ('1'='1",
    "<script>alert('x')</script><img src=x onerror=alert(1)>",
    "${jndi:ldap://127.0.0.1/x} {{7*7}} %s%s%n",
    "e\u0301cole \u202egnp.exe \u200b\ufeff 🚻 \U0001f3f3\ufe0f\u200d\U0001f308 \\u0000",
    "Ⅻ ﬁ ß İ ǅ ᾈ",
]


def test_sql_markup_and_odd_unicode_are_stored_verbatim(pipeline: Pipeline) -> None:
    base = 960_000 + uuid.uuid4().int % 10_000
    events = [toilet_event(str(base + i), seq=1, adresse=value) for i, value in enumerate(HOSTILE)]
    before = pipeline.metric("normalise", "odc_events_received_total")
    pipeline.produce_events(events)
    pipeline.settle("public_toilets", before, len(events))
    stored = dict(
        pipeline.sql(
            "SELECT feature_id, attributes->>'adresse' FROM canonical_feature WHERE feature_id = ANY(%s)",
            [e.feature_id for e in events],
        )
    )
    missing = {e.feature_id for e in events} - set(stored)
    assert not missing, [
        (r.feature_id, r.reason, [(x.field, x.rule) for x in r.errors])
        for r in pipeline.rejections()
        if r.feature_id in missing
    ]
    assert [stored[e.feature_id] for e in events] == [v.strip() for v in HOSTILE]
    assert pipeline.sql(
        "SELECT to_regclass('canonical_feature') IS NOT NULL, to_regclass('dataset_version') IS NOT NULL"
    ) == [(True, True)]
    assert pipeline.sql("SELECT count(*) > 0 FROM dataset_version") == [(True,)]


def test_an_oversized_value_is_left_out_with_its_rule_and_the_rest_flows(pipeline: Pipeline) -> None:
    """A value breaking its field's rule is never stored as sent: the record gets in without it, the field
    named in odc:dropped and the rule in its corrections (docs/validation.md)."""
    base = 970_000 + uuid.uuid4().int % 10_000
    huge = toilet_event(str(base), seq=1, adresse="x" * 200_000)
    fine = toilet_event(str(base + 1), seq=1)
    before = pipeline.metric("normalise", "odc_events_received_total")
    pipeline.produce_events([huge, fine])
    pipeline.settle("public_toilets", before, 2)
    assert pipeline.sql("SELECT count(*) FROM canonical_feature WHERE feature_id = %s", fine.feature_id) == [(1,)]
    ((attrs, corrections),) = pipeline.sql(
        "SELECT attributes, corrections FROM canonical_feature WHERE feature_id = %s", huge.feature_id
    )
    assert attrs["adresse"] is None and attrs["odc:dropped"] == ["adresse"]
    assert "dropped:adresse:maxLength" in corrections
    assert not [r for r in pipeline.rejections() if r.event_id == huge.event_id]


def test_nul_characters_anywhere_are_rejected_and_do_not_stop_the_stream(pipeline: Pipeline) -> None:
    """PostgreSQL refuses NUL in text and jsonb: such an event must become a rejection, not a failed batch."""
    base = 980_000 + uuid.uuid4().int % 10_000
    in_attribute = toilet_event(str(base), seq=1, adresse="a\x00b")
    in_feature_id = toilet_event(f"{base + 1}\x00", seq=1)
    in_dataset = toilet_event(str(base + 2), seq=1, dataset="toilets\x00")
    fine = toilet_event(str(base + 3), seq=1)
    before = pipeline.metric("normalise", "odc_events_received_total")
    pipeline.produce_events([in_attribute, in_feature_id, in_dataset, fine])
    pipeline.settle("public_toilets", before, 4)
    assert pipeline.sql("SELECT count(*) FROM canonical_feature WHERE feature_id = %s", fine.feature_id) == [(1,)]
    ids = {in_attribute.event_id, in_feature_id.event_id, in_dataset.event_id}
    rejected = wait_for(
        "three rejections", lambda: (r := [x for x in pipeline.rejections() if x.event_id in ids]) and len(r) == 3 and r
    )
    assert {r.reason for r in rejected} == {"invalid_attributes", "invalid_envelope", "unknown_dataset"}
    assert all(r.original for r in rejected)  # the original bytes, NUL included, are kept
