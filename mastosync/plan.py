"""Records → objects → jobs: what each object of a run is, and what its outcome updates.

A job is one object with its keys on both sides (layout.full_key, the one prefix rule)
and the sizes learnt by listing a batch's key ranges, which save a HEAD per object."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from mastosync import layout
from mastosync.progress import Stats
from mastosync.state import TypeProgress
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


Action = Callable[[Job], Awaitable[None]]
Annotate = Callable[[list[Job]], Awaitable[None]]
BATCH_OBJECTS = 1000  # objects looked up together by listing (one ListObjectsV2 page)
LOOKAHEAD = 4  # batches being listed at once, ahead of the copies

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
        group = groups.setdefault(layout.partition_root(job.obj), [])
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


async def learn_sizes_of(jobs: list[Job], store: Store, side: str = "destination") -> None:
    """learn_sizes for one store (audit, fix) on one side: its sizes as the jobs' destination sizes."""

    def key(job: Job) -> str:
        return job.source_key if side == "source" else job.destination_key

    groups: dict[str, list[Job]] = {}
    for job in jobs:
        group = groups.setdefault(layout.partition_root(job.obj), [])
        group.append(job)
        if job.fallback is not None:
            group.append(job.fallback)

    async def learn(root: str, group: list[Job]) -> None:
        sizes = await _sizes(store, root, [key(j) for j in group], 2 + len(group) // 500)
        for job in group:
            job.known = Known(None, None if sizes is None else sizes.get(key(job), ABSENT))

    await asyncio.gather(*(learn(root, group) for root, group in groups.items()))
