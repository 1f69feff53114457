"""The proof of a copy's content: MD5s of bodies (large ones off the event loop), and the
multipart ETags a source may have, recomputed for the part sizes it may have used."""

from __future__ import annotations

import asyncio
import hashlib
import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from hashlib import _Hash

MiB = 1024 * 1024
MAX_PARTS = 10_000  # S3: parts in one multipart upload
# Part sizes a source's multipart upload is likely to have used: aws-sdk (Mastodon's
# Paperclip) 5 MiB, boto3 and rclone 8 MiB, 15 MiB (S3_MULTIPART_THRESHOLD), 16 MiB.
USUAL_PART_SIZES = (5 * MiB, 8 * MiB, 15 * MiB, 16 * MiB, 10 * MiB, 64 * MiB)


THREAD_HASH_FROM = 1 * MiB  # bodies this large are hashed off the event loop


async def md5_of(data: bytes | bytearray, also: _Hash | None = None) -> bytes:
    """The MD5 digest of `data`. hashlib releases the GIL on large buffers, so a large body
    is hashed in a thread, on another core, while the loop goes on with other copies.
    `also`: a running hash (the whole object's) to feed the same bytes, in the same place."""

    def digest() -> bytes:
        if also is not None:
            also.update(data)
        return hashlib.md5(data).digest()

    if len(data) < THREAD_HASH_FROM:
        return digest()
    return await asyncio.to_thread(digest)


def part_size_for(size: int, configured: int) -> int:
    """The configured part size, or more (whole MiB) when the object needs over 10,000 parts."""
    if size <= configured * MAX_PARTS:
        return configured
    return math.ceil(size / MAX_PARTS / MiB) * MiB


class MultipartEtags:
    """The multipart ETags the bytes would have under each plausible source part size.

    Only sizes giving the source's part count are followed; a part size equal to ours
    reuses the MD5s computed for Content-MD5, so the usual case hashes nothing twice.
    """

    def __init__(self, size: int, etag: str, ours: int) -> None:
        stem, _, count = etag.strip('"').lower().partition("-")
        self.expected = stem
        parts = int(count) if count.isdigit() else 0
        self._ours = ours
        self._sizes = sorted({p for p in (*USUAL_PART_SIZES, ours, _even_split(size, parts))
                              if p >= 5 * MiB and parts and math.ceil(size / p) == parts})
        self._digests: dict[int, list[bytes]] = {p: [] for p in self._sizes}
        self._current = {p: hashlib.md5() for p in self._sizes if p != ours}
        self._filled = dict.fromkeys(self._sizes, 0)

    @property
    def plausible(self) -> bool:
        return bool(self._sizes)

    def feed(self, data: bytes | bytearray, digest: bytes) -> None:
        """The next part of ours (`digest` is its MD5)."""
        for p in self._sizes:
            if p == self._ours:
                self._digests[p].append(digest)
                continue
            view = memoryview(data)
            while view:
                take = min(len(view), p - self._filled[p])
                self._current[p].update(view[:take])
                self._filled[p] += take
                view = view[take:]
                if self._filled[p] == p:
                    self._digests[p].append(self._current[p].digest())
                    self._current[p], self._filled[p] = hashlib.md5(), 0

    def matches(self) -> bool:
        for p in self._sizes:
            digests = list(self._digests[p])
            if p != self._ours and self._filled[p]:
                digests.append(self._current[p].digest())
            if hashlib.md5(b"".join(digests)).hexdigest() == self.expected:
                return True
        return False


def _even_split(size: int, parts: int) -> int:
    """The part size of `parts` parts in whole MiB, as some tools choose it."""
    return math.ceil(size / parts / MiB) * MiB if parts else 0
