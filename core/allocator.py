"""How the C library's allocator treats memory a process frees (glibc; elsewhere nothing changes)."""
from __future__ import annotations

import ctypes
import functools
import os

# mallopt parameters, from <malloc.h>
M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_MAX = -1, -2, -4


@functools.cache
def keep_freed_memory() -> bool:
    """Have glibc's malloc keep the memory this process frees for reuse; True where it took effect.

    By default glibc serves each block above a threshold (128 KB at first,
    adapting up to 32 MB) from a fresh memory mapping and unmaps it when it is
    freed, so many of each window's 1-2 MB arrays in inference, and each
    training step's large tensors, fault their pages in from the kernel
    again. Serving every block from the heap and keeping up to 1 GB of it
    free for reuse removed that cost, measured on the 2-core machine of
    ``../shared/STACK.md``: a 16 s window's log-Mel map 6.1 -> 2.0 ms in
    isolation, a one-hour recording's run 6 % less time, enhance.py's whole
    run 12-30 % less (``bench.ablate_enhance``); the same numbers, the same
    peak memory in inference, 15 % more in training.

    Returns False where the C library has no ``mallopt`` (macOS, Windows) or
    refuses these settings (musl), which then change nothing, and when the
    environment sets ``ANIMAL_SOUNDS_KEEP_FREED_MEMORY=0`` (glibc's defaults:
    memory goes back to the system sooner, for a slower run).
    """
    if os.environ.get("ANIMAL_SOUNDS_KEEP_FREED_MEMORY", "1") == "0":
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError, TypeError):
        return False
    return all([mallopt(M_MMAP_MAX, 0), mallopt(M_TRIM_THRESHOLD, 1 << 30), mallopt(M_TOP_PAD, 64 << 20)])
