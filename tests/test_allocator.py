import ctypes
import platform

import numpy as np
import pytest

from core.allocator import keep_freed_memory


class Mallinfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                 "keepcost")]


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_large_blocks_come_from_the_reused_heap_not_fresh_mappings():
    libc = ctypes.CDLL(None)
    if not hasattr(libc, "mallinfo2"):
        pytest.skip("glibc older than 2.33 has no mallinfo2")
    libc.mallinfo2.restype = Mallinfo2
    assert keep_freed_memory()
    mapped = libc.mallinfo2().hblks
    blocks = [np.ones(n) for n in (1 << 18, 1 << 20, 1 << 22)]   # 2, 8 and 32 MB, alive together
    assert libc.mallinfo2().hblks == mapped, "glibc's default maps each of these afresh"
    del blocks


def test_the_environment_can_keep_glibcs_defaults(monkeypatch):
    monkeypatch.setenv("ANIMAL_SOUNDS_KEEP_FREED_MEMORY", "0")
    keep_freed_memory.cache_clear()
    try:
        assert keep_freed_memory() is False
    finally:
        keep_freed_memory.cache_clear()
