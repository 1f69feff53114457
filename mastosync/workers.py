"""The engine of run and verify: records paged in, objects out to a bounded pool of workers.

A producer pages records and expands them into jobs, listing each batch's key ranges a
few batches ahead; a bounded queue feeds a fixed set of workers that run the command's
step on each job. Bounded queues keep memory flat however large the tables are.
SIGINT/SIGTERM stop the intake; the copies in flight get the grace period (a second
signal ends it), and a MastosyncError from a step (an endpoint down, a full disk)
stops the run the same way, then is raised. Any other exception is a defect: it stops
the run the same way as an InternalError (exit 70), never swallowed with its worker."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import signal
import time
from collections.abc import Callable
from typing import Any

from mastosync import layout, records
from mastosync.config import Settings
from mastosync.errors import InternalError, MastosyncError
from mastosync.plan import BATCH_OBJECTS, LOOKAHEAD, Action, Annotate, Job, jobs_for
from mastosync.progress import Display, Stats
from mastosync.request import Request
from mastosync.state import Report, TypeProgress


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
        self.grace = settings.sync.grace_period  # after Ctrl-C, copies in flight get this long to finish
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
                f"(at most {self.grace:.0f}s) and saving progress; press Ctrl-C again to stop at once"
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
        await asyncio.wait({finished, hard}, timeout=self.grace, return_when=asyncio.FIRST_COMPLETED)
        hard.cancel()
        for w in pending:
            w.cancel()
        await asyncio.gather(*pending, return_exceptions=True)

    async def _produce(self) -> None:
        try:
            await self._produce_all()
        except MastosyncError:
            raise
        except Exception as exc:  # a defect: told as one, never as a database or storage error
            raise InternalError(exc) from exc
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
            for retrying, query, after_id in ((True, self.retry_queries.get(name), None),
                                              (False, self.queries.get(name), progress.done_through)):
                if query is None:
                    continue
                batch: list[Job] = []
                # Closed here when the producer stops (a cancellation leaves an async for's generator
                # open, its cursor's transaction too, until the loop finalises it: meanwhile the
                # next use of the connection found it "closed in the middle of operation").
                rows = contextlib.aclosing(records.stream(self.db, query, after_id=after_id, prefetch=self.batch))
                async with rows as stream:
                    async for row in stream:
                        if self.stop.is_set():
                            return
                        progress.retrying_seen(row["id"])
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
                if retrying:
                    # A failed record the retry query no longer returns was deleted (or lost its
                    # files) since: nothing is left to copy, so it is done, not failed for ever.
                    progress.forget_unseen_retries()
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
                self._fail(exc)
                return
            except Exception as exc:
                # A defect. Were it left to kill this worker alone, the run would "complete" with
                # the job's record never finished, or hang once every worker had died.
                self._fail(InternalError(exc))
                return

    def _fail(self, error: MastosyncError) -> None:
        if self.fatal is None:
            self.fatal = error
        self.stop.set()




async def drive(engine: Engine, stats: dict[str, Stats], display: Display, report: Report, command: str,
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
        stopped = " (interrupted)" if engine.signals else " (stopped)" if engine.fatal is not None else ""
        display.summary(f"mastosync {command}{stopped}")
        display.message(f"report: {report.path} ({report.lines} {counted})")
