"""Giving the C heap's free memory back to the operating system: glibc's `malloc_trim(3)`.

The worker's threads (the split and control loops, librdkafka's, the executor's) allocate from
several glibc arenas. Memory freed inside an arena stays mapped, and counted in RSS, until the
arena's top is free, so with the worker's churn (a batch's records and outputs, OpenSSL's
contexts, caches evicting as they fill) RSS crept up with the events processed although the
live data is bounded: at 400,000 events 244 MiB against 215 MiB at 100,000, and ~200 MiB with
`malloc_trim(0)` every 10 s (`python -m bench.memory`, docs/performance.md). `malloc_trim(0)`
returns the free pages of every arena (glibc 2.8 and later); where the C library has no such
function (musl, macOS), `release_free_memory` does nothing.
"""

from __future__ import annotations

import ctypes

_TRIM = getattr(ctypes.CDLL(None), "malloc_trim", None)  # the C library this process runs on
RELEASE_EVERY_S = 10.0


def release_free_memory() -> bool:
    """Return free heap pages to the OS; True if any were (False also where it cannot be done)."""
    return _TRIM is not None and bool(_TRIM(0))
