"""Copy one object from the source bucket to the destination, and say what happened.

    destination has it with the source's size  → skipped (no data moved); with --checksum,
                                                 only with equal MD5 ETags
    destination has it, the source does not    → skipped (Mastodon wrote it there: after the switch)
    destination's differs and is newer         → skipped, "newer at the destination, kept"
    source lacks it                            → missing
    up to multipart_threshold                  → one GET, one PUT with the bytes' Content-MD5
    larger                                     → multipart upload fed part by part from the GET
    same endpoint and account                  → server-side CopyObject (UploadPartCopy over 5 GiB)

Content is proven, not assumed: the MD5 of the bytes read is compared with the source's
ETag where that is an MD5 (a single-part upload), and the multipart ETag (MD5 of the
parts' MD5s) is recomputed for the part sizes the source may have used; the destination
checks every body against our Content-MD5. Each outcome says which proof it has.

Only the source saying "no such key" means missing: a 404 from the destination (an
upload aborted under us, a proxy) is retried like any transient error. Transient errors
restart the copy from a fresh GET after a jittered backoff; a body of the wrong length or
the wrong MD5 is never stored; a multipart upload that does not complete is aborted, also
when the copy is cancelled.
"""

from __future__ import annotations

import asyncio
import base64
import contextvars
import dataclasses
import functools
import hashlib
import time
from dataclasses import dataclass

from mastosync.engine.etags import MultipartEtags, md5_of, part_size_for
from mastosync.engine.events import QUIET, Events
from mastosync.engine.memory import MemoryBudget
from mastosync.engine.outcome import Outcome, Proof, Status
from mastosync.storage import Body, ServerSideCopy, Store
from mastosync.storage.base import ABSENT, Head, Known, NotFound, ObjectAttrs, StorageError, Transient
from mastosync.storage.limits import RateLimit
from mastosync.storage.retry import RetryPolicy

MiB = 1024 * 1024


KEPT_NEWER = "newer at the destination, kept"


@dataclass(frozen=True, slots=True)
class WriteAs:
    """How the destination writes an object, from what the database says of it."""

    private: bool = False  # never written with the configured (public) ACL
    content_type: str | None = None  # when the source tells none (a file, not sniffed)
    mode: int = 0o644  # a file's mode in a folder destination


# The retries of the copy running in this task (a copy is one task's work at a time).
_RETRIES: contextvars.ContextVar[list[int] | None] = contextvars.ContextVar("mastosync_retries", default=None)


class SourceMissing(StorageError):
    """The source has no such key."""


class ContentMismatch(Transient):
    """The bytes read do not have the MD5 the source's ETag says."""

    def __init__(self, message: str, md5: str) -> None:
        super().__init__(message)
        self.md5 = md5


@dataclass
class Copier:
    """Everything a copy needs that is the same for every object of a run."""

    source: Store
    destination: Store
    multipart_threshold: int
    part_size: int
    policy: RetryPolicy
    budget: MemoryBudget
    # The destination, when it can copy from the source itself (one endpoint and account).
    server_side: ServerSideCopy | None = None
    checksum: bool = False  # run --checksum: equal sizes are not enough, equal MD5 ETags are
    bandwidth: RateLimit | None = None  # --bwlimit: object bytes read from the source per second
    events: Events = QUIET  # told of each retry (the --log-file's retry lines)

    async def copy(self, source_key: str, destination_key: str, known: Known | None = None,
                   private: bool = False, how: WriteAs | None = None) -> Outcome:
        """Copy one object. `known` holds sizes already learnt by listing, saving HEADs;
        `private` objects are never written with the configured (public) ACL; `how` says
        what the database knows of the object (its likely type, a file's mode)."""
        counter = [0]  # every retry of this copy, the parts' and PUTs' retried in place included
        token = _RETRIES.set(counter)
        how = how or WriteAs(private)
        try:
            outcome = await self._copy(source_key, destination_key, known, how)
        finally:
            _RETRIES.reset(token)
        outcome.retries = counter[0]
        return outcome

    async def _copy(self, source_key: str, destination_key: str, known: Known | None,
                    how: WriteAs) -> Outcome:
        attempt = failures = throttles = 0
        first_throttle: float | None = None
        mismatched: str | None = None  # the MD5 of a read whose ETag did not match
        while True:
            attempt += 1
            try:
                # A retry asks again: what was listed may have changed since.
                hints = known if attempt == 1 and known is not None else Known()
                outcome = await self._copy_once(source_key, destination_key, hints, how, mismatched)
                outcome.attempts = attempt
                return outcome
            except SourceMissing:
                return Outcome(Status.MISSING, 0, attempt, "not found at the source")
            except (ContentMismatch, NotFound) as exc:
                if isinstance(exc, ContentMismatch):
                    # Twice the same bytes, twice not the ETag: the ETag is no MD5 of the content
                    # (an encrypted source that says nothing of it). Otherwise: damaged on the way.
                    mismatched = exc.md5 if mismatched is None else mismatched
                # NotFound here is not the source (that is SourceMissing): a destination upload
                # that vanished, or a 404 from something on the way. Worth another try from the start.
                failures += 1
                if failures > self.policy.retries:
                    return Outcome(Status.FAILED, 0, attempt, f"{exc} (gave up after {attempt} attempts)")
                self._retrying(source_key, attempt, exc)
                await asyncio.sleep(self.policy.delay(failures))
            except Transient as exc:
                # Being throttled is the provider pacing us, not the object failing: it has a
                # budget of its own, in time as well as in tries, so that a SlowDown storm of
                # a few minutes does not fail the objects caught in it.
                throttles += exc.throttled
                failures += not exc.throttled
                if exc.throttled and first_throttle is None:
                    first_throttle = time.monotonic()
                out_of_patience = (first_throttle is not None
                                   and time.monotonic() - first_throttle > self.policy.throttle_patience)
                if failures > self.policy.retries or (throttles > 4 * self.policy.retries + 8 and out_of_patience):
                    return Outcome(Status.FAILED, 0, attempt, f"{exc} (gave up after {attempt} attempts)")
                self._retrying(source_key, attempt, exc)
                await asyncio.sleep(self.policy.delay(failures + throttles, exc.throttled, exc.retry_after))
            except StorageError as exc:
                return Outcome(Status.FAILED, 0, attempt, str(exc))

    @functools.cached_property
    def _weakest(self) -> Proof:
        """The proof of a copy whose source has no MD5 to compare: the destination's check of
        our Content-MD5 (a bucket), or none at all (a folder)."""
        return Proof.TRANSFER if self.destination.keeps_metadata else Proof.WRITTEN

    @functools.cached_property
    def _in_place(self) -> RetryPolicy:
        """Retries of a request whose bytes are in hand (a PUT, a part): a few, then a fresh GET."""
        return dataclasses.replace(self.policy, retries=min(self.policy.retries, 3))

    def _retrying(self, key: str, attempt: int, error: Exception) -> None:
        counter = _RETRIES.get()
        if counter is not None:
            counter[0] += 1
        self.events.retry(key, attempt, str(error))

    async def _copy_once(self, source_key: str, destination_key: str, known: Known, how: WriteAs,
                         mismatched: str | None) -> Outcome:
        # A destination declared down fails the object now, before its source is read.
        self.destination.ensure_up(f"PUT {destination_key}")
        if known.destination_size is None:
            present = await self.destination.head(destination_key)
            destination_size = present.size if present is not None else ABSENT
        else:
            destination_size = known.destination_size
        source_size = known.source_size if known.source_size != ABSENT else None  # absent in a listing: ask
        if destination_size != ABSENT:
            try:
                source_size = source_size if source_size is not None else await self._source_size(source_key)
            except SourceMissing:
                # Only at the destination: written there by Mastodon itself, after the switch.
                return Outcome(Status.SKIPPED, size=destination_size)
            if source_size == destination_size and not self.checksum:
                return Outcome(Status.SKIPPED, size=source_size)
            settled = await self._settle(source_key, destination_key)
            if settled is not None:
                return settled
        if self.server_side is not None:
            return await self._server_side(self.server_side, source_key, destination_key, source_size, how.private)
        try:
            head, body = await self.source.get(source_key)
        except NotFound:
            raise SourceMissing(source_key) from None
        try:
            if head.content_type is None and how.content_type:  # a file whose bytes said nothing
                head = dataclasses.replace(head, content_type=how.content_type)
            attrs = ObjectAttrs.of(head, how.private, how.mode)
            if head.size <= self.multipart_threshold:
                proof, note = await self._single(body, head, destination_key, attrs, mismatched)
            else:
                proof, note = await self._multipart(body, head, destination_key, attrs, mismatched)
        finally:
            await body.aclose()
        return Outcome(Status.COPIED, head.size, proof=proof, note=note, size=head.size)

    async def _settle(self, source_key: str, destination_key: str) -> Outcome | None:
        """Both sides hold the object, and the sizes differ (or --checksum asks for more than
        sizes): skip it when the content is the same, keep the destination's when it differs
        and is the newer (Mastodon rewrote it there after the switch: PostProcessMediaWorker
        writes a processed video under the same key), else None: copy it."""
        source = await self.source.head(source_key)
        if source is None:
            raise SourceMissing(source_key)
        destination = await self.destination.head(destination_key)
        if destination is None:
            return None
        if source.size == destination.size:
            if source.md5 is None or destination.md5 is None:
                return None  # same size, content unknown: --checksum copies it again
            if source.md5 == destination.md5:
                return Outcome(Status.SKIPPED, size=source.size)
        if (source.last_modified is not None and destination.last_modified is not None
                and destination.last_modified > source.last_modified):
            return Outcome(Status.SKIPPED, size=destination.size, note=KEPT_NEWER)
        return None

    async def _source_size(self, source_key: str) -> int:
        source = await self.source.head(source_key)
        if source is None:
            raise SourceMissing(source_key)
        return source.size

    async def _server_side(self, copier: ServerSideCopy, source_key: str, destination_key: str, size: int | None,
                           private: bool) -> Outcome:
        # Only between two buckets of one account on one endpoint (config.same_place_as).
        head = None
        if size is None or size > copier.max_copy_object:
            head = await self.source.head(source_key)
            if head is None:
                raise SourceMissing(source_key)
            size = head.size
        try:
            if head is not None and head.size > copier.max_copy_object:
                await self._copy_in_parts(copier, source_key, destination_key, head, private)
            else:
                await copier.copy(self.source, source_key, destination_key,
                                  ObjectAttrs(private=private))
        except NotFound as exc:
            if exc.code == "NoSuchKey":  # of the copy source
                raise SourceMissing(source_key) from None
            raise
        return Outcome(Status.COPIED, size, proof=Proof.SERVER, size=size)

    async def _copy_in_parts(self, copier: ServerSideCopy, source_key: str, key: str, head: Head,
                             private: bool) -> None:
        """Server-side copy of an object over 5 GiB: UploadPartCopy of byte ranges."""
        part = max(part_size_for(head.size, self.part_size), copier.copy_part_min)
        upload_id = await self.destination.start_multipart(key, ObjectAttrs.of(head, private))
        try:
            etags: list[str] = []
            for number, first in enumerate(range(0, head.size, part), start=1):
                last = min(first + part, head.size) - 1
                etags.append(await self.policy.call(functools.partial(
                    copier.copy_part, self.source, source_key, key, upload_id, number, first, last)))
            await self.destination.complete_multipart(key, upload_id, etags)
        except BaseException:
            await asyncio.shield(self.destination.abort_multipart(key, upload_id))
            raise

    async def _single(self, body: Body, head: Head, key: str, attrs: ObjectAttrs,
                      mismatched: str | None) -> tuple[Proof, str | None]:
        held = await self.budget.acquire(head.size)
        try:
            if self.bandwidth is not None:
                await self.bandwidth.take(head.size)
            data = await body.read(head.size, last=True)
            digest = await md5_of(data)
            proof, note = self._weakest, None
            if head.md5 is not None:
                if digest.hex() == head.md5:
                    proof = Proof.MD5
                elif digest.hex() == mismatched:
                    note = "the source's ETag is not the MD5 of its bytes (read twice, the same)"
                else:
                    raise ContentMismatch(f"GET {key}: the bytes read do not have the source's MD5 "
                                          f"(ETag {head.md5}, read {digest.hex()})", digest.hex())
            await self._put(key, data, base64.b64encode(digest).decode(), attrs)
            return proof, note
        finally:
            await self.budget.release(held)

    async def _multipart(self, body: Body, head: Head, key: str, attrs: ObjectAttrs,
                         mismatched: str | None) -> tuple[Proof, str | None]:
        part_size = part_size_for(head.size, self.part_size)
        etags_of_source = MultipartEtags(head.size, head.etag or "", part_size)
        whole = hashlib.md5() if head.md5 is not None else None  # a single-part source over the threshold
        upload_id = await self.destination.start_multipart(key, attrs)
        try:
            etags: list[str] = []
            remaining = head.size
            while remaining > 0:
                size = min(part_size, remaining)
                held = await self.budget.acquire(size)
                try:
                    if self.bandwidth is not None:
                        await self.bandwidth.take(size)
                    data = await body.read(size, last=(size == remaining))
                    digest = await md5_of(data, also=whole)  # both off the loop for a large part
                    etags_of_source.feed(data, digest)
                    etags.append(await self._part(key, upload_id, len(etags) + 1, data, digest))
                finally:
                    await self.budget.release(held)
                remaining -= size
            if whole is not None and whole.hexdigest() not in (head.md5, mismatched):
                raise ContentMismatch(f"GET {key}: the bytes read do not have the source's MD5", whole.hexdigest())
            await self.destination.complete_multipart(key, upload_id, etags)
        except BaseException:
            # Failed or cancelled: abort, shielded so a cancellation cannot skip it.
            await asyncio.shield(self.destination.abort_multipart(key, upload_id))
            raise
        if whole is not None:
            if whole.hexdigest() == head.md5:
                return Proof.MD5, None
            return self._weakest, "the source's ETag is not the MD5 of its bytes (read twice, the same)"
        if etags_of_source.plausible and etags_of_source.matches():
            return Proof.MULTIPART, None
        if not head.etag:  # a file: nothing to recompute
            return self._weakest, None
        return self._weakest, "the source's multipart ETag could not be recomputed (part size unknown)"

    async def _put(self, key: str, data: bytes | bytearray, md5: str, attrs: ObjectAttrs) -> None:
        """The PUT of a body in hand, retried alone (a few times): a fresh GET only if that fails."""
        await self._in_place.call(lambda: self.destination.put(key, data, md5, attrs),
                          on_retry=lambda attempt, error: self._retrying(key, attempt, error))

    async def _part(self, key: str, upload_id: str, number: int, data: bytes | bytearray, digest: bytes) -> str:
        """Upload one part, retrying it alone (a few times): its bytes are in hand, the GET stays open."""
        md5 = base64.b64encode(digest).decode()
        return await self._in_place.call(lambda: self.destination.upload_part(key, upload_id, number, data, md5),
                                 on_retry=lambda attempt, error: self._retrying(key, attempt, error))
