"""verify's step: is the object at the destination, with the source's size?

Sizes learnt by listing save the HEADs; a key a listing did not show is asked about
again (HEAD, retried) before it is reported.
"""

from __future__ import annotations

from dataclasses import dataclass

from mastosync.errors import EndpointDown
from mastosync.outcome import Status
from mastosync.plan import Job
from mastosync.storage import Store
from mastosync.storage.base import Head, StorageError
from mastosync.storage.retry import RetryPolicy
from mastosync.transfer import ABSENT, Known


@dataclass(slots=True)
class Finding:
    job: Job
    status: Status  # OK, MISSING (at the source), ABSENT, DIFFERENT or ERROR
    reason: str = ""
    source_size: int | None = None
    destination_size: int | None = None
    fatal: EndpointDown | None = None


class CheckStep:
    def __init__(self, source: Store, destination: Store, policy: RetryPolicy) -> None:
        self.source, self.destination, self.policy = source, destination, policy

    async def __call__(self, job: Job) -> Finding:
        try:
            src, dst = await self._heads(job)
            other = job.fallback
            if src is None and other is not None:
                found = await self._heads(other)
                if found[0] is not None:
                    job, (src, dst) = other, found  # where an older Mastodon wrote it
        except (StorageError, EndpointDown) as exc:
            return Finding(job, Status.ERROR, str(exc), fatal=exc if isinstance(exc, EndpointDown) else None)
        if src is None:
            return Finding(job, Status.MISSING, "not found at the source", None, dst.size if dst else None)
        if dst is None:
            return Finding(job, Status.ABSENT, "not at the destination", src.size, None)
        if src.size != dst.size:
            return Finding(job, Status.DIFFERENT, f"size {dst.size} at the destination, {src.size} at the source",
                           src.size, dst.size)
        return Finding(job, Status.OK, "", src.size, dst.size)

    async def _heads(self, job: Job) -> tuple[Head | None, Head | None]:
        known = job.known or Known()
        source_key, destination_key = job.source_key, job.destination_key
        src = (Head(known.source_size) if known.source_size not in (None, ABSENT)
               else await self.policy.call(lambda: self.source.head(source_key)))
        dst = (Head(known.destination_size) if known.destination_size not in (None, ABSENT)
               else await self.policy.call(lambda: self.destination.head(destination_key)))
        return src, dst
