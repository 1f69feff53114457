"""The pipeline, top to bottom: tunnel → records → layout → (copy | check | print) → outcomes.

Each command is one function here. `run` and `verify` share one engine: a producer
pages records and expands them into objects, a bounded queue feeds a fixed set of
workers, and every outcome goes to the observers (progress, resume state, report).
Bounded queues keep memory flat however large the tables are.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import functools
import json
import signal
import sys
import time
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from mastosync import cutover, layout, records
from mastosync.config import Settings, format_size
from mastosync.errors import (
    EndpointDown,
    Interrupted,
    MastosyncError,
    ObjectsFailed,
    UsageError,
    VerifyGaps,
)
from mastosync.progress import Display, Stats, summary_json, total_of
from mastosync.redact import redact
from mastosync.state import SO_FAR, EventLog, Report, ResumeState, RunHistory, RunLock, TypeProgress
from mastosync.storage import Head, RetryPolicy, StorageError
from mastosync.stores import Store, make_store, needs_ssh
from mastosync.transfer import (
    ABSENT,
    COPIED,
    FAILED,
    MISSING,
    SKIPPED,
    Copier,
    Known,
    MemoryBudget,
    Outcome,
    WriteAs,
    keep_large_buffers_mapped,
)

if TYPE_CHECKING:
    from mastosync.tunnel import Tunnel


@dataclass(frozen=True)
class Request:
    """What the user asked for on the command line."""

    types: tuple[str, ...]
    limit: int | None = None
    since: datetime | None = None
    since_last: bool = False  # --since last: `since` is set by resolve_since()
    concurrency: int = 32
    restart: bool = False
    shard: tuple[int, int] | None = None  # --shard K/N
    log_file: str | None = None  # --log-file: JSON lines of events
    as_json: bool = False  # run --json: the summary as one JSON object on stdout


def resolve_since(settings: Settings, request: Request) -> Request:
    """`--since last`: the start of the last completed run of this migration and these types."""
    if not request.since_last:
        return request
    started = RunHistory(settings.sync.state_dir).last_complete_start(settings, request.types, request.shard)
    if started is None:
        raise UsageError(f"--since last: no completed run of these types between these buckets is recorded in "
                         f"{Path(settings.sync.state_dir).resolve()}; give a time instead")
    return dataclasses.replace(request, since=started, since_last=False)


def _label(command: str, shard: tuple[int, int] | None) -> str:
    return command if shard is None else f"{command}-shard-{shard[0]}of{shard[1]}"


def filters_for(settings: Settings, request: Request) -> records.Filters:
    return records.Filters(
        limit=request.limit, since=request.since, include_remote=settings.sync.include_remote, shard=request.shard
    )


async def open_ssh(stack: contextlib.AsyncExitStack, settings: Settings, with_files: bool) -> Tunnel | None:
    """The one SSH connection to the Mastodon host, when the database goes through it or
    (`with_files`) a side is a folder there; None when nothing needs it."""
    if not settings.ssh.enabled and not (with_files and needs_ssh(settings.source, settings.destination)):
        return None
    # Imported only when used: asyncssh and its crypto add 16 MB and 0.3 s to every start.
    from mastosync.tunnel import Tunnel

    database = settings.database if settings.ssh.enabled else None
    return await stack.enter_async_context(Tunnel(settings.ssh, database))


@contextlib.asynccontextmanager
async def open_database(settings: Settings, tunnel: Tunnel | None = None) -> AsyncIterator[records.Database]:
    """The database, through the SSH tunnel when configured; both closed on every exit."""
    async with contextlib.AsyncExitStack() as stack:
        endpoint = None
        if settings.ssh.enabled:
            tunnel = tunnel or await open_ssh(stack, settings, with_files=False)
            assert tunnel is not None
            endpoint = tunnel.endpoint
        db = records.Database(settings.database, endpoint)
        stack.push_async_callback(db.close)
        await db.connection()  # fail now, before any work, if it cannot be reached
        yield db


# -- dry-run ----------------------------------------------------------------------------


def dry_run(settings: Settings, request: Request, output_format: str = "text", out: TextIO | None = None) -> None:
    """Print every object `run` would copy; touches no bucket."""
    out = out or sys.stdout
    if output_format == "s3-batch-csv" and settings.source.is_folder:
        raise UsageError("--format s3-batch-csv lists a bucket's objects for S3 Batch Operations; the source is "
                         "a folder (--format rclone gives the paths under its root)")
    try:
        asyncio.run(_dry_run(settings, resolve_since(settings, request), output_format, out))
        out.flush()
    except BrokenPipeError:  # `mastosync dry-run | head` is fine
        with contextlib.suppress(Exception):
            sys.stdout = None  # type: ignore[assignment]


async def _dry_run(settings: Settings, request: Request, output_format: str, out: TextIO) -> None:
    as_json = output_format == "json"
    bucket = settings.source.bucket
    filters = filters_for(settings, request)
    src, dst = settings.source.key_prefix, settings.destination.key_prefix
    full_key = layout.full_key
    # Hand-assembled JSON with the C string encoder: several times faster than json.dumps
    # of a dict, and this loop runs for every object of the instance.
    quote = json.encoder.encode_basestring  # type: ignore[attr-defined]
    objects = size = 0
    async with open_database(settings) as db:
        hidden = await records.hidden(db, tuple(layout.TYPES[name] for name in request.types))
        for name in request.types:
            object_type = layout.TYPES[name]
            query = await records.query_for(db, object_type, filters)
            if query is not None and request.limit is None:
                _, count, estimate = await records.totals(db, query)
                objects, size = objects + count, size + estimate
            if query is None:
                continue
            lines: list[str] = []
            kind = quote(name)
            async for row in records.stream(db, query, prefetch=settings.sync.db_batch):
                for o in layout.objects_of(object_type, row, request.since, hidden):
                    if as_json:
                        lines.append(
                            f'{{"type": {kind}, "id": {o.id}, "attachment": "{o.attachment}", '
                            f'"style": "{o.style}", "source_key": {quote(full_key(src, o.key))}, '
                            f'"destination_key": {quote(full_key(dst, o.key))}, '
                            f'"size": {"null" if o.size is None else int(o.size)}, '
                            f'"content_type": {"null" if o.content_type is None else quote(o.content_type)}, '
                            f'"private": {"true" if o.private else "false"}'
                            + ("" if o.fallback is None else
                               f', "fallback_source_key": {quote(full_key(src, o.fallback))}')
                            + "}"
                        )
                    elif output_format == "rclone":
                        lines.append(full_key(src, o.key))
                    elif output_format == "s3-batch-csv":
                        lines.append(f"{bucket},{urllib.parse.quote(full_key(src, o.key), safe='/')}")
                    else:
                        lines.append(f"{name}\t{o.id}\t{full_key(src, o.key)}\t{full_key(dst, o.key)}")
                if len(lines) >= 2000:
                    out.write("\n".join(lines) + "\n")
                    lines.clear()
            if lines:
                out.write("\n".join(lines) + "\n")
    if request.limit is None:
        # On stderr: stdout is the plan itself, for pipes and files.
        out.flush()
        sys.stderr.write(f"dry-run: {objects} objects, about {format_size(size)} (originals' sizes from the "
                         "database, derived styles estimated)\n")


# -- run and verify: one engine ---------------------------------------------------------


@dataclass(slots=True)
class Job:
    """One object to act on, with what its outcome must update."""

    obj: layout.MediaObject
    source_key: str
    destination_key: str
    progress: TypeProgress
    stats: Stats
    known: Known | None = None  # sizes learnt by listing, if any
    # The same object at its fallback key (where an older Mastodon put it), if it has one:
    # tried when the source lacks `source_key`, and copied under its own key.
    fallback: Job | None = None


def jobs_for(obj: layout.MediaObject, source_prefix: str, destination_prefix: str, progress: TypeProgress,
             stats: Stats) -> Job:
    job = Job(obj, layout.full_key(source_prefix, obj.key), layout.full_key(destination_prefix, obj.key),
              progress, stats)
    if obj.fallback is not None:
        job.fallback = Job(obj, layout.full_key(source_prefix, obj.fallback),
                           layout.full_key(destination_prefix, obj.fallback), progress, stats)
    return job


Action = Callable[[Job], Awaitable[None]]
Annotate = Callable[[list[Job]], Awaitable[None]]
GRACE_SECONDS = 10.0  # after Ctrl-C, copies in flight get this long to finish
BATCH_OBJECTS = 1000  # objects looked up together by listing (one ListObjectsV2 page)
LOOKAHEAD = 4  # batches being listed at once, ahead of the copies

ATTACHMENT_PATHS = {(t.name, a.name): a.path for t in layout.TYPES.values() for a in t.attachments}


def listing_root(obj: layout.MediaObject) -> str:
    """The key prefix up to the id partition, e.g. "cache/accounts/avatars/"."""
    cache = "cache/" if obj.key.startswith("cache/") else ""
    return f"{cache}{ATTACHMENT_PATHS[obj.type, obj.attachment]}/"


async def learn_sizes(jobs: list[Job], source: Store, destination: Store, need_source: bool) -> None:
    """Fill in each job's sizes by listing key ranges instead of one HEAD per object.

    Records arrive in id order, so a batch's keys under one root sit in a narrow key range
    that one or two ListObjectsV2 pages cover. The source is listed at the same time as
    the destination, but a copy (`need_source` false) waits for it only where the
    destination already holds keys, i.e. on a rerun, where the source's sizes decide what
    is skipped: on a fresh copy the GETs tell the sizes, and a file-backed server can take
    a second to walk a cold range. Listing is an optimisation: on any error or an
    orphan-heavy range the jobs simply keep asking with HEAD.
    """
    groups: dict[str, list[Job]] = {}
    for job in jobs:
        group = groups.setdefault(listing_root(job.obj), [])
        group.append(job)
        if job.fallback is not None:  # in the same folder: the same listing tells
            group.append(job.fallback)
    await asyncio.gather(*(_learn_group(root, group, source, destination, need_source)
                           for root, group in groups.items()))


async def _learn_group(root: str, group: list[Job], source: Store, destination: Store,
                       need_source: bool) -> None:
    pages = 2 + len(group) // 500
    source_listing = asyncio.create_task(_sizes(source, root, [j.source_key for j in group], pages))
    try:
        destination_sizes = await _sizes(destination, root, [j.destination_key for j in group], pages)
        source_sizes = await source_listing if need_source or destination_sizes else None
    finally:
        source_listing.cancel()  # not needed after all: its answer would change nothing
    for job in group:
        job.known = Known(
            None if source_sizes is None else source_sizes.get(job.source_key, ABSENT),
            None if destination_sizes is None else destination_sizes.get(job.destination_key, ABSENT),
        )


async def _sizes(bucket: Store, root: str, keys: list[str], pages: int) -> dict[str, int] | None:
    try:
        return await bucket.sizes_between(layout.full_key(bucket.key_prefix, root), min(keys), max(keys),
                                          pages)
    except StorageError:
        return None


class Engine:
    """Records → objects → a bounded queue → N workers; stops cleanly on SIGINT/SIGTERM."""

    def __init__(self, settings: Settings, db: records.Database, request: Request,
                 queries: dict[str, records.Query | None], retry_queries: dict[str, records.Query | None],
                 progress: dict[str, TypeProgress], stats: dict[str, Stats], action: Action,
                 display: Display, annotate: Annotate | None = None,
                 hidden: layout.Hidden = layout.NOTHING_HIDDEN) -> None:
        self.annotate = annotate
        self.hidden = hidden
        self.source = settings.source
        self.destination = settings.destination
        self.batch = settings.sync.db_batch
        # Objects looked up per listing: about what one database batch brings.
        self.list_batch = min(BATCH_OBJECTS, 2 * settings.sync.db_batch)
        self.db = db
        self.request = request
        self.queries = queries
        self.retry_queries = retry_queries
        self.progress = progress
        self.stats = stats
        self.action = action
        self.display = display
        self.queue: asyncio.Queue[Job | None] = asyncio.Queue(maxsize=request.concurrency * 2)
        self.signals: list[int] = []
        self.fatal: MastosyncError | None = None
        self.stop = asyncio.Event()
        self.hard_stop = asyncio.Event()
        self.finished_types: dict[str, bool] = {name: False for name in request.types}
        self._ahead: collections.deque[tuple[list[Job], asyncio.Task[None] | None]] = collections.deque()

    def on_signal(self, signum: int) -> None:
        self.signals.append(signum)
        if len(self.signals) == 1:
            self.display.message(
                f"mastosync: {signal.Signals(signum).name} received: finishing copies in flight "
                f"(at most {GRACE_SECONDS:.0f}s) and saving progress; press Ctrl-C again to stop at once"
            )
            self.stop.set()
        else:
            self.hard_stop.set()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, self.on_signal, signum)
        workers = [asyncio.create_task(self._worker()) for _ in range(self.request.concurrency)]
        producer = asyncio.create_task(self._produce())
        stopper = asyncio.create_task(self.stop.wait())
        try:
            await asyncio.wait({producer, stopper}, return_when=asyncio.FIRST_COMPLETED)
            if producer.done() and not self.stop.is_set():
                producer.result()  # a database error ends the run here, after the wind-down below
                for _ in workers:
                    await self.queue.put(None)  # each worker stops after the queued jobs
                drained: asyncio.Future[Any] = asyncio.gather(*workers)
                await asyncio.wait({drained, stopper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            producer.cancel()
            stopper.cancel()
            # Wait for the producer to end before the database closes under it (it would
            # take the closed connection for a lost one and say so).
            await asyncio.gather(producer, return_exceptions=True)
            await self._wind_down(workers)
            for signum in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(signum)

    async def _wind_down(self, workers: list[asyncio.Task[None]]) -> None:
        """Stop taking work; let copies in flight finish (bounded), then cancel the rest.

        Queued jobs are dropped, so their records stay unfinished in the resume state.
        A cancelled multipart copy aborts its upload on the way out.
        """
        pending = [w for w in workers if not w.done()]
        if not pending:
            return
        while not self.queue.empty():
            self.queue.get_nowait()
        for _ in pending:
            self.queue.put_nowait(None)
        # As long as the copies in flight need, at most the grace period, and no longer: the
        # wait ends when every worker is done or a second signal comes, whichever is first.
        finished: asyncio.Future[Any] = asyncio.gather(*pending, return_exceptions=True)
        hard: asyncio.Future[Any] = asyncio.create_task(self.hard_stop.wait())
        await asyncio.wait({finished, hard}, timeout=GRACE_SECONDS, return_when=asyncio.FIRST_COMPLETED)
        hard.cancel()
        for w in pending:
            w.cancel()
        await asyncio.gather(*pending, return_exceptions=True)

    async def _produce(self) -> None:
        try:
            await self._produce_all()
        finally:
            for _, task in self._ahead:
                if task is not None:
                    task.cancel()

    async def _produce_all(self) -> None:
        since = self.request.since
        source_prefix, destination_prefix = self.source.key_prefix, self.destination.key_prefix
        for name in self.request.types:
            object_type = layout.TYPES[name]
            progress, stats = self.progress[name], self.stats[name]
            stats.started = time.monotonic()  # rates per type count from its first record
            for query, after_id in ((self.retry_queries.get(name), None),
                                    (self.queries.get(name), progress.done_through)):
                if query is None:
                    continue
                batch: list[Job] = []
                async for row in records.stream(self.db, query, after_id=after_id, prefetch=self.batch):
                    if self.stop.is_set():
                        return
                    objects = layout.objects_of(object_type, row, since, self.hidden)
                    stats.records += 1
                    progress.begin(row["id"], len(objects))
                    batch.extend(jobs_for(obj, source_prefix, destination_prefix, progress, stats)
                                 for obj in objects)
                    if len(batch) >= self.list_batch:
                        await self._hand_out(batch)
                        batch = []
                await self._hand_out(batch)
                await self._hand_out([])  # the batches still being listed
            self.finished_types[name] = True

    async def _hand_out(self, batch: list[Job]) -> None:
        """Queue a batch once its sizes are known, listing up to LOOKAHEAD batches ahead.

        Listing takes a round trip or two per batch; done one batch at a time it would
        leave the workers idle whenever the objects go fast (a rerun that skips them all).
        Batches still leave in database order.
        """
        if batch:
            task = asyncio.ensure_future(self.annotate(batch)) if self.annotate is not None else None
            self._ahead.append((batch, task))
        while self._ahead and (len(self._ahead) >= LOOKAHEAD or not batch):
            ready, task = self._ahead.popleft()
            if task is not None:
                await task
            for job in ready:
                await self.queue.put(job)

    async def _worker(self) -> None:
        while (job := await self.queue.get()) is not None:
            try:
                await self.action(job)
            except MastosyncError as exc:
                # An error that ends the run (not the object): stop as after Ctrl-C, then raise it.
                if self.fatal is None:
                    self.fatal = exc
                    self.stop.set()
                return




# -- the commands -----------------------------------------------------------------------


@dataclass
class Prepared:
    """What both run and verify set up before touching any object."""

    db: records.Database
    source: Store
    destination: Store
    queries: dict[str, records.Query | None]
    retry_queries: dict[str, records.Query | None]
    stats: dict[str, Stats]
    hidden: layout.Hidden

    def learn_sizes(self, need_source: bool) -> Annotate:
        """learn_sizes on these buckets, as the engine's annotate step."""
        return functools.partial(learn_sizes, source=self.source, destination=self.destination,
                                 need_source=need_source)


async def _prepare(stack: contextlib.AsyncExitStack, settings: Settings, request: Request,
                   progress: dict[str, TypeProgress], write: bool) -> Prepared:
    """Connect everything and check access up front: a bad password or bucket stops us here."""
    filters = filters_for(settings, request)
    tunnel = await open_ssh(stack, settings, with_files=True)
    db = await stack.enter_async_context(open_database(settings, tunnel))
    pool = request.concurrency + 8
    source: Store = await stack.enter_async_context(
        make_store(settings.source, "source", pool, settings.sync.timeout, tunnel))
    destination: Store = await stack.enter_async_context(
        make_store(settings.destination, "destination", pool, settings.sync.timeout, tunnel))
    # Both buckets at once, and while the database is asked what to do: each check is a
    # round trip or two to a provider that may be far away.
    # The write check sends what every copy sends (ACL, storage class), so a bucket that refuses
    # them is found now.
    checks = asyncio.gather(source.check(), destination.check(write=write, extra=destination.headers_for(Head(0),
                                                                                                          False)),
                            return_exceptions=True)
    try:
        queries: dict[str, records.Query | None] = {}
        retry_queries: dict[str, records.Query | None] = {}
        hidden = await records.hidden(db, tuple(layout.TYPES[name] for name in request.types))
        for name in request.types:
            object_type = layout.TYPES[name]
            queries[name] = await records.query_for(db, object_type, filters)
            failed = progress[name].failed_ids if name in progress else set()
            if failed and queries[name] is not None:
                progress[name].retrying = set(failed)
                retry_queries[name] = await records.query_for(
                    db, object_type, dataclasses.replace(filters, ids=tuple(sorted(failed))))
    finally:
        outcomes = await checks  # also when the database failed: no check left running
    # The source's failure is the one told first.
    for outcome in outcomes:
        if isinstance(outcome, BaseException):
            raise outcome
    stats = {name: Stats(name) for name in request.types}
    for name, query in queries.items():
        s = stats[name]
        if query is None:
            s.records_total, s.objects_total, s.bytes_total = 0, 0, 0
            continue
        done_through = progress[name].done_through if name in progress else None
        s.records_total, s.objects_total, s.bytes_total = await records.totals(db, query, after_id=done_through)
        retry = retry_queries.get(name)
        if retry is not None:
            count, objects, size = await records.totals(db, retry)
            s.records_total, s.objects_total, s.bytes_total = (s.records_total + count, s.objects_total + objects,
                                                               s.bytes_total + size)
    return Prepared(db, source, destination, queries, retry_queries, stats, hidden)


async def _drive(engine: Engine, stats: dict[str, Stats], display: Display, report: Report, command: str,
                 counted: str, save_state: Callable[[], None] | None = None) -> None:
    """Run the engine under the progress display; whatever happens, close the books and summarise."""
    try:
        with display.running():
            await engine.run()
    finally:
        for s in stats.values():
            s.ended = time.monotonic()
        if save_state is not None:
            save_state()
        report.close()
        stopped = engine.signals or engine.fatal is not None
        display.summary(f"mastosync {command}" + (" (interrupted)" if stopped else ""))
        display.message(f"report: {report.path} ({report.lines} {counted})")


def _entry(job: Job, status: str, reason: str | None, attempts: int) -> dict[str, Any]:
    o = job.obj
    return {"type": o.type, "id": o.id, "attachment": o.attachment, "style": o.style,
            "source_key": job.source_key, "destination_key": job.destination_key, "status": status,
            "reason": reason, "attempts": attempts}


def run(settings: Settings, request: Request) -> None:
    """Copy every selected object; raises ObjectsFailed or Interrupted for exit codes 1, 130, 143."""
    keep_large_buffers_mapped()
    asyncio.run(_run(settings, request))


async def _run(settings: Settings, request: Request) -> None:
    shard = request.shard
    with RunLock(settings.sync.state_dir, "run.lock" if shard is None else f"run-shard-{shard[0]}of{shard[1]}.lock"):
        await _run_locked(settings, resolve_since(settings, request))


async def _run_locked(settings: Settings, request: Request) -> None:
    started = datetime.now(UTC).replace(tzinfo=None)  # naive UTC, as Mastodon's timestamps
    state = ResumeState(settings, request.since, request.shard)
    if not request.restart and (others := state.other_partitions()):
        raise UsageError(f"{others[0]} holds an unfinished run of this migration split "
                         f"{'differently' if request.shard else 'into shards'}; finish it with the same --shard, "
                         "or start over with --restart")
    progress = state.load(request.types, request.restart)
    resumed = {n: p.done_through for n, p in progress.items() if p.done_through is not None or p.failed_ids}
    events = EventLog(request.log_file) if request.log_file else None
    report = Report(settings.sync.state_dir, _label("run", request.shard), events)
    async with contextlib.AsyncExitStack() as stack:
        if events is not None:
            stack.callback(events.close)
            events.event("start", command="run", types=list(request.types), started=started.isoformat(),
                         since=request.since.isoformat() if request.since else None)
        prepared = await _prepare(stack, settings, request, progress, write=True)
        stats = prepared.stats
        # With --json, stdout carries only the summary object; the rest goes to stderr.
        display = Display(list(stats.values()), settings.sync.progress_interval,
                          out=sys.stderr if request.as_json else None)
        if events is not None:
            display.on_tick = lambda: events.event("progress", **total_of(list(stats.values())).to_json())
        destination = prepared.destination
        if state.open_uploads:  # multipart uploads an earlier run left open (a crash, an abort refused)
            left = sorted(state.open_uploads)
            aborted = [await destination.abort_multipart(key, upload_id) for key, upload_id in left]
            state.open_uploads = {u for u, done in zip(left, aborted, strict=True) if not done}
            display.message(f"mastosync: aborted {sum(aborted)} of {len(left)} multipart uploads left open by an "
                            "earlier run")
        destination.on_upload_started, destination.on_upload_ended = state.upload_started, state.upload_ended
        state.counters = lambda name: {k: getattr(stats[name], k) for k in SO_FAR}
        if resumed:
            display.message("mastosync: resuming an unfinished run (--restart starts over): "
                            + ", ".join(f"{n} after id {i}" for n, i in resumed.items()))
        sync = settings.sync
        copier = Copier(
            prepared.source, prepared.destination,
            multipart_threshold=sync.multipart_threshold, part_size=sync.part_size,
            policy=RetryPolicy(retries=sync.retries),
            # Object bytes held at once: one object at the threshold plus one part. Reading a
            # body briefly holds it twice (blocks, then joined), so this bounds about twice that.
            budget=MemoryBudget(sync.multipart_threshold + sync.part_size),
            server_side=settings.source.same_place_as(settings.destination) and bool(settings.source.endpoint),
        )
        if events is not None:
            copier.on_retry = lambda key, attempt, error: events.event("retry", key=key, attempt=attempt,
                                                                        error=error)

        async def copy_one(job: Job) -> Outcome:
            try:
                obj = job.obj
                how = WriteAs(obj.private, layout.likely_content_type(obj), layout.file_mode(obj))
                return await copier.copy(job.source_key, job.destination_key, job.known, how=how)
            except MastosyncError:
                raise  # stops the run (expired credentials): every other object would fail the same way
            except StorageError as exc:  # classified but escaped: count it, never lose the worker
                return Outcome(FAILED, 0, 1, str(exc))
            except Exception as exc:
                return Outcome(FAILED, 0, 1, redact(f"internal error: {type(exc).__name__}: {exc}"))

        async def copy(job: Job) -> None:
            fatal: MastosyncError | None = None
            try:
                outcome = await copy_one(job)
                other = job.fallback
                if outcome.status == MISSING and other is not None:
                    # Where an older Mastodon wrote this style; copied under its own key.
                    found = await copy_one(other)
                    if found.status == MISSING:
                        outcome.error = f"not found at the source, nor at {other.source_key}"
                    else:
                        job, outcome = other, found
            except EndpointDown as exc:  # the run stops; this object is one of those it leaves failed
                fatal, outcome = exc, Outcome(FAILED, 0, 1, str(exc))
            s = job.stats
            s.retries += outcome.retries
            s.done(outcome.size, job.obj.estimate)
            if outcome.status == COPIED:
                s.copied += 1
                s.bytes += outcome.bytes
                s.private += job.obj.private
                s.proofs[outcome.proof or "transfer"] += 1
                if outcome.note:
                    report.write(_entry(job, "copied", outcome.note, outcome.attempts))
            elif outcome.status == SKIPPED:
                s.skipped += 1
            else:
                if outcome.status == MISSING:
                    s.missing += 1
                else:
                    s.failed += 1
                report.write(_entry(job, outcome.status, outcome.error, outcome.attempts))
            job.progress.finish(job.obj.id, outcome.status != FAILED)
            state.save(every=2.0)
            if fatal is not None:
                raise fatal

        engine = Engine(settings, prepared.db, request, prepared.queries, prepared.retry_queries, progress,
                        stats, copy, display, prepared.learn_sizes(need_source=False), prepared.hidden)

        def save_state() -> None:
            stopped = bool(engine.signals) or engine.fatal is not None
            state.save(complete={n: engine.finished_types[n] and not stopped for n in request.types})

        try:
            await _drive(engine, stats, display, report, "run", "failed or missing objects", save_state)
        finally:
            complete = (not engine.signals and engine.fatal is None and all(engine.finished_types.values())
                        and not any(s.failed for s in stats.values()))
            RunHistory(settings.sync.state_dir).record(settings, request.types, started,
                                                       datetime.now(UTC).replace(tzinfo=None), request.since,
                                                       complete, request.shard)
            earlier = {k: sum(p.earlier.get(k, 0) for p in progress.values()) for k in SO_FAR}
            if any(earlier.values()):
                now = {k: sum(getattr(s, k) for s in stats.values()) for k in SO_FAR}
                display.message(
                    f"whole migration so far (this run and the earlier ones it resumed): "
                    f"{earlier['copied'] + now['copied']} copied ({earlier['copied']} earlier), "
                    f"{earlier['skipped'] + now['skipped']} skipped, "
                    f"{earlier['missing'] + now['missing']} missing ({earlier['missing']} found earlier), "
                    f"{format_size(earlier['bytes'] + now['bytes'])} moved")
            display.message(f"started {started:%Y-%m-%d %H:%M:%S} UTC"
                            + (" (after switching Mastodon over, catch up with: mastosync run --since last)"
                               if complete and request.since is None else ""))
            summary = {"command": "run", "started": started.isoformat(), "complete": complete,
                       "report": str(report.path), **summary_json(list(stats.values()))}
            if events is not None:
                events.event("summary", **summary)
            if request.as_json:
                sys.stdout.write(json.dumps(summary) + "\n")
                sys.stdout.flush()
    total_failed = sum(s.failed for s in stats.values())
    if engine.fatal is not None:
        raise engine.fatal
    if engine.signals:
        raise Interrupted(engine.signals[0])
    if total_failed:
        raise ObjectsFailed(f"{total_failed} objects failed to copy; they are listed in {report.path} "
                            "and the next run retries them")


def verify(settings: Settings, request: Request, as_json: bool) -> None:
    """Check the destination against the source; raises VerifyGaps (exit 1) when it lacks anything."""
    asyncio.run(_verify(settings, resolve_since(settings, request), as_json))


async def _verify(settings: Settings, request: Request, as_json: bool) -> None:
    report = Report(settings.sync.state_dir, _label("verify", request.shard))
    out = sys.stdout
    policy = RetryPolicy(retries=settings.sync.retries)
    progress = {name: TypeProgress() for name in request.types}
    async with contextlib.AsyncExitStack() as stack:
        prepared = await _prepare(stack, settings, request, progress, write=False)
        stats = prepared.stats
        # With --json, stdout carries only findings; progress and summary go to stderr.
        display = Display(list(stats.values()), settings.sync.progress_interval, mode="verify",
                          out=sys.stderr if as_json else sys.stdout)

        def finding(job: Job, status: str, reason: str, source_size: int | None,
                    destination_size: int | None) -> None:
            entry = {**_entry(job, status, reason, 1), "source_size": source_size,
                     "destination_size": destination_size}
            report.write(entry)
            if as_json:
                out.write(json.dumps(entry, ensure_ascii=False) + "\n")
            else:
                display.message(f"{status}\t{job.obj.type}\t{job.obj.id}\t{job.destination_key}\t{reason}")

        async def heads(job: Job) -> tuple[Head | None, Head | None]:
            known = job.known or Known()
            # Listed sizes save the HEADs; a key a listing did not show is asked about
            # again before it is reported.
            src = (Head(known.source_size) if known.source_size not in (None, ABSENT)
                   else await policy.call(lambda: prepared.source.head(job.source_key)))
            dst = (Head(known.destination_size) if known.destination_size not in (None, ABSENT)
                   else await policy.call(lambda: prepared.destination.head(job.destination_key)))
            return src, dst

        async def check(job: Job) -> None:
            s = job.stats
            try:
                src, dst = await heads(job)
                other = job.fallback
                if src is None and other is not None:
                    found = await heads(other)
                    if found[0] is not None:
                        job, (src, dst) = other, found  # where an older Mastodon wrote it
            except (StorageError, EndpointDown) as exc:
                s.failed += 1
                s.done(0, job.obj.estimate)
                finding(job, "error", str(exc), None, None)
                if isinstance(exc, EndpointDown):
                    raise  # the run stops
                return
            if src is None:
                s.missing += 1
                finding(job, "missing", "not found at the source", None, dst.size if dst else None)
            elif dst is None:
                s.absent += 1
                finding(job, "absent", "not at the destination", src.size, None)
            elif src.size != dst.size:
                s.different += 1
                finding(job, "different", f"size {dst.size} at the destination, {src.size} at the source",
                        src.size, dst.size)
            else:
                s.ok += 1
                s.bytes += src.size
            s.done(src.size if src is not None else 0, job.obj.estimate)
            job.progress.finish(job.obj.id, True)

        engine = Engine(settings, prepared.db, request, prepared.queries, {}, progress, stats, check, display,
                        prepared.learn_sizes(need_source=True), prepared.hidden)
        await _drive(engine, stats, display, report, "verify", "findings")
    if engine.signals:
        raise Interrupted(engine.signals[0])
    gaps = sum(s.absent + s.different + s.failed for s in stats.values())
    if gaps:
        raise VerifyGaps(f"the destination is incomplete: {gaps} objects absent, different or unreadable; "
                         f"see {report.path}")
    if (set(request.types) == set(layout.TYPE_NAMES) and request.limit is None and request.since is None
            and request.shard is None):
        # Everything checked and complete: what to change next.
        (sys.stderr if as_json else sys.stdout).write("\n" + cutover.instructions(settings))
