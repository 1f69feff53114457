"""`mastosync verify`, as wiring: connect → records → jobs → CheckStep → VerifyBook; the
cut-over settings printed when everything was checked and found complete."""

from __future__ import annotations

import contextlib
import sys

from mastosync import loop
from mastosync.commands import cutover
from mastosync.commands.common import check_source, drive, ended_at
from mastosync.config.settings import Settings
from mastosync.connect import connect
from mastosync.display.progress import Display
from mastosync.engine.books import VerifyBook
from mastosync.engine.counters import total_of
from mastosync.engine.events import Told
from mastosync.engine.plan import Job
from mastosync.engine.pool import Pool
from mastosync.engine.sanity import SourceWatch, explain
from mastosync.engine.steps.check import CheckStep
from mastosync.errors import SourceMisconfigured, UsageError, VerifyGaps
from mastosync.mastodon import layout, records
from mastosync.mastodon.version import mastodon_release
from mastosync.request import Request, report_label, resolve_since
from mastosync.state.history import RunHistory
from mastosync.state.reports import Report
from mastosync.state.resume import TypeProgress
from mastosync.storage.retry import RetryPolicy


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
        events = Told(display.message)
        # A bucket sending no ACL ("") leaves visibility to its policy: nothing per object to check.
        hides = settings.destination.is_folder or bool(settings.destination.acl)
        step = CheckStep(connected.source, connected.destination, RetryPolicy(retries=settings.sync.retries),
                         checksum, sample, check_private=hides)
        watch = SourceWatch(request.accept_missing)
        book = VerifyBook(report, display.message, sys.stdout, as_json, watch)

        async def check(job: Job) -> None:
            finding = await step(job)
            book.record(finding)
            if finding.fatal is not None:
                raise finding.fatal  # the run stops

        pool = Pool(check, request.concurrency, settings.sync.grace_period, events)
        feed = connected.feed(settings, request, progress, connected.learn_sizes(need_source=True))
        started = await records.clock(connected.db)
        release = await mastodon_release(connected.db)
        await drive(pool, feed.jobs(), stats, display, report, "verify", "findings", events,
                    lambda: check_source(pool, watch))
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
        if not pool.signals:
            RunHistory(settings.sync.state_dir).record(
                settings, request.types, started, await ended_at(connected.db), request.since,
                pool.fatal is None, request.shard, limit=request.limit, command="verify",
                clean=pool.fatal is None and not gaps, mastodon=release[1] if release else None)
        if isinstance(pool.fatal, SourceMisconfigured):
            await explain(pool.fatal, watch, settings.source, connected.source)
    pool.raise_if_stopped()
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
