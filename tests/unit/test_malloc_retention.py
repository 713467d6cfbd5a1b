"""glibc keeps freed ~1 MiB blocks resident once its dynamic mmap threshold has risen; the normaliser and its
relay child fix the thresholds at start (issue #16). Run in fresh interpreters: it changes the allocator of the
whole process."""

from __future__ import annotations

import subprocess
import sys

PROBE = """
import sys
from services.infrastructure.malloc_retention import bound_malloc_retention

def rss_kb():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS"):
            return int(line.split()[1])

if sys.argv[1] == "bound":
    assert bound_malloc_retention()
first = bytearray(1 << 20)
del first  # a freed mmapped block: glibc raises its thresholds (unless they are fixed)
base = rss_kb()
big, small = [], []
for _ in range(64):
    big.append(bytearray(1 << 20))  # 1 MiB each
    small.append(bytearray(2000))  # a live block after each (malloc, not pymalloc) pins the heap below it
del big
print(rss_kb() - base)
"""


def retained_kb(mode: str) -> int:
    out = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True)
    return int(out.stdout.strip())


def test_freed_large_blocks_go_back_to_the_system_once_the_thresholds_are_fixed() -> None:
    assert retained_kb("default") > 32 * 1024  # the probe shows the retention it is about (64 MiB here)
    assert retained_kb("bound") < 8 * 1024


def test_both_normaliser_processes_fix_the_thresholds_at_start() -> None:
    from services.normalise.entrypoints import kafka_worker, relay_process

    assert "bound_malloc_retention" in kafka_worker.main.__code__.co_names
    assert "bound_malloc_retention" in relay_process.main.__code__.co_names
