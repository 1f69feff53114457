"""`mastosync audit` and `mastosync fix`: one side's objects against what the database expects.

audit (read-only), in two passes over the side:
  1. every object the database references, by the same batches and key-range listings as
     `run`: present, missing, or another size than the database's; with --headers (all, or
     --sample N per type) its Content-Type, Cache-Control and ACL against what Mastodon
     would have written;
  2. the whole prefix (or folder), a listing page at a time: each key is parsed back to its
     record (layout.record_of_key), the records of the page are read from the database, and
     a key none of them owns is an orphan. Memory stays bounded by a page.
fix: the same first pass; each object whose ACL or headers differ is set right in place
(PutObjectAcl; CopyObject onto itself with REPLACE), through the same pacing and retries.
Orphans are listed, never deleted.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import json
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mastosync import layout, loop, records
from mastosync.config import Settings, format_size
from mastosync.connect import connect
from mastosync.errors import Interrupted, MastosyncError, ObjectsFailed, VerifyGaps
from mastosync.plan import Job, learn_sizes_of
from mastosync.progress import Display
from mastosync.request import Request, report_label
from mastosync.state import Report, ResumeState, TypeProgress
from mastosync.steps.check import head_of
from mastosync.storage import Store, make_store, sniff
from mastosync.storage.base import ABSENT, Head, NotFound, StorageError, Transient
from mastosync.storage.folders import MASTODON_CACHE_CONTROL
from mastosync.storage.retry import RetryPolicy
from mastosync.storage.sniff import SNIFF_BYTES
from mastosync.workers import Engine

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


@dataclass
class Tally:
    """audit's counters of one type."""

    expected: int = 0
    present: int = 0
    missing: int = 0  # absent here, and at the source too (or this is the source): not an error
    absent: int = 0  # absent from the destination, though the source has it: a gap
    size_mismatch: int = 0
    wrong_headers: int = 0
    wrong_acl: int = 0
    fixed: int = 0
    would_fix: int = 0  # fix --dry-run
    skipped: int = 0  # SSE-C objects: their headers cannot be rewritten
    errors: int = 0
    headers_checked: int = 0  # (orphans are counted by find_orphans, per page, not per record)


def expected_headers(side: Store, obj: layout.MediaObject, head: Head, content_type: str | None) -> dict[str, str]:
    """The headers Mastodon would have written for this object: the stored ones, with the
    Content-Type, Cache-Control and ACL set right (a folder takes only the mode from them)."""
    fixed = Head(head.size, head.etag, content_type,
                 head.cache_control if head.cache_control in GOOD_CACHE_CONTROL else MASTODON_CACHE_CONTROL,
                 head.metadata)
    return side.headers_for(fixed, obj.private, layout.file_mode(obj))


def acceptable_types(obj: layout.MediaObject) -> set[str]:
    """Paperclip's type of the file: the row's (originals), or the style's format; a GIF's
    small .png made by an old Mastodon holds GIF bytes and says so."""
    return {t for t in (obj.content_type, layout.likely_content_type(obj)) if t}


class AuditStep:
    def __init__(self, settings: Settings, store: Store, audit: Audit, acl: str, policy: RetryPolicy,
                 source: Store | None = None) -> None:
        self.settings, self.store, self.audit, self.acl, self.policy = settings, store, audit, acl, policy
        # Auditing the destination: the source, asked about what the destination lacks, so that
        # "missing" means what it means in run and verify (at neither side: not a gap).
        self.source = source
        self.tallies: dict[str, Tally] = collections.defaultdict(Tally)
        self.folder = not store.keeps_metadata
        # The bucket refused GetObjectAcl or PutObjectAcl (no per-object ACLs: R2, "bucket owner
        # enforced"): its answer, said once; its policy decides visibility there.
        self.no_acls = ""

    async def __call__(self, job: Job, report: Report, out: Any) -> None:
        obj, tally = job.obj, self.tallies[job.obj.type]
        tally.expected += 1
        before = (tally.missing, tally.absent)
        ok = True
        try:
            await self._check(job, tally, report, out)
        except StorageError as exc:
            ok = False  # fix tries it again next time
            tally.errors += 1
            self._finding(report, out, job, "error", str(exc))
        job.stats.done(0, obj.estimate)
        # The live table counts what was found, as verify's does.
        if not ok:
            job.stats.failed += 1
        elif tally.missing > before[0]:
            job.stats.missing += 1
        elif tally.absent > before[1]:
            job.stats.absent += 1
        else:
            job.stats.ok += 1
        job.progress.finish(obj.id, ok)

    async def _check(self, job: Job, tally: Tally, report: Report, out: Any) -> None:
        obj = job.obj
        size = await self._size(job)
        if size == ABSENT and job.fallback is not None:
            other = await self._size(job.fallback)
            if other != ABSENT:
                job, size = job.fallback, other
        if size == ABSENT:
            if self.audit.side == "destination" and await self._at_source(job):
                tally.absent += 1
                self._finding(report, out, job, "absent", "expected, absent here; the source has it")
            else:
                tally.missing += 1
                self._finding(report, out, job, "missing", "expected, absent here and at the source")
            return
        tally.present += 1
        if obj.size is not None and obj.style == "original" and size != obj.size:
            tally.size_mismatch += 1
            self._finding(report, out, job, "size-mismatch", f"{size} bytes, the database says {obj.size}")
        if not (self.audit.headers or self.audit.fixing):
            return
        if self.audit.sample is not None and tally.headers_checked >= self.audit.sample:
            return
        tally.headers_checked += 1
        await self._headers(job, tally, report, out)

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

    async def _headers(self, job: Job, tally: Tally, report: Report, out: Any) -> None:
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
        acl_wrong = False
        public = await self._public(key) if (self.acl or self.folder) and not self.no_acls else None
        if public is not None:
            # A folder serves what is readable; a bucket what has a public ACL.
            should = not layout.kept_from_public(obj, self.folder) and (self.folder or self.acl in PUBLIC_ACLS)
            if public != should:
                acl_wrong = True
                tally.wrong_acl += 1
                self._finding(report, out, job, "wrong-acl",
                              "public, but Mastodon keeps it private" if public else "private, Mastodon serves it")
        if wrong:
            tally.wrong_headers += 1
            self._finding(report, out, job, "wrong-headers", "; ".join(wrong))
        repair_headers = self.audit.fix_headers and wrong
        repair_acl = self.audit.fix_acl and acl_wrong
        if not (repair_headers or repair_acl):
            return
        if self.audit.dry_run:
            tally.would_fix += 1
            return
        if repair_headers and head is not None and head.customer_key:
            tally.skipped += 1
            self._finding(report, out, job, "skipped", "encrypted with a customer key (SSE-C): its headers cannot be "
                                                       "rewritten without that key")
            return
        if repair_headers or self.folder:
            headers = expected_headers(self.store, obj, head or Head(0), right_type)
            if head is not None:
                # Its storage class, encryption and redirect, sent again: CopyObject would reset them.
                headers = {**headers, **dict(head.kept_in_place)}
            size = head.size if head is not None else 0
            await self.policy.call(lambda: self.store.replace_headers(key, headers, size))  # the ACL with them
        else:
            acl = "private" if obj.private else self.acl
            try:
                await self.policy.call(lambda: self.store.put_acl(key, acl))
            except StorageError as exc:
                if exc.code not in NO_ACL_CODES and exc.status != 501:
                    raise
                self.no_acls = self.no_acls or str(exc)  # "bucket owner enforced": said once
                return
        tally.fixed += 1

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

    def _finding(self, report: Report, out: Any, job: Job, status: str, reason: str) -> None:
        entry = {"type": job.obj.type, "id": job.obj.id, "style": job.obj.style, "key": self.audit.key_of(job),
                 "status": status, "reason": reason}
        report.write(entry)
        if out is not None:
            out.write(json.dumps(entry) + "\n")


async def find_orphans(db: records.Database, store: Store, settings: Settings, prefix: str,
                       path: Path, hidden: layout.Hidden,
                       written_before: float) -> tuple[dict[str, list[int]], int, int]:
    """Keys under `prefix` that no record owns, written to `path` (JSON lines); returns the
    count and bytes per type ("other" for keys no record could own), the keys listed, and
    the keys too young to judge. An object written after `written_before` (seconds since the
    epoch) is never an orphan: Paperclip writes the object before its row commits, so a live
    upload has no row yet."""
    found: dict[str, list[int]] = collections.defaultdict(lambda: [0, 0])
    listed = young = 0
    with path.open("w", encoding="utf-8") as out:
        async for listing in store.list_pages(prefix):
            listed += len(listing)
            page = [(key, size) for key, size, written in listing if written is None or written <= written_before]
            young += len(listing) - len(page)
            owners: dict[str, set[int]] = collections.defaultdict(set)
            for key, _ in page:
                owner = layout.record_of_key(key[len(prefix):])
                if owner is not None:
                    owners[owner[0]].add(owner[1])
            wanted: set[str] = set()
            for name, ids in owners.items():
                object_type = layout.TYPES[name]
                query = await records.query_for(db, object_type, records.Filters(ids=tuple(sorted(ids))))
                if query is None:
                    continue
                async for row in records.stream(db, query):
                    for obj in layout.objects_of(object_type, row, None, hidden):
                        wanted.add(layout.full_key(store.key_prefix, obj.key))
                        if obj.fallback is not None:
                            wanted.add(layout.full_key(store.key_prefix, obj.fallback))
            for key, size in page:
                if key in wanted:
                    continue
                owner = layout.record_of_key(key[len(prefix):])
                counts = found[owner[0] if owner else "other"]
                counts[0] += 1
                counts[1] += size
                out.write(json.dumps({"key": key, "size": size}) + "\n")
    return found, listed, young


def audit(settings: Settings, request: Request, what: Audit) -> None:

    loop.run(_audit(settings, request, what))


async def _audit(settings: Settings, request: Request, what: Audit) -> None:
    command = "fix" if what.fixing else "audit"
    label = report_label(f"{command}-{what.side}", request.shard)
    report = Report(settings.sync.state_dir, label)
    # fix resumes where it stopped (the records it went through are not checked again); audit
    # reads, and a fresh look is what it is for.
    state = ResumeState(settings, None, request.shard, kind=label) if what.fixing and not what.dry_run else None
    progress = state.load(request.types, restart=False) if state else {name: TypeProgress() for name in request.types}
    if state is not None and any(p.done_through is not None for p in progress.values()):
        print("mastosync: resuming an unfinished fix: "
              + ", ".join(f"{n} after id {p.done_through}" for n, p in progress.items() if p.done_through),
              file=sys.stderr if what.as_json else sys.stdout)
    started = time.time()
    async with contextlib.AsyncExitStack() as stack:
        connected = await connect(stack, settings, request, progress, write=what.fixing and not what.dry_run,
                                  only=what.side)
        store = connected.destination if what.side == "destination" else connected.source
        stats = connected.stats
        display = Display(list(stats.values()), settings.sync.progress_interval, mode="verify",
                          out=sys.stderr if what.as_json else sys.stdout)
        source = await open_source(stack, settings, request) if what.side == "destination" else None
        if what.fix_headers and not what.dry_run and await store.keeps_versions():
            display.message(f"mastosync: the {what.side} bucket keeps versions: each object fixed in place leaves "
                            "its old version behind, billed until a lifecycle rule expires noncurrent versions")
        if what.side == "destination" and source is None:
            display.message("mastosync: the source cannot be read: objects absent here are counted as gaps")
        acl = settings.destination.acl  # Mastodon's S3_PERMISSION: the same for the old bucket
        step = AuditStep(settings, store, what, acl, RetryPolicy(retries=settings.sync.retries), source)
        if what.headers or what.fix_acl:
            step.no_acls = await store.acls_disabled()
        out = sys.stdout if what.as_json else None

        async def check(job: Job) -> None:
            await step(job, report, out)
            if state is not None:
                state.save(every=2.0)

        engine = Engine(settings, connected.db, request, connected.queries, {}, progress, stats, check, display,
                        functools.partial(learn_sizes_of, store=store, side=what.side), connected.hidden)
        try:
            with display.running():
                await engine.run()
        finally:
            report.close()
            if state is not None:
                stopped = bool(engine.signals) or engine.fatal is not None
                state.save(complete={n: engine.finished_types[n] and not stopped for n in request.types})
        if engine.fatal is not None:
            raise engine.fatal
        if engine.signals:
            raise Interrupted(engine.signals[0])
        orphans: dict[str, list[int]] = {}
        listed = young = 0
        orphan_path = Path(settings.sync.state_dir) / f"orphans-{label}-{datetime.now(UTC):%Y%m%d-%H%M%S}.jsonl"
        if not what.fixing and request.limit is None and request.since is None and request.shard is None:
            prefix = layout.full_key(store.key_prefix, "") if store.key_prefix else ""
            orphans, listed, young = await find_orphans(connected.db, store, settings, prefix, orphan_path,
                                                        connected.hidden, started - what.min_age)
        out = sys.stderr if what.as_json else sys.stdout
        summarise(step.tallies, orphans, listed, orphan_path, what, store, report, out)
        if young:
            print(f"not judged: {young} objects written less than {what.min_age / 60:g} minutes before the audit "
                  "began (--min-age): a live upload's row may not be committed yet", file=out)
        if step.no_acls:
            print(f"visibility: the {what.side} keeps no per-object ACL ({step.no_acls}); its bucket policy "
                  "decides who reads what, so no object was judged or fixed by its ACL", file=out)
    absent = sum(t.absent for t in step.tallies.values())
    errors = sum(t.errors for t in step.tallies.values())
    if what.fixing and errors:
        raise ObjectsFailed(f"{errors} objects could not be checked or fixed; see {report.path}")
    if absent:
        raise VerifyGaps(f"{absent} objects the source has are absent from the destination; see {report.path}")


async def open_source(stack: contextlib.AsyncExitStack, settings: Settings, request: Request) -> Store | None:
    """The source, read-only, to tell "missing" (at neither side) from "absent" (a gap); None
    when it cannot be opened (an old bucket already given up)."""
    from mastosync.connect import open_ssh

    try:
        tunnel = await open_ssh(stack, settings, with_files=True)
        store: Store = await stack.enter_async_context(
            make_store(settings.source, "source", request.concurrency + 8, settings.sync.timeout, tunnel))
        await store.check()
    except MastosyncError:
        return None
    return store


def summarise(tallies: dict[str, Tally], orphans: dict[str, list[int]], listed: int, orphan_path: Path,
              what: Audit, store: Store, report: Report, out: Any) -> None:
    columns = ["expected", "present", *(["absent"] if what.side == "destination" else []), "missing",
               "size_mismatch"]
    if what.headers or what.fixing:
        columns += ["headers_checked", "wrong_headers", "wrong_acl"]
    if what.fixing:
        columns += ["would_fix" if what.dry_run else "fixed"]
    names = sorted(set(tallies) | set(orphans), key=lambda n: (n not in layout.TYPES, n))
    header = ["type", *columns, "orphans", "orphan bytes"]
    rows = [[n, *(str(getattr(tallies[n], c)) if n in tallies else "-" for c in columns),
             str(orphans.get(n, [0, 0])[0]), format_size(orphans.get(n, [0, 0])[1])] for n in names]
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]
    print(f"mastosync {'fix' if what.fixing else 'audit'} of the {what.side} ({store.describe()})", file=out)
    for line in (header, *rows):
        cells = zip(line, widths, strict=True)
        print("  ".join(cell.rjust(w) if i else cell.ljust(w) for i, (cell, w) in enumerate(cells)), file=out)
    count = sum(n for n, _ in orphans.values())
    if listed:
        size = sum(b for _, b in orphans.values())
        print(f"orphans: {count} of {listed} keys listed, {format_size(size)}, referenced by no record; listed in "
              f"{orphan_path.resolve()}. mastosync never deletes them. After checking the list:\n"
              f"  jq -r .key {orphan_path.name} > orphans.txt; rclone delete REMOTE:BUCKET --files-from-raw "
              "orphans.txt   (or: aws s3 rm s3://BUCKET/KEY for each)", file=out)
    skipped = sum(t.skipped for t in tallies.values())
    if skipped:
        print(f"skipped: {skipped} objects encrypted with a customer key (SSE-C); their headers were not rewritten",
              file=out)
    if what.fixing and what.dry_run:
        print(f"fix --dry-run: would fix {sum(t.would_fix for t in tallies.values())} objects; nothing was changed",
              file=out)
    print(f"report: {report.path} ({report.lines} findings)", file=out)
