"""Copy one object from the source bucket to the destination, and say what happened.

    destination has it with the source's size  → skipped (no data moved)
    source lacks it                            → missing
    up to multipart_threshold                  → one GET, one PUT (Content-MD5 when known)
    larger                                     → multipart upload fed part by part from the GET
    same endpoint and account                  → server-side CopyObject

Transient errors restart the copy from a fresh GET after a jittered backoff; a body
of the wrong length is never stored; a multipart upload that does not complete is
aborted, also when the copy is cancelled.
"""

from __future__ import annotations

import asyncio
import dataclasses
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from mastosync.config import DestinationSettings
from mastosync.storage import (
    Body,
    Bucket,
    Head,
    NotFound,
    RetryPolicy,
    StorageError,
    Transient,
    upload_extra,
)

COPIED = "copied"
SKIPPED = "skipped"
MISSING = "missing"
FAILED = "failed"


ABSENT = -1  # a listing showed the key does not exist


class Known(NamedTuple):
    """Sizes learnt by listing before the copy: None means not known (ask with HEAD)."""

    source_size: int | None = None
    destination_size: int | None = None


NOTHING_KNOWN = Known()


@dataclass(slots=True)
class Outcome:
    """The result of one object: status, bytes moved, attempts made, and the last error."""

    status: str
    bytes: int = 0
    attempts: int = 1
    error: str | None = None


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


@dataclass
class Copier:
    """Everything a copy needs that is the same for every object of a run."""

    source: Bucket
    destination: Bucket
    settings: DestinationSettings
    multipart_threshold: int
    part_size: int
    policy: RetryPolicy
    budget: MemoryBudget
    server_side: bool = False

    async def copy(self, source_key: str, destination_key: str, known: Known | None = None,
                   private: bool = False) -> Outcome:
        """Copy one object. `known` holds sizes already learnt by listing, saving HEADs;
        `private` objects are never written with the configured (public) ACL."""
        attempt = failures = throttles = 0
        while True:
            attempt += 1
            try:
                # A retry asks again: what was listed may have changed since.
                hints = known if attempt == 1 and known is not None else NOTHING_KNOWN
                status, moved = await self._copy_once(source_key, destination_key, hints, private)
                return Outcome(status, moved, attempt)
            except NotFound:
                return Outcome(MISSING, 0, attempt, "not found at the source")
            except Transient as exc:
                # Being throttled is the provider pacing us, not the object failing: it has a
                # budget of its own, so a SlowDown storm does not use up the retries.
                throttles += exc.throttled
                failures += not exc.throttled
                if failures > self.policy.retries or throttles > 4 * self.policy.retries + 8:
                    return Outcome(FAILED, 0, attempt, f"{exc} (gave up after {attempt} attempts)")
                await asyncio.sleep(self.policy.delay(failures + throttles, exc.throttled))
            except StorageError as exc:
                return Outcome(FAILED, 0, attempt, str(exc))

    async def _copy_once(self, source_key: str, destination_key: str, known: Known,
                         private: bool) -> tuple[str, int]:
        # A destination declared down fails the object now, before its source is read.
        self.destination.ensure_up(f"PUT {destination_key}")
        if known.destination_size is None:
            present = await self.destination.head(destination_key)
            destination_size = present.size if present is not None else ABSENT
        else:
            destination_size = known.destination_size
        source_size = known.source_size if known.source_size != ABSENT else None  # absent in a listing: ask
        if destination_size != ABSENT:
            source_size = source_size if source_size is not None else await self._source_size(source_key)
            if source_size == destination_size:
                return SKIPPED, 0
        if self.server_side:
            source_size = source_size if source_size is not None else await self._source_size(source_key)
            await self.destination.copy(self.source, source_key, destination_key,
                                        upload_extra(self.settings, Head(0), private))
            return COPIED, source_size
        head, body = await self.source.get(source_key)
        try:
            extra = upload_extra(self.settings, head, private)
            if head.size <= self.multipart_threshold:
                await self._single(body, head, destination_key, extra)
            else:
                await self._multipart(body, head, destination_key, extra)
        finally:
            body.close()
        return COPIED, head.size

    async def _source_size(self, source_key: str) -> int:
        source = await self.source.head(source_key)
        if source is None:
            raise NotFound(source_key)
        return source.size

    async def _single(self, body: Body, head: Head, key: str, extra: dict[str, Any]) -> None:
        held = await self.budget.acquire(head.size)
        try:
            data = await body.read(head.size, last=True)
            await self.destination.put(key, data, head, extra)
        finally:
            await self.budget.release(held)

    async def _multipart(self, body: Body, head: Head, key: str, extra: dict[str, Any]) -> None:
        upload_id = await self.destination.start_multipart(key, extra)
        try:
            etags: list[str] = []
            remaining = head.size
            while remaining > 0:
                size = min(self.part_size, remaining)
                held = await self.budget.acquire(size)
                try:
                    data = await body.read(size, last=(size == remaining))
                    etags.append(await self._part(key, upload_id, len(etags) + 1, data))
                finally:
                    await self.budget.release(held)
                remaining -= size
            await self.destination.complete_multipart(key, upload_id, etags)
        except BaseException:
            # Failed or cancelled: abort, shielded so a cancellation cannot skip it.
            await asyncio.shield(self.destination.abort_multipart(key, upload_id))
            raise

    async def _part(self, key: str, upload_id: str, number: int, data: bytearray) -> str:
        """Upload one part, retrying it alone (a few times): its bytes are in hand, the GET stays open."""
        policy = dataclasses.replace(self.policy, retries=min(self.policy.retries, 3))
        return await policy.call(lambda: self.destination.upload_part(key, upload_id, number, data))
