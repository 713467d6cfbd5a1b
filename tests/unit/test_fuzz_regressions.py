"""Every input a fuzzer ever crashed on (fuzz/regressions/<target>-<what>) is replayed through its target:
each must now end as a documented rejection or a result, never another exception."""

from __future__ import annotations

from pathlib import Path

import pytest

from fuzz.targets import TARGETS

REGRESSIONS = sorted((Path(__file__).resolve().parents[2] / "fuzz" / "regressions").iterdir())


def test_there_are_regressions_to_replay() -> None:
    assert REGRESSIONS, "fuzz/regressions is empty: the replay below would test nothing"


@pytest.mark.parametrize("path", REGRESSIONS, ids=lambda p: p.name)
def test_fuzz_finding_stays_fixed(path: Path) -> None:
    target = TARGETS[path.name.split("-", 1)[0]]
    target(path.read_bytes())  # raises (and fails) if the finding came back
