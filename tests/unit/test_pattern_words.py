"""Field rules said in words with an example of a valid value: no regular expression reaches a user."""

from __future__ import annotations

import re

import pytest

from services.contract.datasets.catalogue import DatasetCatalogue
from services.normalise.domain.attribute_validation import CompiledSchema
from services.normalise.domain.pattern_words import example_for, pattern_in_words

PATTERNS = [
    (d.id, f["name"], f["constraints"]["pattern"], f.get("example"))
    for d in DatasetCatalogue.load()
    for f in d.table_schema["fields"]
    if "pattern" in f.get("constraints", {})
]


@pytest.mark.parametrize(("dataset", "field", "pattern", "example"), PATTERNS)
def test_every_pattern_of_the_catalogue_is_said_in_words_with_a_valid_example(
    dataset: str, field: str, pattern: str, example: object
) -> None:
    en, fr = pattern_in_words(pattern, example)
    for text in (en, fr):
        assert pattern not in text and "\\d" not in text and "[0-9]" not in text and "^" not in text
    built = example_for(pattern, example)
    assert built is not None and re.fullmatch(pattern, built), (dataset, field)
    assert built in en and built in fr


@pytest.mark.parametrize(
    ("pattern", "declared", "expected"),
    [
        (r"^69[0-9]{3}$", None, "69000"),
        (r"^PAR-[0-9]{5}-[0-9]{3,5}$", None, "PAR-00000-000"),
        (r"^(Lundi|Mardi)( matin)?$", None, "Lundi"),
        (r"^\d{9}$", "130025265", "130025265"),
        (r"^\d{9}$", "not it", "000000000"),  # a declared example the pattern refuses is not shown
        (r"^[^x]+$", None, None),  # no example built from a negated set
    ],
)
def test_example_for(pattern: str, declared: object, expected: str | None) -> None:
    assert example_for(pattern, declared) == expected


def test_a_pattern_error_reads_in_words() -> None:
    d = DatasetCatalogue.load().get("public_toilets")
    assert d is not None
    # as the normaliser compiles it: the territory's words for a commune code (services/contract/territories)
    result = CompiledSchema(d.table_schema, pattern_words=d.pattern_words).validate({"gid": 1, "codinsee": "6926"})
    (e,) = result.errors
    assert e.rule == "pattern" and "^" not in e.message_en + e.message_fr and "|" not in e.message_en
    assert "INSEE code of a commune of Métropole de Lyon, e.g. 69123" in e.message_en
    # without them: generic words with a valid example built from the pattern, never the pattern itself
    result = CompiledSchema(d.table_schema).validate({"gid": 1, "codinsee": "6926"})
    (e,) = result.errors
    assert e.rule == "pattern" and "^" not in e.message_en + e.message_fr and "|" not in e.message_en
    example = e.message_en.rsplit(" ", 1)[-1]
    assert CompiledSchema(d.table_schema).validate({"gid": 1, "codinsee": example}).errors == ()
