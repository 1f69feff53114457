"""Records → objects → jobs: what each object of a command is, and what its outcome updates.

A job is one object with its keys on both sides (layout.full_key, the one prefix rule)
and the sizes learnt by listing a batch's key ranges, which save a HEAD per object. The
Feed pages the records in id order and hands out their jobs, a batch's ranges listed a
few batches ahead, for the pool (engine/pool.py) to act on."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import time
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime

from mastosync.engine.counters import Stats
from mastosync.mastodon import layout, records
from mastosync.state.resume import TypeProgress
from mastosync.storage import Store
from mastosync.storage.base import ABSENT, Known, StorageError


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


Annotate = Callable[[list[Job]], Awaitable[None]]
BATCH_OBJECTS = 1000  # objects looked up together by listing (one ListObjectsV2 page)
LOOKAHEAD = 4  # batches being listed at once, ahead of the copies


class Feed:
    """The jobs of the selected records, type after type: first the records that failed
    last time (`retry_queries`), then those after the resume mark, in id order."""

    def __init__(self, db: records.Database, types: tuple[str, ...], queries: dict[str, records.Query | None],
                 retry_queries: dict[str, records.Query | None], progress: dict[str, TypeProgress],
                 stats: dict[str, Stats], prefixes: tuple[str, str], db_batch: int, since: datetime | None = None,
                 annotate: Annotate | None = None, hidden: layout.Hidden = layout.NOTHING_HIDDEN) -> None:
        self.db, self.types, self.queries, self.retry_queries = db, types, queries, retry_queries
        self.progress, self.stats = progress, stats
        self.source_prefix, self.destination_prefix = prefixes
        self.db_batch, self.since, self.annotate, self.hidden = db_batch, since, annotate, hidden
        # Objects looked up per listing: about what one database batch brings.
        self.list_batch = min(BATCH_OBJECTS, 2 * db_batch)
        self.finished_types: dict[str, bool] = {name: False for name in types}
        self._ahead: collections.deque[tuple[list[Job], asyncio.Task[None] | None]] = collections.deque()

    async def jobs(self) -> AsyncGenerator[Job, None]:
        try:
            for name in self.types:
                # Closed with this generator, not left to the loop's finaliser: its cursor's
                # transaction must end before the connection is used again.
                async with contextlib.aclosing(self._jobs_of(name)) as jobs:
                    async for job in jobs:
                        yield job
                self.finished_types[name] = True
        finally:
            for _, task in self._ahead:
                if task is not None:
                    task.cancel()

    async def _jobs_of(self, name: str) -> AsyncGenerator[Job, None]:
        object_type = layout.TYPES[name]
        progress, stats = self.progress[name], self.stats[name]
        stats.started = time.monotonic()  # rates per type count from its first record
        for retrying, query, after_id in ((True, self.retry_queries.get(name), None),
                                          (False, self.queries.get(name), progress.done_through)):
            if query is None:
                continue
            batch: list[Job] = []
            # Closed here when the feed is closed (a cancellation leaves an async for's generator
            # open, its cursor's transaction too, until the loop finalises it: meanwhile the
            # next use of the connection found it "closed in the middle of operation").
            rows = contextlib.aclosing(records.stream(self.db, query, after_id=after_id, prefetch=self.db_batch))
            async with rows as stream:
                async for row in stream:
                    progress.retrying_seen(row["id"])
                    objects = layout.objects_of(object_type, row, self.since, self.hidden)
                    stats.records += 1
                    progress.begin(row["id"], len(objects))
                    batch.extend(jobs_for(obj, self.source_prefix, self.destination_prefix, progress, stats)
                                 for obj in objects)
                    if len(batch) >= self.list_batch:
                        for job in await self._hand_out(batch):
                            yield job
                        batch = []
            for job in await self._hand_out(batch):
                yield job
            for job in await self._hand_out([]):  # the batches still being listed
                yield job
            if retrying:
                # A failed record the retry query no longer returns was deleted (or lost its
                # files) since: nothing is left to copy, so it is done, not failed for ever.
                progress.forget_unseen_retries()

    async def _hand_out(self, batch: list[Job]) -> list[Job]:
        """The jobs whose sizes are known, listing up to LOOKAHEAD batches ahead.

        Listing takes a round trip or two per batch; done one batch at a time it would
        leave the workers idle whenever the objects go fast (a rerun that skips them all).
        Batches still leave in database order.
        """
        if batch:
            task = asyncio.ensure_future(self.annotate(batch)) if self.annotate is not None else None
            self._ahead.append((batch, task))
        ready: list[Job] = []
        while self._ahead and (len(self._ahead) >= LOOKAHEAD or not batch):
            jobs, task = self._ahead.popleft()
            if task is not None:
                await task
            ready.extend(jobs)
        return ready


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
    await asyncio.gather(*(_learn_group(root, group, source, destination, need_source)
                           for root, group in _by_root(jobs).items()))


def _by_root(jobs: list[Job]) -> dict[str, list[Job]]:
    """The jobs (and their fallbacks) by the key prefix one listing covers."""
    groups: dict[str, list[Job]] = {}
    for job in jobs:
        group = groups.setdefault(layout.partition_root(job.obj), [])
        group.append(job)
        if job.fallback is not None:  # in the same folder: the same listing tells
            group.append(job.fallback)
    return groups


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


async def learn_sizes_of(jobs: list[Job], store: Store, side: str = "destination") -> None:
    """learn_sizes for one store (audit, fix) on one side: its sizes as the jobs' destination sizes."""

    def key(job: Job) -> str:
        return job.source_key if side == "source" else job.destination_key

    async def learn(root: str, group: list[Job]) -> None:
        sizes = await _sizes(store, root, [key(j) for j in group], 2 + len(group) // 500)
        for job in group:
            job.known = Known(None, None if sizes is None else sizes.get(key(job), ABSENT))

    await asyncio.gather(*(learn(root, group) for root, group in _by_root(jobs).items()))
