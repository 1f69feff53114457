"""verify's step: is the object at the destination, with the source's size?

Sizes learnt by listing save the HEADs; a key a listing did not show is asked about
again (HEAD, retried) before it is reported.
"""

from __future__ import annotations

import hashlib
import zlib
from dataclasses import dataclass

from mastosync.engine.outcome import Status
from mastosync.engine.plan import Job
from mastosync.errors import EndpointDown
from mastosync.mastodon import layout
from mastosync.storage import Store
from mastosync.storage.base import ABSENT, Head, Known, StorageError, Transient
from mastosync.storage.retry import RetryPolicy


@dataclass(slots=True)
class Finding:
    job: Job
    status: Status  # OK, MISSING (at the source), ABSENT, DIFFERENT or ERROR
    reason: str = ""
    source_size: int | None = None
    destination_size: int | None = None
    fatal: EndpointDown | None = None
    proof: str = ""  # OK: how the content was compared (size, etag, downloaded)


def sampled(key: str, percent: float) -> bool:
    """The same keys in every run (a hash, not a random draw), about `percent` of them."""
    return zlib.crc32(key.encode()) % 10_000 < percent * 100


PIECE = 8 * 1024 * 1024


async def md5_of_object(store: Store, key: str) -> str:
    """The MD5 of an object's bytes, read in pieces (never the whole object in memory)."""
    head, body = await store.get(key)
    digest = hashlib.md5()
    try:
        left = head.size
        while left > 0:
            piece = min(PIECE, left)
            digest.update(await body.read(piece, last=piece == left))
            left -= piece
    finally:
        await body.aclose()
    return digest.hexdigest()


class CheckStep:
    def __init__(self, source: Store, destination: Store, policy: RetryPolicy, checksum: bool = False,
                 sample: float = 0.0, check_private: bool = False) -> None:
        self.source, self.destination, self.policy = source, destination, policy
        self.checksum = checksum  # --checksum: content compared, not only sizes
        self.sample = sample  # percent of the objects without comparable ETags downloaded and hashed
        # Whether what Mastodon hides is checked not to be public (GetObjectAcl, a file's mode).
        self.check_private = check_private
        self.private_checked = 0
        self.acl_unreadable = ""  # the destination answered GetObjectAcl with an error: not checked

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
        try:
            hidden = (self.check_private and not self.acl_unreadable
                      and layout.kept_from_public(job.obj, folder=not self.destination.keeps_metadata))
            if hidden and await self._public(job.destination_key):
                return Finding(job, Status.DIFFERENT, "public at the destination, but Mastodon keeps it private "
                                                      "(mastosync fix --acl sets it private)", src.size, dst.size)
            if not self.checksum:
                return Finding(job, Status.OK, "", src.size, dst.size, proof="size")
            return await self._content(job, src.size)
        except (StorageError, EndpointDown) as exc:
            return Finding(job, Status.ERROR, str(exc), fatal=exc if isinstance(exc, EndpointDown) else None)

    async def _public(self, key: str) -> bool:
        """Whether everyone may read it; False, and no more asked, where the destination keeps
        no per-object ACL (its bucket policy decides)."""
        try:
            public = await self.policy.call(lambda: self.destination.public_read(key))
        except Transient:
            raise
        except StorageError as exc:
            self.acl_unreadable = self.acl_unreadable or str(exc)
            return False
        self.private_checked += 1
        return public

    async def _content(self, job: Job, size: int) -> Finding:
        """Equal MD5 ETags prove equal bytes without reading them; otherwise a sample of the
        objects is downloaded from both sides and hashed."""
        src = await self.policy.call(lambda: self.source.head(job.source_key))
        dst = await self.policy.call(lambda: self.destination.head(job.destination_key))
        if src is None or dst is None:
            return Finding(job, Status.ERROR, "gone while being checked")
        if src.md5 is not None and dst.md5 is not None:
            if src.md5 != dst.md5:
                return Finding(job, Status.DIFFERENT, f"same size, other content (MD5 {dst.md5} at the destination, "
                                                      f"{src.md5} at the source)", size, size)
            return Finding(job, Status.OK, "", size, size, proof="etag")
        if not sampled(job.destination_key, self.sample):
            return Finding(job, Status.OK, "", size, size, proof="size")
        a = await self.policy.call(lambda: md5_of_object(self.source, job.source_key))
        b = await self.policy.call(lambda: md5_of_object(self.destination, job.destination_key))
        if a != b:
            return Finding(job, Status.DIFFERENT, f"same size, other content (downloaded: MD5 {b} at the "
                                                  f"destination, {a} at the source)", size, size)
        return Finding(job, Status.OK, "", size, size, proof="downloaded")

    async def _heads(self, job: Job) -> tuple[Head | None, Head | None]:
        known = job.known or Known()
        return (await head_of(self.source, job.source_key, known.source_size, self.policy),
                await head_of(self.destination, job.destination_key, known.destination_size, self.policy))


async def head_of(store: Store, key: str, listed: int | None, policy: RetryPolicy) -> Head | None:
    """The listed size, which saves a HEAD; else (not listed, or absent from the listing:
    asked again before it is reported) a HEAD."""
    if listed is not None and listed != ABSENT:
        return Head(listed)
    return await policy.call(lambda: store.head(key))
