"""Everything a command connects to, opened and checked before any object is touched.

The SSH connection (one login for the database tunnel and SFTP), the database, the two
stores; their checks run at once, while the database is asked what to do, so a bad
password or a missing bucket stops the command in seconds, with one line."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from mastosync.config.settings import Settings
from mastosync.engine.counters import Stats
from mastosync.engine.plan import Annotate, Feed, learn_sizes
from mastosync.errors import ConfigError, FolderError
from mastosync.mastodon import layout, records
from mastosync.request import Request, filters_for
from mastosync.state.resume import TypeProgress
from mastosync.storage import Store, make_store, needs_ssh
from mastosync.storage.base import UNTOLD, ObjectAttrs, UploadEvents

if TYPE_CHECKING:
    from mastosync.storage.s3 import Bucket
    from mastosync.tunnel import Tunnel


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
            if tunnel is None:
                from mastosync.tunnel import Tunnel

                tunnel = await stack.enter_async_context(Tunnel(settings.ssh, settings.database))
            endpoint = tunnel.endpoint
        db = records.Database(settings.database, endpoint)
        stack.push_async_callback(db.close)
        await db.connection()  # fail now, before any work, if it cannot be reached
        yield db




async def refuse_one_bucket_twice(settings: Settings, source: Store, destination: Store) -> None:
    """The same bucket and prefix on both sides under two spellings of its endpoint: the
    configuration cannot tell (BucketSettings.same_place_as compares what is written), a probe can."""
    a, b = settings.source, settings.destination
    if not (a.kind == b.kind == "s3" and a.bucket == b.bucket and a.key_prefix == b.key_prefix):
        return
    if await cast("Bucket", source).holds_upload_of(cast("Bucket", destination)):
        raise ConfigError("destination", f"is the source's bucket {a.bucket!r} under another address "
                                         f"({b.endpoint or 'AWS'} and {a.endpoint or 'AWS'}): every object would be "
                                         "skipped as already there")


@dataclass
class Connected:
    """What both run and verify set up before touching any object."""

    db: records.Database
    source: Store
    destination: Store
    queries: dict[str, records.Query | None]
    retry_queries: dict[str, records.Query | None]
    stats: dict[str, Stats]
    hidden: layout.Hidden

    def learn_sizes(self, need_source: bool) -> Annotate:
        """learn_sizes on these buckets, as the feed's annotate step."""
        return functools.partial(learn_sizes, source=self.source, destination=self.destination,
                                 need_source=need_source)

    def feed(self, settings: Settings, request: Request, progress: dict[str, TypeProgress],
             annotate: Annotate | None, retry: bool = False) -> Feed:
        """The jobs of the selected records (those that failed last time first, with `retry`)."""
        prefixes = (settings.source.key_prefix, settings.destination.key_prefix)
        return Feed(self.db, request.types, self.queries, self.retry_queries if retry else {}, progress, self.stats,
                    prefixes, settings.sync.db_batch, request.since, annotate, self.hidden)


async def connect(stack: contextlib.AsyncExitStack, settings: Settings, request: Request,
                  progress: dict[str, TypeProgress], write: bool, only: str | None = None,
                  stats: dict[str, Stats] | None = None, events: UploadEvents = UNTOLD) -> Connected:
    """Connect everything and check access up front: a bad password or bucket stops us here.

    With `only` ("source" or "destination": audit, fix), that side alone is opened; it then
    stands for both. `stats` are filled in with the totals to do (made here when not given);
    the stores written to tell `events` of the uploads they open."""
    filters = filters_for(settings, request)
    destination_side = settings.destination
    if write and only is None and destination_side.kind == "filesystem" and not destination_side.owner \
            and os.geteuid() == 0:
        # Files and folders a copy makes would be root's: Mastodon (its own user) could not add to them.
        raise FolderError("destination.owner is not set and mastosync runs as root: every file and folder it makes "
                          "would be root's, and Mastodon could not add to them; set it to the user Mastodon runs as "
                          "(destination.owner = \"mastodon\"), or \"root\" if that is really meant")
    tunnel = await open_ssh(stack, settings, with_files=True)
    db = await stack.enter_async_context(open_database(settings, tunnel))
    pool = request.concurrency + 8
    if only is not None:
        side = settings.source if only == "source" else settings.destination
        # Mastodon's S3_PERMISSION is one setting: the old bucket was written as the new one is.
        store: Store = await stack.enter_async_context(make_store(side, only, pool, settings.sync.timeout, tunnel,
                                                                  acl=settings.destination.acl,
                                                                  tpslimit=settings.sync.tpslimit, events=events))
        source = destination = store
        checks: asyncio.Future[Any] = asyncio.gather(store.check(write=write, attrs=ObjectAttrs()),
                                                     return_exceptions=True)
    else:
        source = await stack.enter_async_context(
            make_store(settings.source, "source", pool, settings.sync.timeout, tunnel, tpslimit=settings.sync.tpslimit))
        destination = await stack.enter_async_context(
            make_store(settings.destination, "destination", pool, settings.sync.timeout, tunnel,
                       tpslimit=settings.sync.tpslimit, events=events))
        # Both at once, and while the database is asked what to do: each check is a round
        # trip or two to a provider that may be far away. The write check sends what every
        # copy sends (ACL, storage class), so a bucket that refuses them is found now.
        checks = asyncio.gather(source.check(), destination.check(write=write, attrs=ObjectAttrs()),
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
    if write and only is None:
        await refuse_one_bucket_twice(settings, source, destination)
    stats = stats if stats is not None else {name: Stats(name) for name in request.types}
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
    return Connected(db, source, destination, queries, retry_queries, stats, hidden)
