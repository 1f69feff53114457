"""Object bytes in memory: a budget shared by every copy, and glibc told to give large
buffers back (see keep_large_buffers_mapped)."""

from __future__ import annotations

import asyncio
import ctypes
from dataclasses import dataclass, field


def keep_large_buffers_mapped() -> None:
    """Make glibc return every large body buffer to the system when it is freed.

    glibc serves allocations over its mmap threshold (128 KiB) with mmap, and returns them
    on free; but after freeing one it raises the threshold to that size (up to 32 MiB), so
    later bodies come from the heap, which fragments and never shrinks: a run's RSS grew
    to several times its budget. Setting the threshold fixes it (and turns off that
    adjustment). 4 MiB rather than lower: every mmap'd buffer is fresh pages to fault in,
    which cost 5-10% more CPU at 256 KiB for no less memory (bench: 111-132 MB either
    way). At most two malloc arenas for the hashing threads. A no-op off glibc.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 4 * 1024 * 1024)  # M_MMAP_THRESHOLD
        libc.mallopt(-8, 2)  # M_ARENA_MAX
    except (OSError, AttributeError):
        pass


@dataclass
class MemoryBudget:
    """Bytes of object data held in memory at once, across all copies (an async weighted semaphore)."""

    limit: int
    used: int = 0
    _waiters: asyncio.Condition = field(default_factory=asyncio.Condition)

    async def acquire(self, n: int) -> int:
        n = min(n, self.limit)  # an object larger than the budget waits for all of it
        async with self._waiters:
            await self._waiters.wait_for(lambda: self.used + n <= self.limit)
            self.used += n
        return n

    async def release(self, n: int) -> None:
        async with self._waiters:
            self.used -= n
            self._waiters.notify_all()
