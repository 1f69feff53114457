"""What the record-driven commands (run, verify, audit, fix) share around the engine:
driving the pool under the progress display, and the end of a run's books."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, Callable
from datetime import UTC, datetime
from typing import TypeVar

from mastosync.display.progress import Display
from mastosync.engine.counters import Stats
from mastosync.engine.events import Events
from mastosync.engine.pool import Pool
from mastosync.engine.sanity import SourceWatch
from mastosync.errors import MastosyncError, SourceMisconfigured
from mastosync.mastodon import records
from mastosync.state.reports import Report

J = TypeVar("J")


async def drive(pool: Pool[J], jobs: AsyncGenerator[J, None], stats: dict[str, Stats], display: Display,
                report: Report, command: str, counted: str, events: Events,
                at_end: Callable[[], None] | None = None) -> None:
    """Run the pool under the progress display, telling `events` a tick every progress
    interval; whatever happens, close the books and summarise."""
    ticker = asyncio.create_task(_ticks(display.interval, events))
    try:
        with display.running():
            await pool.run(jobs)
    finally:
        ticker.cancel()
        for s in stats.values():
            s.ended = time.monotonic()
        if at_end is not None:
            at_end()
        report.close()
        stopped = " (interrupted)" if pool.signals else " (stopped)" if pool.fatal is not None else ""
        display.summary(f"mastosync {command}{stopped}")
        display.message(f"report: {report.path} ({report.lines} {counted})")


async def _ticks(interval: float, events: Events) -> None:
    while True:
        await asyncio.sleep(interval)
        events.tick()


async def ended_at(db: records.Database) -> datetime:
    """The database's time at the end, or this machine's when the database is what failed."""
    try:
        return await records.clock(db)
    except MastosyncError:
        return datetime.now(UTC).replace(tzinfo=None)


def check_source(pool: Pool[J], watch: SourceWatch) -> None:
    """At the end of a run or verify that was not stopped: a type (nearly) wholly absent at
    the source is a wrong source setting, not a success."""
    if pool.stopped:
        return
    try:
        watch.at_end()
    except SourceMisconfigured as exc:
        pool.fail(exc)
