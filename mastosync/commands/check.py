"""`mastosync check`: know before starting. One row per check, passed or not, with the fix.

Every check runs that can (a database that cannot be reached does not stop the check of the
buckets), and none writes anything that stays: the destination's write check opens a
multipart upload under the key prefix, with the ACL and storage class every copy sends, and
aborts it. The source check samples the objects the database references, so that a wrong
`key_prefix` or `root` is found before days are spent copying nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from dataclasses import asdict, dataclass
from typing import Any

from mastosync.config.settings import Settings
from mastosync.config.units import format_size
from mastosync.connect import open_database, open_ssh
from mastosync.engine.counters import Stats
from mastosync.engine.plan import Job, jobs_for
from mastosync.engine.sanity import first_keys
from mastosync.engine.steps.check import md5_of_object
from mastosync.errors import MastosyncError
from mastosync.mastodon import layout, records, version
from mastosync.state.resume import TypeProgress
from mastosync.storage import Store, make_store
from mastosync.storage.base import Head, ObjectAttrs, StorageError
from mastosync.storage.retry import RetryPolicy

SAMPLE_RECORDS = 5  # per type, the first by id: the oldest files, the likeliest to be gone
SKEW_LIMIT = 300.0  # seconds: beyond this a clock is worth fixing (SigV4 refuses past 900)
POLICY = RetryPolicy(retries=2, base=0.2, cap=2.0)


@dataclass
class Row:
    """One check: passed (True), failed (False) or not applicable (None), what was found, the fix."""

    name: str
    ok: bool | None
    detail: str
    fix: str = ""


@dataclass
class Found:
    """What the checks learn that later checks use."""

    db: records.Database | None = None
    source: Store | None = None
    destination: Store | None = None
    sample: list[Job] | None = None
    present: list[tuple[str, int]] | None = None  # sampled source keys present, with sizes
    expected: tuple[int, int] | None = None  # objects, bytes


async def run_checks(settings: Settings, concurrency: int) -> list[Row]:
    rows = [Row("configuration", True, str(settings.path.resolve()))]
    found = Found()
    async with contextlib.AsyncExitStack() as stack:
        tunnel = None
        if settings.ssh.enabled or "sftp" in (settings.source.kind, settings.destination.kind):
            try:
                tunnel = await open_ssh(stack, settings, with_files=True)
                rows.append(Row("ssh", True, f"{settings.ssh.user}@{settings.ssh.host}:{settings.ssh.port}: host key "
                                             "matches, logged in"))
            except MastosyncError as exc:
                rows.append(Row("ssh", False, str(exc), "see [ssh] in the configuration"))
        if tunnel is not None or not settings.ssh.enabled:
            rows += await _database(stack, settings, tunnel, found)
        rows.append(await _source(stack, settings, tunnel, found, concurrency))
        rows.append(await _destination(stack, settings, tunnel, found, concurrency))
        rows += await _clocks(settings, found)
        rows.append(await _space(settings, found))
        rows.append(await _estimate(found))
    return rows


async def _database(stack: contextlib.AsyncExitStack, settings: Settings, tunnel: Any,
                    found: Found) -> list[Row]:
    d = settings.database
    where = f"{d.user}@{d.host}:{d.port}/{d.name}"
    try:
        db = await stack.enter_async_context(open_database(settings, tunnel))
    except MastosyncError as exc:
        return [Row("database", False, str(exc), "see [database] (host, port, name, user, password, sslmode)")]
    found.db = db
    release = await version.mastodon_release(db)
    mastodon = f"Mastodon {release[1]} (newest migration {release[0]})" if release else "no schema_migrations"
    skew = (await records.clock(db) - _utc_now()).total_seconds()
    rows = [Row("database", True, f"{where}: {mastodon}; its clock {skew:+.0f}s from this machine's")]
    tables = sorted({t.table for t in layout.TYPES.values()} | {"accounts", "statuses", "schema_migrations"})
    conn = await db.connection()
    refused = [table for table in tables if await conn.fetchval(
        "SELECT to_regclass($1) IS NOT NULL AND NOT has_table_privilege(to_regclass($1), 'SELECT')", table)]
    if refused:
        grant = " ".join(f"GRANT SELECT ON {t} TO {d.user};" for t in refused)
        rows.append(Row("grants", False, f"{d.user} may not read {', '.join(refused)}", grant))
    else:
        rows.append(Row("grants", True, f"SELECT on every table read ({len(tables)})"))
    try:
        found.sample = await _sample(db, settings)
        objects = byte_count = 0
        for object_type in layout.TYPES.values():
            query = await records.query_for(db, object_type, records.Filters(
                include_remote=settings.sync.include_remote))
            if query is not None:
                _, count, size = await records.totals(db, query)
                objects, byte_count = objects + count, byte_count + size
        found.expected = objects, byte_count
    except MastosyncError as exc:
        rows.append(Row("records", False, str(exc)))
    return rows


def _utc_now() -> Any:
    from datetime import UTC, datetime

    return datetime.now(UTC).replace(tzinfo=None)


async def _sample(db: records.Database, settings: Settings) -> list[Job]:
    """The objects of the first records of each type, as `run` would copy them."""
    hidden = await records.hidden(db, tuple(layout.TYPES.values()))
    jobs: list[Job] = []
    for name, object_type in layout.TYPES.items():
        query = await records.query_for(db, object_type, records.Filters(
            limit=SAMPLE_RECORDS, include_remote=settings.sync.include_remote))
        if query is None:
            continue
        progress, stats = TypeProgress(), Stats(name)
        async for row in records.stream(db, query):
            jobs += [jobs_for(obj, settings.source.key_prefix, settings.destination.key_prefix, progress, stats)
                     for obj in layout.objects_of(object_type, row, None, hidden)]
    return jobs


async def _source(stack: contextlib.AsyncExitStack, settings: Settings, tunnel: Any, found: Found,
                  concurrency: int) -> Row:
    side = settings.source
    setting = "source.root" if side.is_folder else "source.key_prefix (and source.bucket)"
    try:
        store: Store = await stack.enter_async_context(
            make_store(side, "source", concurrency + 8, settings.sync.timeout, tunnel))
        await store.check()
    except MastosyncError as exc:
        return Row("source", False, str(exc), "see [source]")
    found.source = store
    if found.sample is None:
        return Row("source", True, f"{store.describe()}: readable (no database: nothing sampled)")
    if not found.sample:
        return Row("source", True, f"{store.describe()}: readable; the database references no file yet")
    gate = asyncio.Semaphore(concurrency)

    async def head(job: Job) -> tuple[str, Head | None]:
        async with gate:
            for candidate in (job, job.fallback):
                if candidate is None:
                    continue
                head = await POLICY.call(functools.partial(store.head, candidate.source_key))
                if head is not None:
                    return candidate.source_key, head
            return job.source_key, None

    try:
        heads = await asyncio.gather(*(head(job) for job in found.sample))
    except StorageError as exc:
        return Row("source", False, f"{store.describe()}: {exc}", "see [source]")
    found.present = [(key, h.size) for key, h in heads if h is not None]
    absent = [key for key, h in heads if h is None]
    if not found.present:
        there = await first_keys(store)
        held = ", ".join(there) if there else "nothing at all"
        return Row("source", False, f"none of the {len(heads)} sampled objects is there (e.g. {absent[0]}); the "
                                    f"source holds {held}", f"check {setting}")
    note = f"; absent: {len(absent)} (e.g. {absent[0]}): run reports them as missing" if absent else ""
    return Row("source", True, f"{store.describe()}: {len(found.present)} of {len(heads)} sampled objects "
                               f"present{note}")


async def _destination(stack: contextlib.AsyncExitStack, settings: Settings, tunnel: Any, found: Found,
                       concurrency: int) -> Row:
    side = settings.destination
    try:
        store: Store = await stack.enter_async_context(
            make_store(side, "destination", concurrency + 8, settings.sync.timeout, tunnel))
        await store.check(write=True, attrs=ObjectAttrs())
    except MastosyncError as exc:
        return Row("destination", False, str(exc), "see [destination]")
    found.destination = store
    if side.is_folder:
        owner = f", files given to {side.owner}" if side.owner else ""
        return Row("destination", True, f"{store.describe()}: writable{owner}")
    disabled = await store.acls_disabled()
    if disabled and side.acl:
        return Row("destination", False, f"{store.describe()}: writable, but {disabled}",
                   'set destination.acl = "" (its bucket policy decides who reads)')
    acl = f"ACL {side.acl!r} accepted" if side.acl else "no per-object ACL sent (destination.acl = \"\")"
    return Row("destination", True, f"{store.describe()}: writable, multipart uploads allowed, {acl}")


async def _clocks(settings: Settings, found: Found) -> list[Row]:
    rows = []
    for label, store in (("source", found.source), ("destination", found.destination)):
        if store is None:
            continue
        try:
            skew = await store.clock_skew()
        except (StorageError, MastosyncError):
            continue
        if skew is None:
            continue
        ok = abs(skew) <= SKEW_LIMIT
        rows.append(Row(f"clock ({label})", ok, f"{store.describe()}: its clock {skew:+.0f}s from this machine's",
                        "" if ok else "set this machine's clock right (timedatectl set-ntp true); mastosync corrects "
                                      "its signatures, but a wrong clock misleads every time it prints"))
    return rows


async def _space(settings: Settings, found: Found) -> Row:
    store = found.destination
    if store is None or not settings.destination.is_folder:
        return Row("free space", None, "a bucket: nothing to fill")
    free = await store.free_bytes()
    if free is None or found.expected is None:
        return Row("free space", None, "not known")
    needed = found.expected[1]
    ok = free >= needed * 1.1
    return Row("free space", ok, f"{format_size(free)} free, {format_size(needed)} expected (originals known, "
                                 "derived styles estimated)", "" if ok else "make room, or choose another root")


async def _estimate(found: Found) -> Row:
    if found.expected is None:
        return Row("estimate", None, "no database: nothing to estimate")
    objects, size = found.expected
    what = f"{objects:,} objects, {format_size(size)}"
    if not found.present or found.source is None:
        return Row("estimate", True, what)
    store = found.source
    sample = found.present[:20]
    started = time.monotonic()
    read = await _read_all(store, sample)
    elapsed = max(time.monotonic() - started, 1e-3)
    per_object, per_byte = elapsed / len(sample), elapsed / max(read, 1)
    seconds = max(objects * per_object, size * per_byte) if read else objects * per_object
    return Row("estimate", True, f"{what}; about {_duration(seconds)} at the read speed of a {len(sample)}-object "
                                 f"sample ({len(sample) / elapsed:.0f} objects/s, {read / elapsed / 2**20:.1f} MiB/s "
                                 "one at a time; run copies --concurrency at once)")


async def _read_all(store: Store, sample: list[tuple[str, int]]) -> int:
    """The sampled objects read whole, one after another (hashed as verify does): bytes read."""
    total = 0
    for key, size in sample:
        with contextlib.suppress(StorageError):
            await md5_of_object(store, key)
            total += size
    return total


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def render(rows: list[Row]) -> str:
    width = max(len(r.name) for r in rows)
    lines = []
    for r in rows:
        mark = {True: "✓", False: "✗", None: "-"}[r.ok]
        lines.append(f"{mark} {r.name.ljust(width)}  {r.detail}")
        if r.ok is False and r.fix:
            lines.append(f"  {' ' * width}  fix: {r.fix}")
    return "\n".join(lines) + "\n"


def as_json(rows: list[Row]) -> dict[str, Any]:
    return {"ok": all(r.ok is not False for r in rows), "checks": [asdict(r) for r in rows]}
