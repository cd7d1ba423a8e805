"""heap.release: freed memory goes back to the system (glibc), measured on the process's own RSS."""

import sys

import pytest

from continualcode.heap import release


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS")) / 1024


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc_trim and /proc are Linux's")
def test_release_returns_freed_heap_pages_to_the_system():
    """200 MB in 64 KiB blocks (below malloc's mmap threshold: heap), freed under a block that pins the heap's
    top: malloc keeps the pages; release() hands them back."""
    blocks = [bytearray(b"x" * 65536) for _ in range(3200)]
    pin = bytearray(b"y" * 65536)
    del blocks
    kept = _rss_mb()
    assert release() is True
    assert kept - _rss_mb() > 100  # MB returned
    assert pin[0] == ord("y")
