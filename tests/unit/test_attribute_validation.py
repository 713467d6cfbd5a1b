"""Attributes as communes really send them, against a compiled Table Schema."""

from __future__ import annotations

import pytest

from services.normalise.domain.attribute_validation import CompiledSchema

SCHEMA = {
    "fields": [
        {"name": "code_insee", "type": "string", "constraints": {"required": True, "pattern": "^[0-9]{5}$"}},
        {"name": "codepost", "type": "string", "constraints": {"pattern": "^69[0-9]{3}$"}},
        {"name": "nom", "type": "string", "constraints": {"maxLength": 10}},
        {"name": "surface", "type": "number", "constraints": {"minimum": 0}},
        {"name": "annee", "type": "integer", "constraints": {"minimum": 1500, "maximum": 2100}},
        {"name": "clos", "type": "boolean", "trueValues": ["oui", "Oui", "1"], "falseValues": ["non", "Non", "0"]},
        {"name": "ouvert", "type": "boolean"},
        {"name": "date_maj", "type": "date"},
        {"name": "gestion", "type": "string", "constraints": {"enum": ["Commune", "Métropole"]}},
    ],
    "missingValues": ["", "None"],
}
S = CompiledSchema(SCHEMA)
BASE = {"code_insee": "69266"}


@pytest.mark.parametrize(
    ("field", "raw", "expected"),
    [
        ("code_insee", 69266, "69266"),
        ("code_insee", 1053, "01053"),  # integer code: leading zero restored
        ("codepost", 69100, "69100"),
        ("surface", "1234,5", 1234.5),  # decimal comma
        ("surface", " 12 ", 12.0),
        ("surface", 3, 3.0),
        ("annee", "2019", 2019),
        ("annee", 2019.0, 2019),
        ("annee", "2019.0", 2019),
        ("clos", "Oui", True),
        ("clos", "non", False),
        ("clos", 1, True),
        ("ouvert", "true", True),
        ("ouvert", True, True),
        ("date_maj", "2024-03-31", "2024-03-31"),
        ("date_maj", "31/03/2024", "2024-03-31"),  # French date
        ("nom", "  Parc  ", "Parc"),
        ("gestion", "Métropole", "Métropole"),
        ("nom", "", None),  # missing value
        ("nom", "None", None),
    ],
)
def test_values_are_cast_to_canonical_form(field: str, raw: object, expected: object) -> None:
    result = S.validate({**BASE, field: raw})
    assert result.errors == ()
    assert result.values[field] == expected


@pytest.mark.parametrize(
    ("field", "raw", "rule"),
    [
        ("code_insee", None, "required"),
        ("code_insee", "", "required"),
        ("code_insee", "6926", "pattern"),
        ("code_insee", True, "type"),
        ("codepost", "75001", "pattern"),
        ("nom", "x" * 11, "maxLength"),
        ("surface", "-3", "minimum"),
        ("surface", "douze", "type"),
        ("surface", float("nan"), "type"),
        ("surface", "inf", "type"),
        ("annee", "1200", "minimum"),
        ("annee", "20.5", "type"),
        ("clos", "peut-être", "type"),
        ("date_maj", "2024-02-30", "type"),
        ("date_maj", "hier", "type"),
        ("gestion", "Département", "enum"),
    ],
)
def test_invalid_values_are_reported_per_field_with_rule(field: str, raw: object, rule: str) -> None:
    attrs = {**BASE, field: raw} if field != "code_insee" else {field: raw}
    result = S.validate(attrs)
    assert [(e.field, e.rule) for e in result.errors] == [(field, rule)]
    error = result.errors[0]
    assert error.message_en.startswith(field) and error.message_fr.startswith(field)
    assert error.message_en != error.message_fr


def test_headers_differing_in_case_or_accents_are_mapped_and_reported() -> None:
    result = CompiledSchema({"fields": [{"name": "nom_équipement", "type": "string"}]}).validate(
        {"Nom_Equipement": "Stade", "autre": 1}
    )
    assert result.values == {"nom_équipement": "Stade"}
    assert result.field_mapping == (("Nom_Equipement", "nom_équipement"),)
    assert result.ignored_fields == ("autre",)


def test_errors_on_several_fields_are_all_reported() -> None:
    result = S.validate({"code_insee": "x", "surface": "y", "clos": "z"})
    assert {e.field for e in result.errors} == {"code_insee", "surface", "clos"}
