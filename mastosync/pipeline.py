"""The commands that touch objects, as wiring: connect → records → jobs → step → books.

    run      CopyStep on every job, CopyBook records it; resumable, locked per state_dir
    verify   CheckStep on every job, VerifyBook records it; the cut-over steps when complete

Both share one engine (workers.py): records paged in id order, expanded into jobs
(plan.py), a batch's key ranges listed ahead, a bounded pool of workers running the step.
`dry-run` is dryrun.py: it needs the database only.
"""

from __future__ import annotations

import contextlib
import json
import sys
from datetime import UTC, datetime
from typing import cast

from mastosync import cutover, layout, loop, records
from mastosync.config import Settings, SyncSettings, format_size
from mastosync.connect import Connected, connect
from mastosync.errors import (
    InternalError,
    Interrupted,
    MastosyncError,
    ObjectsFailed,
    SourceMisconfigured,
    UsageError,
    VerifyGaps,
)
from mastosync.memory import MemoryBudget, keep_large_buffers_mapped
from mastosync.metrics import RunState, serving
from mastosync.observers import CopyBook, VerifyBook
from mastosync.plan import Job
from mastosync.progress import Display, Stats, summary_json, total_of
from mastosync.request import Request, filters_for, report_label, resolve_since
from mastosync.sanity import SourceWatch, explain
from mastosync.state import SO_FAR, EventLog, Report, ResumeState, RunHistory, RunLock, TypeProgress
from mastosync.steps.check import CheckStep
from mastosync.steps.copy import CopyStep
from mastosync.storage import ServerSideCopy, Store
from mastosync.storage.limits import Timetable, bandwidth_limit
from mastosync.storage.retry import RetryPolicy
from mastosync.transfer import Copier
from mastosync.version import mastodon_release
from mastosync.visibility import AppliedVisibility, Changed, owners_to_recheck, reapply
from mastosync.workers import Engine, drive


def run(settings: Settings, request: Request) -> None:
    """Copy every selected object; raises ObjectsFailed or Interrupted for exit codes 1, 130, 143."""
    if request.processes > 1:
        from mastosync.processes import run_many

        run_many(settings, request, request.processes)
        return
    keep_large_buffers_mapped()
    loop.run(_run(settings, request))


async def _run(settings: Settings, request: Request) -> None:
    shard = request.shard
    with RunLock(settings.sync.state_dir, "run.lock" if shard is None else f"run-shard-{shard[0]}of{shard[1]}.lock"):
        await _run_locked(settings, resolve_since(settings, request, sys.stderr if request.as_json else None))


def memory_budget(sync: SyncSettings) -> MemoryBudget:
    """Object bytes held at once: one object at the threshold plus one part. Reading a body
    briefly holds it twice (blocks, then joined), so this bounds about twice that."""
    return MemoryBudget(sync.multipart_threshold + sync.part_size)


def make_copier(settings: Settings, source: Store, destination: Store, events: EventLog | None,
                checksum: bool = False) -> Copier:
    sync = settings.sync
    copier = Copier(
        source, destination, multipart_threshold=sync.multipart_threshold, part_size=sync.part_size,
        policy=RetryPolicy(retries=sync.retries), budget=memory_budget(sync),
        # Both sides one account on one endpoint: the destination copies from the source itself.
        server_side=(cast(ServerSideCopy, destination)
                     if settings.source.same_place_as(settings.destination) and settings.source.endpoint else None),
        checksum=checksum, bandwidth=bandwidth_limit(Timetable.parse(sync.bwlimit)),
    )
    if events is not None:
        copier.on_retry = lambda key, attempt, error: events.event("retry", key=key, attempt=attempt, error=error)
    return copier


async def abort_left_open(state: ResumeState, destination: Store, display: Display) -> None:
    """Multipart uploads (or partial files) an earlier run left open: a crash, an abort refused."""
    if not state.open_uploads:
        return
    left = sorted(state.open_uploads)
    aborted = [await destination.abort_multipart(key, upload_id) for key, upload_id in left]
    state.open_uploads = {u for u, done in zip(left, aborted, strict=True) if not done}
    display.message(f"mastosync: aborted {sum(aborted)} of {len(left)} multipart uploads left open by an earlier run")


async def _run_locked(settings: Settings, request: Request) -> None:
    state = ResumeState(settings, request.since, request.shard)
    if not request.restart and (others := state.other_partitions()):
        raise UsageError(f"{others[0]} holds an unfinished run of this migration split "
                         f"{'differently' if request.shard else 'into shards'}; finish it with the same --shard, "
                         "or start over with --restart")
    progress = state.load(request.types, request.restart)
    resumed = {n: p.done_through for n, p in progress.items() if p.done_through is not None or p.failed_ids}
    events = EventLog(request.log_file) if request.log_file else None
    report = Report(settings.sync.state_dir, report_label("run", request.shard), events)
    async with contextlib.AsyncExitStack() as stack:
        if events is not None:
            stack.callback(events.close)
        connected = await connect(stack, settings, request, progress, write=True)
        # The database's clock, naive UTC as Mastodon's timestamps: what --since compares with.
        started = await records.clock(connected.db)
        state.sequence_started = state.sequence_started or started
        release = await mastodon_release(connected.db)
        if events is not None:
            events.event("start", command="run", types=list(request.types), started=started.isoformat(),
                         since=request.since.isoformat() if request.since else None)
        stats = connected.stats
        # With --json, stdout carries only the summary object; the rest goes to stderr.
        display = Display(list(stats.values()), settings.sync.progress_interval,
                          out=sys.stderr if request.as_json else None)
        if events is not None:
            display.on_tick = lambda: events.event("progress", **total_of(list(stats.values())).to_json(),
                                                   types={s.name: s.to_json() for s in stats.values()})
        timetable = Timetable.parse(settings.sync.bwlimit)
        if timetable.limits or settings.sync.tpslimit:
            tps = f", {settings.sync.tpslimit:g} requests/s to each bucket" if settings.sync.tpslimit else ""
            display.limit_text = lambda: (f"limit {timetable.describe(timetable.rate_at(datetime.now()))}"
                                          f" read{tps}")
        destination = connected.destination
        if destination.keeps_metadata and not settings.destination.acl:
            display.private_note = (
                "not private: {private} objects Mastodon keeps private (backups, imports, media of suspended "
                "accounts and of removed posts) are in a bucket without per-object ACLs (destination.acl = \"\"): "
                "its bucket policy decides who reads them (README: provider notes)")
        await abort_left_open(state, destination, display)
        destination.on_upload_started, destination.on_upload_ended = state.upload_started, state.upload_ended
        state.counters = lambda name: {k: getattr(stats[name], k) for k in SO_FAR}
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

        observed = RunState(list(stats.values()), {"source": connected.source.pacer, "destination": destination.pacer},
                            display, lambda: busy[0], release[1] if release else "", lambda: bool(engine.signals))
        await stack.enter_async_context(serving(settings.sync.metrics_addr, observed, settings.sync.metrics_linger,
                                                display.message))

        engine = Engine(settings, connected.db, request, connected.queries, connected.retry_queries, progress,
                        stats, copy, display, connected.learn_sizes(need_source=False), connected.hidden)

        def save_state() -> None:
            if not engine.signals and engine.fatal is None:
                check_source(engine, watch)
            # A --limit trial finishes no type: the next run goes on after it, not over again.
            stopped = bool(engine.signals) or engine.fatal is not None or request.limit is not None
            state.save(complete={n: engine.finished_types[n] and not stopped for n in request.types})

        try:
            await drive(engine, stats, display, report, "run", "failed or missing objects", save_state)
        finally:
            complete = (not engine.signals and engine.fatal is None and all(engine.finished_types.values())
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
            summary = {"command": "run", "started": started.isoformat(), "complete": complete,
                       "report": str(report.path), **summary_json(list(stats.values()))}
            if events is not None:
                if isinstance(engine.fatal, InternalError):
                    events.event("internal-error", error=str(engine.fatal.error), traceback=engine.fatal.traceback)
                events.event("summary", **summary)
            if request.as_json:
                sys.stdout.write(json.dumps(summary) + "\n")
                sys.stdout.flush()
        if isinstance(engine.fatal, SourceMisconfigured):
            await explain(engine.fatal, watch, settings.source, connected.source)
    total_failed = sum(s.failed for s in stats.values())
    if engine.fatal is not None:
        raise engine.fatal
    if engine.signals:
        raise Interrupted(engine.signals[0])
    if total_failed:
        raise ObjectsFailed(f"{total_failed} objects failed to copy; they are listed in {report.path} "
                            "and the next run retries them")


async def ended_at(db: records.Database) -> datetime:
    """The database's time at the end, or this machine's when the database is what failed."""
    try:
        return await records.clock(db)
    except MastosyncError:
        return datetime.now(UTC).replace(tzinfo=None)


def check_source(engine: Engine, watch: SourceWatch) -> None:
    """At the end of a run or verify: a type (nearly) wholly absent at the source is a wrong
    source setting, not a success."""
    try:
        watch.at_end()
    except SourceMisconfigured as exc:
        engine.fatal = exc


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


def verify(settings: Settings, request: Request, as_json: bool, checksum: bool = False, sample: float = 0.0) -> None:
    """Check the destination against the source; raises VerifyGaps (exit 1) when it lacks anything."""
    loop.run(_verify(settings, resolve_since(settings, request, sys.stderr if as_json else None), as_json,
                        checksum, sample))


async def _verify(settings: Settings, request: Request, as_json: bool, checksum: bool = False,
                  sample: float = 0.0) -> None:
    report = Report(settings.sync.state_dir, report_label("verify", request.shard))
    progress = {name: TypeProgress() for name in request.types}
    async with contextlib.AsyncExitStack() as stack:
        connected = await connect(stack, settings, request, progress, write=False)
        stats = connected.stats
        # With --json, stdout carries only findings; progress and summary go to stderr.
        display = Display(list(stats.values()), settings.sync.progress_interval, mode="verify",
                          out=sys.stderr if as_json else sys.stdout)
        # A bucket sending no ACL ("") leaves visibility to its policy: nothing per object to check.
        hides = settings.destination.is_folder or bool(settings.destination.acl)
        step = CheckStep(connected.source, connected.destination, RetryPolicy(retries=settings.sync.retries),
                         checksum, sample, check_private=hides)
        watch = SourceWatch(request.accept_missing)
        book = VerifyBook(report, display, sys.stdout, as_json, watch)

        async def check(job: Job) -> None:
            finding = await step(job)
            book.record(finding)
            if finding.fatal is not None:
                raise finding.fatal  # the run stops

        engine = Engine(settings, connected.db, request, connected.queries, {}, progress, stats, check, display,
                        connected.learn_sizes(need_source=True), connected.hidden)
        started = await records.clock(connected.db)
        release = await mastodon_release(connected.db)

        def at_end() -> None:
            if not engine.signals and engine.fatal is None:
                check_source(engine, watch)

        await drive(engine, stats, display, report, "verify", "findings", at_end)
        if checksum:
            proofs = total_of(list(stats.values())).proofs
            display.message(f"content compared: {proofs['etag']} by equal MD5 ETags, {proofs['downloaded']} "
                            f"downloaded from both sides and hashed ({sample:g}% sample of the rest), "
                            f"{proofs['size']} by size only")
        else:
            display.message("compared: sizes only (verify --checksum compares content: equal MD5 ETags, "
                            "or a sample downloaded and hashed)")
        if step.acl_unreadable:
            display.message(f"hidden media not checked: the destination tells no per-object ACL "
                            f"({step.acl_unreadable}); its bucket policy decides who reads them")
        elif hides and step.private_checked:
            display.message(f"hidden media checked: {step.private_checked} objects Mastodon keeps private are "
                            "not public at the destination")
        gaps = sum(s.absent + s.different + s.failed for s in stats.values())
        if not engine.signals:
            RunHistory(settings.sync.state_dir).record(
                settings, request.types, started, await ended_at(connected.db), request.since,
                engine.fatal is None, request.shard, limit=request.limit, command="verify",
                clean=engine.fatal is None and not gaps, mastodon=release[1] if release else None)
        if isinstance(engine.fatal, SourceMisconfigured):
            await explain(engine.fatal, watch, settings.source, connected.source)
    if engine.fatal is not None:
        raise engine.fatal
    if engine.signals:
        raise Interrupted(engine.signals[0])
    if gaps:
        raise VerifyGaps(f"the destination is incomplete: {gaps} objects absent, different or unreadable; "
                         f"see {report.path}")
    if (set(request.types) == set(layout.TYPE_NAMES) and request.limit is None and request.since is None
            and request.shard is None):
        # Everything checked and complete: what to change next.
        try:
            text = cutover.instructions(settings, release[1] if release else None)
        except UsageError as exc:  # a setting the printed lines need is missing: say which
            text = f"cut-over: {exc}\n"
        (sys.stderr if as_json else sys.stdout).write("\n" + text)
