"""audit's and fix's step: is one object on one side as the database and Mastodon expect?

Present (or at its fallback key), missing (absent here and at the source: not a gap) or
absent (the source has it: a gap); its size against the database's; with --headers, its
Content-Type, Cache-Control and ACL (or a folder's mode) against what Mastodon would have
written; fix sets them right in place. What was found is returned as an Inspection: the
book (books.AuditBook) counts it and writes it down.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass, field

from mastosync.engine.plan import Job
from mastosync.engine.steps.check import head_of
from mastosync.mastodon import layout
from mastosync.mastodon.layout import MASTODON_CACHE_CONTROL
from mastosync.storage import Store, sniff
from mastosync.storage.base import ABSENT, Head, NotFound, ObjectAttrs, StorageError, Transient
from mastosync.storage.retry import RetryPolicy
from mastosync.storage.sniff import SNIFF_BYTES

# What Mastodon sends (paperclip.rb s3_headers), and what versions before 3.0 sent.
GOOD_CACHE_CONTROL = (MASTODON_CACHE_CONTROL, "max-age=315576000")
PUBLIC_ACLS = ("public-read", "public-read-write")
# How a bucket without per-object ACLs refuses one (AWS "bucket owner enforced"; R2, MinIO).
NO_ACL_CODES = ("AccessControlListNotSupported", "NotImplemented", "InvalidRequest")


@dataclass(frozen=True)
class Audit:
    """What the user asked of audit or fix."""

    side: str = "destination"
    headers: bool = False
    sample: int | None = None  # objects per type whose headers are checked; None: all
    as_json: bool = False
    fix_acl: bool = False
    fix_headers: bool = False
    dry_run: bool = False
    min_age: float = 3600.0  # seconds: objects written more recently are never orphans

    def key_of(self, job: Job) -> str:
        """The key audited: the job's on the side looked at."""
        return job.source_key if self.side == "source" else job.destination_key

    @property
    def fixing(self) -> bool:
        return self.fix_acl or self.fix_headers


@dataclass(slots=True)
class Inspection:
    """What the step found of one object. `found`: present, missing, absent or error."""

    job: Job
    found: str = "present"
    findings: list[tuple[str, str]] = field(default_factory=list)  # (status, reason), for the report
    size_mismatch: bool = False
    headers_checked: bool = False
    wrong_headers: bool = False
    wrong_acl: bool = False
    repair: str = ""  # "fixed", "would_fix" (fix --dry-run) or "skipped" (SSE-C), when a repair was due

    def finding(self, status: str, reason: str) -> None:
        self.findings.append((status, reason))


def expected_attrs(obj: layout.MediaObject, head: Head, content_type: str | None) -> ObjectAttrs:
    """What Mastodon would have written this object with: what is stored, with the
    Content-Type, Cache-Control and visibility set right (a folder keeps only the mode), and
    the storage class, encryption and redirect sent again (CopyObject would reset them)."""
    cache_control = head.cache_control if head.cache_control in GOOD_CACHE_CONTROL else MASTODON_CACHE_CONTROL
    return ObjectAttrs(content_type, cache_control, obj.private, layout.file_mode(obj), head.metadata,
                       head.kept_in_place)


def acceptable_types(obj: layout.MediaObject) -> set[str]:
    """Paperclip's type of the file: the row's (originals), or the style's format; a GIF's
    small .png made by an old Mastodon holds GIF bytes and says so."""
    return {t for t in (obj.content_type, layout.likely_content_type(obj)) if t}


class AuditStep:
    def __init__(self, store: Store, audit: Audit, acl: str, policy: RetryPolicy,
                 source: Store | None = None, no_acls: str = "") -> None:
        self.store, self.audit, self.acl, self.policy = store, audit, acl, policy
        # Auditing the destination: the source, asked about what the destination lacks, so that
        # "missing" means what it means in run and verify (at neither side: not a gap).
        self.source = source
        self.folder = not store.keeps_metadata
        # The bucket refused GetObjectAcl or PutObjectAcl (no per-object ACLs: R2, "bucket owner
        # enforced"): its answer, said once; its policy decides visibility there.
        self.no_acls = no_acls
        self.headers_checked: dict[str, int] = collections.defaultdict(int)  # per type, for --sample

    async def __call__(self, job: Job) -> Inspection:
        seen = Inspection(job)
        try:
            await self._check(job, seen)
        except StorageError as exc:
            seen.found = "error"  # fix tries it again next time
            seen.finding("error", str(exc))
        return seen

    async def _check(self, job: Job, seen: Inspection) -> None:
        obj = job.obj
        size = await self._size(job)
        if size == ABSENT and job.fallback is not None:
            other = await self._size(job.fallback)
            if other != ABSENT:
                job, size = job.fallback, other
                seen.job = job
        if size == ABSENT:
            if self.audit.side == "destination" and await self._at_source(job):
                seen.found = "absent"
                seen.finding("absent", "expected, absent here; the source has it")
            else:
                seen.found = "missing"
                seen.finding("missing", "expected, absent here and at the source")
            return
        if obj.size is not None and obj.style == "original" and size != obj.size:
            seen.size_mismatch = True
            seen.finding("size-mismatch", f"{size} bytes, the database says {obj.size}")
        if not (self.audit.headers or self.audit.fixing):
            return
        if self.audit.sample is not None and self.headers_checked[obj.type] >= self.audit.sample:
            return
        self.headers_checked[obj.type] += 1
        seen.headers_checked = True
        await self._headers(job, seen)

    async def _size(self, job: Job) -> int:
        listed = job.known.destination_size if job.known else None
        head = await head_of(self.store, self.audit.key_of(job), listed, self.policy)
        return ABSENT if head is None else head.size

    async def _at_source(self, job: Job) -> bool:
        """Whether the source has the object (or, where the source cannot be asked, True: a gap)."""
        source = self.source
        if source is None:
            return True
        for candidate in (job, job.fallback):
            if candidate is not None and await head_of(source, candidate.source_key, None, self.policy) is not None:
                return True
        return False

    async def _headers(self, job: Job, seen: Inspection) -> None:
        obj, key = job.obj, self.audit.key_of(job)
        wrong: list[str] = []
        head = None
        right_type: str | None = None
        if not self.folder:
            head = await self.policy.call(lambda: self.store.head(key))
            if head is None:
                return
            right_type = head.content_type
            if head.content_type not in acceptable_types(obj):
                # What Paperclip would have found in the bytes (a GIF card holds a JPEG).
                right_type = await self._sniff(key) or layout.likely_content_type(obj)
            if head.content_type != right_type:
                wrong.append(f"Content-Type {head.content_type!r}, Mastodon writes {right_type!r}")
            if head.cache_control not in GOOD_CACHE_CONTROL:
                wrong.append(f"Cache-Control {head.cache_control!r}")
        public = await self._public(key) if (self.acl or self.folder) and not self.no_acls else None
        if public is not None:
            # A folder serves what is readable; a bucket what has a public ACL.
            should = not layout.kept_from_public(obj, self.folder) and (self.folder or self.acl in PUBLIC_ACLS)
            if public != should:
                seen.wrong_acl = True
                seen.finding("wrong-acl", "public, but Mastodon keeps it private" if public
                             else "private, Mastodon serves it")
        if wrong:
            seen.wrong_headers = True
            seen.finding("wrong-headers", "; ".join(wrong))
        repair_headers = self.audit.fix_headers and bool(wrong)
        repair_acl = self.audit.fix_acl and seen.wrong_acl
        if not (repair_headers or repair_acl):
            return
        if self.audit.dry_run:
            seen.repair = "would_fix"
            return
        if repair_headers and head is not None and head.customer_key:
            seen.repair = "skipped"
            seen.finding("skipped", "encrypted with a customer key (SSE-C): its headers cannot be rewritten "
                                    "without that key")
            return
        if repair_headers or self.folder:
            attrs = expected_attrs(obj, head or Head(0), right_type)
            size = head.size if head is not None else 0
            await self.policy.call(lambda: self.store.set_attrs(key, attrs, size))  # the ACL with them
        else:
            acl = "private" if obj.private else self.acl
            try:
                await self.policy.call(lambda: self.store.put_acl(key, acl))
            except StorageError as exc:
                if exc.code not in NO_ACL_CODES and exc.status != 501:
                    raise
                self.no_acls = self.no_acls or str(exc)  # "bucket owner enforced": said once
                return
        seen.repair = "fixed"

    async def _public(self, key: str) -> bool | None:
        """Whether everyone may read the object; None where the bucket keeps no per-object ACL."""
        try:
            return await self.policy.call(lambda: self.store.public_read(key))
        except (Transient, NotFound):
            raise
        except StorageError as exc:
            self.no_acls = self.no_acls or str(exc)
            return None

    async def _sniff(self, key: str) -> str | None:
        """The type of the object's first bytes (one short read)."""
        head, body = await self.policy.call(lambda: self.store.get(key))
        try:
            start = await body.read(min(SNIFF_BYTES, head.size), last=head.size <= SNIFF_BYTES) if head.size else b""
        finally:
            await body.aclose()
        return sniff.content_type(bytes(start))
