"""``python -m fuzz.run TARGET SECONDS [CORPUS_DIR]``: run one atheris target for a bounded time."""

from __future__ import annotations

import sys
from pathlib import Path

import atheris

from fuzz.targets import TARGETS

HERE = Path(__file__).resolve().parent


def main() -> None:
    name, seconds = sys.argv[1], int(sys.argv[2])
    corpus = HERE / "corpus" / name
    corpus.mkdir(parents=True, exist_ok=True)
    findings = HERE / "findings"
    findings.mkdir(exist_ok=True)
    args = [
        sys.argv[0],
        str(corpus),
        f"-max_total_time={seconds}",
        "-max_len=4096",
        "-timeout=10",
        "-rss_limit_mb=2048",
        f"-artifact_prefix={findings}/{name}-",
        "-print_final_stats=1",
    ]
    atheris.Setup(args, TARGETS[name])
    atheris.Fuzz()


if __name__ == "__main__":
    main()
