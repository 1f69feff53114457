"""`mastosync run`, as wiring: connect → records → jobs → CopyStep → CopyBook.

Records paged in id order and expanded into jobs (engine/plan.Feed), a batch's key
ranges listed ahead, a bounded pool (engine/pool.Pool) running the copy on each job;
the book writes down each outcome. Resumable, locked per state_dir; with --processes,
commands/processes.py runs one shard of it per process.
"""

from __future__ import annotations

import contextlib
import json
import sys
from datetime import datetime
from typing import Any, cast

from mastosync import loop
from mastosync.commands.common import check_source, drive, ended_at
from mastosync.commands.visibility import AppliedVisibility, Changed, owners_to_recheck, reapply
from mastosync.config.settings import Settings, SyncSettings
from mastosync.config.units import format_size
from mastosync.connect import Connected, connect
from mastosync.display.progress import Display
from mastosync.engine.books import CopyBook
from mastosync.engine.counters import Stats, summary_json, total_of
from mastosync.engine.events import Events, Quiet, stop_message
from mastosync.engine.memory import MemoryBudget, keep_large_buffers_mapped
from mastosync.engine.plan import Job
from mastosync.engine.pool import Pool
from mastosync.engine.sanity import SourceWatch, explain
from mastosync.engine.steps.copy import CopyStep
from mastosync.engine.transfer import Copier
from mastosync.errors import InternalError, ObjectsFailed, SourceMisconfigured, UsageError
from mastosync.mastodon import records
from mastosync.mastodon.version import mastodon_release
from mastosync.request import Request, filters_for, report_label, resolve_since
from mastosync.state.history import RunHistory
from mastosync.state.lock import RunLock
from mastosync.state.reports import EventLog, Report
from mastosync.state.resume import SO_FAR, ResumeState, TypeProgress
from mastosync.storage import ServerSideCopy, Store
from mastosync.storage.limits import Timetable, bandwidth_limit
from mastosync.storage.retry import RetryPolicy


def run(settings: Settings, request: Request) -> None:
    """Copy every selected object; raises ObjectsFailed or Interrupted for exit codes 1, 130, 143."""
    if request.processes > 1:
        from mastosync.commands.processes import run_many

        run_many(settings, request, request.processes)
        return
    keep_large_buffers_mapped()
    loop.run(_run(settings, request))


async def _run(settings: Settings, request: Request) -> None:
    shard = request.shard
    with RunLock(settings.sync.state_dir, "run.lock" if shard is None else f"run-shard-{shard[0]}of{shard[1]}.lock"):
        await _run_locked(settings, resolve_since(settings, request, sys.stderr if request.as_json else None))


class RunEvents(Quiet):
    """What run listens to: open uploads go into the resume state at once (a crash may come
    any time), retries and progress into the --log-file, the stop message to the display."""

    def __init__(self, state: ResumeState, log: EventLog | None, stats: dict[str, Stats], display: Display) -> None:
        self.state, self.log, self.stats, self.display = state, log, stats, display

    def stopping(self, signum: int, grace: float) -> None:
        self.display.message(stop_message(signum, grace))

    def retry(self, key: str, attempt: int, error: str) -> None:
        if self.log is not None:
            self.log.event("retry", key=key, attempt=attempt, error=error)

    def upload_started(self, key: str, upload_id: str) -> None:
        self.state.upload_started(key, upload_id)

    def upload_ended(self, key: str, upload_id: str) -> None:
        self.state.upload_ended(key, upload_id)

    def tick(self) -> None:
        if self.log is not None:
            stats = list(self.stats.values())
            self.log.event("progress", **total_of(stats).to_json(), types={s.name: s.to_json() for s in stats})


def memory_budget(sync: SyncSettings) -> MemoryBudget:
    """Object bytes held at once: one object at the threshold plus one part. Reading a body
    briefly holds it twice (blocks, then joined), so this bounds about twice that."""
    return MemoryBudget(sync.multipart_threshold + sync.part_size)


def make_copier(settings: Settings, source: Store, destination: Store, events: Events,
                checksum: bool = False) -> Copier:
    sync = settings.sync
    return Copier(
        source, destination, multipart_threshold=sync.multipart_threshold, part_size=sync.part_size,
        policy=RetryPolicy(retries=sync.retries), budget=memory_budget(sync),
        # Both sides one account on one endpoint: the destination copies from the source itself.
        server_side=(cast(ServerSideCopy, destination)
                     if settings.source.same_place_as(settings.destination) and settings.source.endpoint else None),
        checksum=checksum, bandwidth=bandwidth_limit(Timetable.parse(sync.bwlimit)), events=events,
    )


async def abort_left_open(state: ResumeState, destination: Store, display: Display) -> None:
    """Multipart uploads (or partial files) an earlier run left open: a crash, an abort refused."""
    if not state.open_uploads:
        return
    left = sorted(state.open_uploads)
    aborted = [await destination.abort_multipart(key, upload_id) for key, upload_id in left]
    state.open_uploads = {u for u, done in zip(left, aborted, strict=True) if not done}
    display.message(f"mastosync: aborted {sum(aborted)} of {len(left)} multipart uploads left open by an earlier run")


def make_display(settings: Settings, request: Request, stats: dict[str, Stats]) -> Display:
    """The live table (on stderr with --json: stdout then carries only the summary object),
    with the limits in force and what a destination without per-object ACLs means."""
    sync, destination = settings.sync, settings.destination
    timetable = Timetable.parse(sync.bwlimit)
    limits = None
    if timetable.limits or sync.tpslimit:
        tps = f", {sync.tpslimit:g} requests/s to each bucket" if sync.tpslimit else ""

        def limits() -> str:
            return f"limit {timetable.describe(timetable.rate_at(datetime.now()))} read{tps}"

    note = None
    if destination.kind == "s3" and not destination.acl:
        note = ("not private: {private} objects Mastodon keeps private (backups, imports, media of suspended "
                "accounts and of removed posts) are in a bucket without per-object ACLs (destination.acl = \"\"): "
                "its bucket policy decides who reads them (README: provider notes)")
    return Display(list(stats.values()), sync.progress_interval, out=sys.stderr if request.as_json else None,
                   limits=limits, private_note=note)


async def _run_locked(settings: Settings, request: Request) -> None:
    stats = {name: Stats(name) for name in request.types}
    state = ResumeState(settings, request.since, request.shard, counted=stats)
    if not request.restart and (others := state.other_partitions()):
        raise UsageError(f"{others[0]} holds an unfinished run of this migration split "
                         f"{'differently' if request.shard else 'into shards'}; finish it with the same --shard, "
                         "or start over with --restart")
    progress = state.load(request.types, request.restart)
    resumed = {n: p.done_through for n, p in progress.items() if p.done_through is not None or p.failed_ids}
    log = EventLog(request.log_file) if request.log_file else None
    report = Report(settings.sync.state_dir, report_label("run", request.shard), log)
    display = make_display(settings, request, stats)
    events = RunEvents(state, log, stats, display)
    async with contextlib.AsyncExitStack() as stack:
        if log is not None:
            stack.callback(log.close)
        connected = await connect(stack, settings, request, progress, write=True, stats=stats, events=events)
        # The database's clock, naive UTC as Mastodon's timestamps: what --since compares with.
        started = await records.clock(connected.db)
        state.sequence_started = state.sequence_started or started
        release = await mastodon_release(connected.db)
        if log is not None:
            log.event("start", command="run", types=list(request.types), started=started.isoformat(),
                      since=request.since.isoformat() if request.since else None)
        destination = connected.destination
        await abort_left_open(state, destination, display)
        if resumed:
            display.message("mastosync: resuming an unfinished run (--restart starts over): "
                            + ", ".join(f"{n} after id {i}" for n, i in resumed.items()))
        changed = await follow_visibility(settings, request, connected)
        if changed is not None and (changed.records or changed.failed):
            display.message(changed.describe())
        step = CopyStep(make_copier(settings, connected.source, destination, events, request.checksum))
        watch = SourceWatch(request.accept_missing)
        book = CopyBook(report, state, watch)
        busy = [0]  # copies in flight, for --metrics

        async def copy(job: Job) -> None:
            busy[0] += 1
            try:
                copied = await step(job)
            finally:
                busy[0] -= 1
            book.record(copied)
            if copied.fatal is not None:
                raise copied.fatal

        pool = Pool(copy, request.concurrency, settings.sync.grace_period, events)
        if settings.sync.metrics_addr:  # prometheus_client imported only when asked for
            from mastosync.display.metrics import RunState, serving

            observed = RunState(list(stats.values()), {"source": connected.source.pacer,
                                                       "destination": destination.pacer},
                                display, lambda: busy[0], release[1] if release else "", lambda: bool(pool.signals))
            await stack.enter_async_context(serving(settings.sync.metrics_addr, observed,
                                                    settings.sync.metrics_linger, display.message))
        feed = connected.feed(settings, request, progress, connected.learn_sizes(need_source=False), retry=True)

        def save_state() -> None:
            check_source(pool, watch)
            # A --limit trial finishes no type: the next run goes on after it, not over again.
            stopped = pool.stopped or request.limit is not None
            state.save(complete={n: feed.finished_types[n] and not stopped for n in request.types})

        try:
            await drive(pool, feed.jobs(), stats, display, report, "run", "failed or missing objects", events,
                        save_state)
        finally:
            complete = (not pool.stopped and all(feed.finished_types.values())
                        and not any(s.failed for s in stats.values()))
            RunHistory(settings.sync.state_dir).record(settings, request.types, started,
                                                       await ended_at(connected.db), request.since,
                                                       complete, request.shard, state.sequence_started,
                                                       request.limit, mastodon=release[1] if release else None)
            if changed is not None and changed.records:
                display.message(changed.describe())
            if release is not None:
                display.message(f"database: Mastodon {release[1]} (newest migration {release[0]})")
            summarise_run(display, stats, progress, started, complete, request)
            summary: dict[str, Any] = {"command": "run", "started": started.isoformat(), "complete": complete,
                                       "report": str(report.path), **summary_json(list(stats.values()))}
            if log is not None:
                if isinstance(pool.fatal, InternalError):
                    log.event("internal-error", error=str(pool.fatal.error), traceback=pool.fatal.traceback)
                log.event("summary", **summary)
            if request.as_json:
                sys.stdout.write(json.dumps(summary) + "\n")
                sys.stdout.flush()
        if isinstance(pool.fatal, SourceMisconfigured):
            await explain(pool.fatal, watch, settings.source, connected.source)
    total_failed = sum(s.failed for s in stats.values())
    pool.raise_if_stopped()
    if total_failed:
        raise ObjectsFailed(f"{total_failed} objects failed to copy; they are listed in {report.path} "
                            "and the next run retries them")


async def follow_visibility(settings: Settings, request: Request, connected: Connected) -> Changed | None:
    """Media whose account or post Mastodon hid or showed again since the last run: their
    ACL (or mode) set as Mastodon has it now (visibility.py). None when no media is selected."""
    if "media_attachments" not in request.types:
        return None
    applied = AppliedVisibility(settings, request.shard)
    owners = await owners_to_recheck(connected.db, settings, request.shard, applied.load(), connected.hidden)
    changed = await reapply(connected.db, connected.destination, settings, filters_for(settings, request), owners,
                            connected.hidden, RetryPolicy(retries=settings.sync.retries), request.concurrency)
    if not changed.failed:
        applied.save(connected.hidden)
    return changed


def summarise_run(display: Display, stats: dict[str, Stats], progress: dict[str, TypeProgress], started: datetime,
                  complete: bool, request: Request) -> None:
    """The lines after the table: the whole migration so far (a resumed run), and when it started."""
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
