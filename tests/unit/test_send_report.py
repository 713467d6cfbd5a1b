"""What a sender is told after `odc send` (services/ingest/domain/send_report.py) and the local dry run."""

from __future__ import annotations

import pytest

from services.cli.dry_run import validate_locally
from services.contract.datasets.catalogue import DatasetCatalogue
from services.ingest.domain.send_report import PENDING, Problem, RecordOutcome, summarise
from services.ingest.domain.source_records import read_csv
from services.ingest.entrypoints.send_command import prepare_send

GEOMETRY = Problem("out_of_area", "geometry: outside the area", "geometry", "lon, lat")
MISSING = Problem("required", "type_fontaine: a value is required", "type_fontaine")


@pytest.mark.parametrize(
    ("levels", "exit_code"),
    [
        (["conforming", "refused"], 0),
        (["incomplete"], 0),  # incomplete records got in
        (["refused", "refused"], 1),  # nothing got in
        (["refused", PENDING], 3),  # nothing known to have got in when the wait ended
        (["conforming", PENDING], 0),
        ([], 0),
    ],
)
def test_the_exit_status_says_whether_anything_got_in(levels: list[str], exit_code: int) -> None:
    assert summarise(RecordOutcome(level) for level in levels).exit_code() == exit_code


def test_counts_top_problems_rows_columns_and_the_details_command() -> None:
    outcomes = [
        RecordOutcome("refused", 2, "a", (GEOMETRY, Problem("pattern", "x: no", "x"))),
        RecordOutcome("refused", 5, "b", (GEOMETRY,)),
        RecordOutcome("incomplete", 7, "c", (MISSING,)),
        RecordOutcome("conforming", 9, "d"),
    ]
    report = summarise(outcomes)
    assert report.counts == {"refused": 2, "incomplete": 1, "conforming": 1}
    first = report.top[0]
    assert (first.rule, first.count, first.rows, first.where) == (
        "out_of_area",
        2,
        (2, 5),
        "column lon, lat (geometry)",
    )
    assert report.missing == {"type_fontaine": 1}
    text = "\n".join(report.lines("odc report --commune 69123 --dataset d"))
    assert text.startswith("1 conforming, 1 incomplete, 2 refused")
    assert "rows 2, 5" in text and "type_fontaine (1)" in text and "odc report --commune 69123" in text


def test_dry_run_validates_with_the_pipeline_rules_and_sends_nothing(tmp_path) -> None:  # type: ignore[no-untyped-def]
    f = tmp_path / "fontaines.csv"
    f.write_text(
        "id,type_fontaine,latitude,longitude,code_commune_insee,conditions_acces,accessible_pmr,"
        "remplissage_contenant_possible\n"
        "F1,robinet,45.764,4.8357,69123,aucune,true,false\n"  # conforming
        "F2,,45.765,4.8357,69123,aucune,true,false\n"  # incomplete: type_fontaine
        "F3,robinet,0,0,69123,aucune,true,false\n"  # refused: placeholder position
        "F4,robinet,45.766,4.8357,69266,aucune,true,false\n",  # refused: another commune than --commune
        encoding="utf-8",
    )
    prepared = prepare_send(f, "drinking_fountains", "69123")
    assert [e.source_row for e in prepared.events] == [2, 3, 4, 5]
    report = validate_locally(prepared.events, DatasetCatalogue.load())
    assert report.counts == {"conforming": 1, "incomplete": 1, "refused": 2}
    assert report.missing == {"type_fontaine": 1}
    rules = {t.rule: t.rows for t in report.top}
    assert rules["placeholder_coordinates"] == (4,) and rules["commune_mismatch"] == (5,)
    assert report.exit_code() == 0
    assert next(iter(read_csv(f.read_bytes()))).line == 2
