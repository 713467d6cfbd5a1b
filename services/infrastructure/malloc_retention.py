"""Keep glibc's malloc from holding freed memory in a long-running worker (issue #16).

glibc starts with a 128 KiB mmap threshold and raises it each time a mmapped block is freed (up to 32 MiB), with
the trim threshold at twice that. A worker that allocates and frees ~1 MiB buffers (a Kafka fetch, a batch's
COPY, an encoded message) soon serves them from the heap instead, where the holes between small live blocks
stay resident: the normaliser's RSS then never came back below its peak, and the peak grew stage after stage.
Fixing both thresholds at glibc's own initial 128 KiB (which also turns the raising off) sends large blocks back
to the system when they are freed and trims the heap's top. Measured on the normaliser with its relay child
(docs/performance.md, "Normaliser RSS (issue #16, third session)").

No-op where the C library is not glibc (``mallopt`` missing): nothing else depends on it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

log = logging.getLogger("odc.malloc")

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
THRESHOLD_BYTES = 128 * 1024


def bound_malloc_retention(threshold: int = THRESHOLD_BYTES) -> bool:
    """Fix glibc's mmap and trim thresholds at ``threshold`` bytes; True when both were set. Call it once at the
    start of the process (it changes the allocator for the whole process, its threads included)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        log.info("no glibc mallopt here: malloc thresholds left as they are")
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, threshold)) and bool(mallopt(M_TRIM_THRESHOLD, threshold))
