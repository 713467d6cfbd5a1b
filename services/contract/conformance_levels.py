"""The conformance levels every service and output names the same way (docs/validation.md).

A record is *conforming* (valid against its national schema), *incomplete* (taken in, published in the
Métropole's own outputs, left out of the national-layout CSV) or *refused*. Incomplete records carry
``odc:conformance`` = ``incomplete`` and ``odc:missing`` in their attributes; conforming records carry
neither. The attribute keys are not schema fields, so the schema-layout CSV never shows them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

CONFORMING = "conforming"
INCOMPLETE = "incomplete"
REFUSED = "refused"
LEVELS = (CONFORMING, INCOMPLETE, REFUSED)

CONFORMANCE = "odc:conformance"  # present (= "incomplete") only on incomplete records
MISSING = "odc:missing"  # the required fields the record lacks (JSON array of field names)
DROPPED = "odc:dropped"  # fields whose sent value broke the field's rule and was left out

# Rules of a field's value that leave the value out instead of refusing the record (outside the identity
# and commune fields). "required" makes the record incomplete. A NUL character ("control_character") still
# refuses the record: it is a corrupt or hostile record, not one wrong cell.
TOLERATED_RULES = frozenset(
    {"required", "type", "pattern", "enum", "minimum", "maximum", "minLength", "maxLength", "format"}
)

# How the marker reads in canonical JSON (sorted keys, no spaces: canonical_feature.canonical_json). A value
# holding this text is escaped (\"), so the plain substring can only be the top-level member.
_MARKER = f'"{CONFORMANCE}":"{INCOMPLETE}"'


def level_of(attributes: Mapping[str, Any]) -> str:
    """The level of a stored or published record, read from its attributes."""
    return INCOMPLETE if attributes.get(CONFORMANCE) == INCOMPLETE else CONFORMING


def is_incomplete_json(attributes_json: str | None) -> bool:
    """The same, read from canonical attributes JSON without parsing it."""
    return attributes_json is not None and _MARKER in attributes_json
