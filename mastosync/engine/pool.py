"""A bounded pool of workers: jobs in, one action on each, a fixed number at once.

It knows nothing of records, objects or storage: a command gives it an async iterator of
jobs (plan.Feed for the record-driven commands), the action to run on each, and the
events to tell. A bounded queue keeps memory flat however many jobs come.

SIGINT/SIGTERM stop the intake; the actions in flight get the grace period (a second
signal ends it). A MastosyncError from an action (an endpoint down, a full disk) stops
the pool the same way and is kept in `fatal`. Any other exception is a defect: it stops
the pool the same way as an InternalError (exit 70), never swallowed with its worker.
An error from the jobs' iterator (the database) is raised once the workers wound down.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Any, Generic, TypeVar

from mastosync.engine.events import Events
from mastosync.errors import InternalError, Interrupted, MastosyncError
from mastosync.loop import stopping_signals

J = TypeVar("J")


class Pool(Generic[J]):
    def __init__(self, action: Callable[[J], Awaitable[None]], concurrency: int, grace: float,
                 events: Events) -> None:
        self.action = action
        self.concurrency = concurrency
        self.grace = grace  # after Ctrl-C, actions in flight get this long to finish
        self.events = events
        self.queue: asyncio.Queue[J | None] = asyncio.Queue(maxsize=concurrency * 2)
        self.signals: list[int] = []
        self.fatal: MastosyncError | None = None
        self.stop = asyncio.Event()
        self.hard_stop = asyncio.Event()

    @property
    def stopped(self) -> bool:
        """Ended before its jobs did: a signal or an error that ends the run."""
        return bool(self.signals) or self.fatal is not None

    def on_signal(self, signum: int) -> None:
        self.signals.append(signum)
        if len(self.signals) == 1:
            self.events.stopping(signum, self.grace)
            self.stop.set()
        else:
            self.hard_stop.set()

    async def run(self, jobs: AsyncGenerator[J, None]) -> None:
        with stopping_signals(self.on_signal):
            await self._run(jobs)

    async def _run(self, jobs: AsyncGenerator[J, None]) -> None:
        workers = [asyncio.create_task(self._worker()) for _ in range(self.concurrency)]
        producer = asyncio.create_task(self._produce(jobs))
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

    async def _produce(self, jobs: AsyncGenerator[J, None]) -> None:
        try:
            # Closed here when the pool stops, so that the iterator's own clean-up (a cursor's
            # transaction, listings ahead) runs now, not whenever the loop finalises it.
            async with contextlib.aclosing(jobs):
                async for job in jobs:
                    if self.stop.is_set():
                        return
                    await self.queue.put(job)
        except MastosyncError:
            raise
        except Exception as exc:  # a defect: told as one, never as a database or storage error
            raise InternalError(exc) from exc

    async def _wind_down(self, workers: list[asyncio.Task[None]]) -> None:
        """Stop taking work; let the actions in flight finish (bounded), then cancel the rest.

        Queued jobs are dropped (their records stay unfinished in the resume state). A
        cancelled multipart copy aborts its upload on the way out.
        """
        pending = [w for w in workers if not w.done()]
        if not pending:
            return
        while not self.queue.empty():
            self.queue.get_nowait()
        for _ in pending:
            self.queue.put_nowait(None)
        # As long as the actions in flight need, at most the grace period, and no longer: the
        # wait ends when every worker is done or a second signal comes, whichever is first.
        finished: asyncio.Future[Any] = asyncio.gather(*pending, return_exceptions=True)
        hard: asyncio.Future[Any] = asyncio.create_task(self.hard_stop.wait())
        await asyncio.wait({finished, hard}, timeout=self.grace, return_when=asyncio.FIRST_COMPLETED)
        hard.cancel()
        for w in pending:
            w.cancel()
        await asyncio.gather(*pending, return_exceptions=True)

    async def _worker(self) -> None:
        while (job := await self.queue.get()) is not None:
            try:
                await self.action(job)
            except MastosyncError as exc:
                # An error that ends the run (not the job): stop as after Ctrl-C, then raise it.
                self.fail(exc)
                return
            except Exception as exc:
                # A defect. Were it left to kill this worker alone, the run would "complete" with
                # the job never finished, or hang once every worker had died.
                self.fail(InternalError(exc))
                return

    def raise_if_stopped(self) -> None:
        """After run(): the error that ended it, or Interrupted for the signal that did."""
        if self.fatal is not None:
            raise self.fatal
        if self.signals:
            raise Interrupted(self.signals[0])

    def fail(self, error: MastosyncError) -> None:
        """End the run with `error` (the first one told is kept)."""
        if self.fatal is None:
            self.fatal = error
        self.stop.set()
