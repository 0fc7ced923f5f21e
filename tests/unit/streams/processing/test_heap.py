"""Free heap pages go back to the OS (glibc's malloc_trim), measured in this process's RSS."""

from __future__ import annotations

import ctypes
import platform
from pathlib import Path

import pytest

from shredline.streams.processing.heap import release_free_memory


def rss_kib() -> int:
    return int(Path("/proc/self/statm").read_text().split()[1]) * 4  # pages of 4 KiB


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="malloc_trim is glibc's")
def test_memory_freed_inside_the_heap_goes_back_to_the_os() -> None:
    libc = ctypes.CDLL(None)
    libc.malloc.restype = ctypes.c_void_p
    libc.free.argtypes = [ctypes.c_void_p]
    # 64 MiB in 100 KiB blocks (below the mmap threshold: inside the heap), every block but the
    # last freed: glibc keeps what it cannot give back from the top, the pages stay in RSS.
    blocks = [libc.malloc(100 * 1024) for _ in range(640)]
    for block in blocks:
        ctypes.memset(block, 1, 100 * 1024)
    for block in blocks[:-1]:
        libc.free(block)
    held = rss_kib()
    assert release_free_memory()
    assert held - rss_kib() > 32 * 1024  # most of the 64 MiB
    libc.free(blocks[-1])
