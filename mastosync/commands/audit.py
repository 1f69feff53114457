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
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mastosync import loop
from mastosync.config.settings import Settings
from mastosync.config.units import format_size
from mastosync.connect import connect
from mastosync.display.progress import Display
from mastosync.engine.books import AuditBook, Tally
from mastosync.engine.events import Told
from mastosync.engine.plan import Job, learn_sizes_of
from mastosync.engine.pool import Pool
from mastosync.engine.steps.audit import Audit, AuditStep, Inspection
from mastosync.errors import MastosyncError, ObjectsFailed, VerifyGaps
from mastosync.mastodon import layout, records
from mastosync.request import Request, report_label
from mastosync.state.reports import Report
from mastosync.state.resume import ResumeState, TypeProgress
from mastosync.storage import Store, make_store
from mastosync.storage.retry import RetryPolicy

__all__ = ["Audit", "audit"]


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
        no_acls = await store.acls_disabled() if what.headers or what.fix_acl else ""
        step = AuditStep(store, what, acl, RetryPolicy(retries=settings.sync.retries), source, no_acls)
        book = AuditBook(what, report, sys.stdout if what.as_json else None, state)

        async def check(job: Job) -> None:
            seen: Inspection = await step(job)
            book.record(seen)

        events = Told(display.message)
        pool = Pool(check, request.concurrency, settings.sync.grace_period, events)
        feed = connected.feed(settings, request, progress,
                              functools.partial(learn_sizes_of, store=store, side=what.side))

        try:
            with display.running():  # the table of findings is printed after the orphans' pass
                await pool.run(feed.jobs())
        finally:
            report.close()
            if state is not None:
                state.save(complete={n: feed.finished_types[n] and not pool.stopped for n in request.types})
        pool.raise_if_stopped()
        orphans: dict[str, list[int]] = {}
        listed = young = 0
        orphan_path = Path(settings.sync.state_dir) / f"orphans-{label}-{datetime.now(UTC):%Y%m%d-%H%M%S}.jsonl"
        if not what.fixing and request.limit is None and request.since is None and request.shard is None:
            prefix = layout.full_key(store.key_prefix, "") if store.key_prefix else ""
            orphans, listed, young = await find_orphans(connected.db, store, settings, prefix, orphan_path,
                                                        connected.hidden, started - what.min_age)
        out = sys.stderr if what.as_json else sys.stdout
        summarise(book.tallies, orphans, listed, orphan_path, what, store, report, out)
        if young:
            print(f"not judged: {young} objects written less than {what.min_age / 60:g} minutes before the audit "
                  "began (--min-age): a live upload's row may not be committed yet", file=out)
        if step.no_acls:
            print(f"visibility: the {what.side} keeps no per-object ACL ({step.no_acls}); its bucket policy "
                  "decides who reads what, so no object was judged or fixed by its ACL", file=out)
    absent = sum(t.absent for t in book.tallies.values())
    errors = sum(t.errors for t in book.tallies.values())
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
