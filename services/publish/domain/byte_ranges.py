"""HTTP byte ranges (RFC 9110 §14) of a document of known size: what a ``Range`` header asks for, as a plain
function. The export routes serve files with Starlette's ``FileResponse`` (which sends 206, multipart/byteranges
and 416, and evaluates ``If-Range``); this decides beforehand what the RFC says a server does with the header:

- an invalid header (another unit, bad syntax, a ``first-last`` with last < first, too many ranges) is
  **ignored**: the whole document, 200 (§14.2: "a server MUST ignore a Range header field received with a
  request method that is unrecognized" and MAY ignore it otherwise; an invalid one is ignored);
- ranges that all lie beyond the end are **unsatisfiable**: 416 with ``Content-Range: bytes */size``;
- otherwise the satisfiable ranges only, clamped to the document (``bytes=0-`` … ``-500`` suffixes resolved).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

MAX_RANGES = 16  # more ranges than this in one request: ignored (RFC 9110 §14.2 lets a server do so)
_SPEC = re.compile(r"^(\d*)-(\d*)$")


@dataclass(frozen=True)
class Whole:
    """No usable Range header: the whole document, 200."""


@dataclass(frozen=True)
class Unsatisfiable:
    """Every range starts at or after the end: 416 with ``Content-Range: bytes */size``."""

    size: int


@dataclass(frozen=True)
class Parts:
    """The satisfiable ranges, ``(first, last)`` byte positions inclusive, in the order asked."""

    ranges: tuple[tuple[int, int], ...]

    def header(self) -> str:
        """The canonical ``Range`` header for these parts (every bound explicit)."""
        return "bytes=" + ",".join(f"{first}-{last}" for first, last in self.ranges)


RangeAnswer = Whole | Unsatisfiable | Parts


def requested_ranges(header: str | None, size: int) -> RangeAnswer:
    """What ``Range: header`` asks of a document of ``size`` bytes (see the module docstring)."""
    if header is None:
        return Whole()
    unit, sep, spec = header.partition("=")
    if not sep or unit.strip().lower() != "bytes":
        return Whole()
    specs = [s.strip() for s in spec.split(",")]
    specs = [s for s in specs if s]  # RFC 9110's #rule allows empty list elements
    if not specs or len(specs) > MAX_RANGES:
        return Whole()
    parts: list[tuple[int, int]] = []
    for s in specs:
        m = _SPEC.match(s)
        if m is None or (not m.group(1) and not m.group(2)):
            return Whole()
        first_s, last_s = m.groups()
        if first_s:
            first = int(first_s)
            last = int(last_s) if last_s else size - 1
            if last_s and last < first:
                return Whole()  # an invalid range-spec makes the whole header invalid
            if first >= size:
                continue  # unsatisfiable on its own
            parts.append((first, min(last, size - 1)))
        else:
            suffix = int(last_s)
            if suffix == 0 or size == 0:
                continue
            parts.append((max(size - suffix, 0), size - 1))
    if not parts:
        return Unsatisfiable(size)
    return Parts(tuple(parts))
