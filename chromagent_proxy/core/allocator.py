"""Let the C allocator keep the memory of freed request bodies for the next request.

A 1 MB request body passes through several fresh buffers: the socket reads, aiohttp's
body parts, the joined body, the decoded prompt, the renamed body. glibc serves a block
above its mmap threshold with ``mmap`` (128 KB at first, raised to the size of a freed
block, ≈ 1 MB here) and gives the top of its heap back to the kernel past twice that, so
every request's buffers were new memory, faulted in and zeroed page by page: ≈ 400
minor faults and ≈ 1 ms of CPU per 1 MB request, a third of its cost
(bench/README.md, issue 20). With the thresholds below, bodies up to 4 MiB are served
from the heap and up to 32 MiB of freed heap stays mapped for reuse (glibc's own
adaptive limits go as far as 32 / 64 MiB); larger bodies are mapped as before.
"""

from __future__ import annotations

import ctypes
import os
import sys

MMAP_THRESHOLD = 4 * 1024 * 1024
TRIM_THRESHOLD = 32 * 1024 * 1024
_M_TRIM_THRESHOLD = -1  # glibc's malloc.h
_M_MMAP_THRESHOLD = -3
# An operator's own glibc tuning (MALLOC_MMAP_THRESHOLD_=…) is left as it is.
_ENV = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "GLIBC_TUNABLES")


def keep_freed_memory() -> bool:
    """Raise glibc's mmap and trim thresholds for this process; False where there is no
    glibc (``mallopt`` missing or refusing) or the environment already tunes it."""
    if not sys.platform.startswith("linux") or any(os.environ.get(k) for k in _ENV):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    # mallopt returns 1 on success (musl's stub returns 0: nothing to tune there).
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(
        mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)
    )
