"""Allocator settings for a daemon whose large buffers come and go (request bodies,
inflated gzip, decoded batches): it must never change behaviour, only give memory back.

glibc raises its mmap threshold each time a large mmapped block is freed (up to 32 MiB), so
after the first multi-MiB body every later one comes from the heap, where freed memory
stays in the process (fragmented) instead of going back to the OS. Pinning the threshold at
1 MiB keeps each large buffer mmapped, returned whole when freed, so RSS follows what
`max_in_flight_bytes` counts. Measured with tests/integration/test_memory_bounded.py (64
gzip clients, 7.3 MiB bodies): peak RSS 573 -> 462 MiB. Smaller blocks (every single-event
request) are not affected.
"""

from __future__ import annotations

import ctypes
import os
import sys
from collections.abc import Callable
from typing import Final

_M_MMAP_THRESHOLD: Final = -3  # glibc's malloc.h
MMAP_THRESHOLD_BYTES: Final = 1024 * 1024


def pin_mmap_threshold(threshold_bytes: int = MMAP_THRESHOLD_BYTES) -> bool:
    """Pin glibc's mmap threshold; False where there is no glibc (or the operator set
    MALLOC_MMAP_THRESHOLD_ themselves, which wins)."""
    if not sys.platform.startswith("linux") or "MALLOC_MMAP_THRESHOLD_" in os.environ:
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # musl and others have no mallopt
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, threshold_bytes))


# Raw TCP reads (256 KiB, below the mmap threshold) come from the heap; when connections that
# held many of them close, the freed pages stay in the process unless trimmed. malloc_trim
# hands whole free pages back (MADV_DONTNEED), about a millisecond for a few hundred MiB of
# heap: done at most once a second, after a connection that held at least this much closed.
TRIM_AFTER_BYTES: Final = 1024 * 1024
_TRIM_INTERVAL_SECONDS: Final = 1.0
_trimmed_at = -_TRIM_INTERVAL_SECONDS
_malloc_trim: Callable[[int], int] | None = None


def give_back_free_memory(now_seconds: float) -> bool:
    """Return the heap's free pages to the OS (glibc's malloc_trim), at most once a second
    (`now_seconds` on any monotonic clock); False when skipped or unavailable."""
    global _trimmed_at, _malloc_trim
    if now_seconds - _trimmed_at < _TRIM_INTERVAL_SECONDS or not sys.platform.startswith("linux"):
        return False
    _trimmed_at = now_seconds
    if _malloc_trim is None:
        try:
            trim = ctypes.CDLL(None).malloc_trim
        except (OSError, AttributeError):  # musl and others
            return False
        trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
        _malloc_trim = trim
    return bool(_malloc_trim(0))
