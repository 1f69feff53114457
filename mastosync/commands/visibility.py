"""Visibility that follows the database: media Mastodon hid, or showed again, after they were copied.

A copy writes each object with the visibility its record has at that moment (layout.Hidden,
read at the start of the run). Afterwards Mastodon changes it in place, never touching the
media rows: SuspendAccountService and RemoveStatusService make a suspended account's or a
removed post's media private (UpdateMediaAttachmentsPermissionsService: an ACL in a bucket,
mode 0600 on local storage), unsuspending makes them public again. A catch-up by
`updated_at` cannot see that, so every run compares the hidden accounts and statuses with
those the previous run of the migration wrote under, and sets the ACL (or mode) again on
the media of every account or status whose side changed.

The sets the last run applied are kept in state_dir/visibility-<migration>.json, written
once every change is applied: a run that fails part-way re-applies the same change next
time. A migration whose earlier runs kept no such file (an older mastosync) falls back to
timestamps: accounts saved and statuses removed since the last run started.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import hashlib
import json
import os
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from mastosync.config.settings import Settings
from mastosync.mastodon import layout, records
from mastosync.state.history import RunHistory
from mastosync.state.resume import selection
from mastosync.storage import Store
from mastosync.storage.base import NotFound, StorageError, Transient
from mastosync.storage.retry import RetryPolicy

MEDIA = layout.TYPES["media_attachments"]
BATCH = 256  # objects set at once, at most `concurrency` requests in flight


@dataclass
class Changed:
    """What a run did to visibility: the summary's "visibility:" line."""

    made_private: int = 0
    made_public: int = 0
    failed: int = 0
    records: int = 0  # media records whose owner changed side
    cannot_hide: bool = False  # the destination sends no ACL: the bucket's policy decides
    refused: str = ""  # the destination refused a per-object ACL (no ACLs there): its answer

    def describe(self) -> str:
        if self.cannot_hide:
            return (f"visibility: {self.records} media records of accounts suspended or unsuspended, or posts "
                    "removed, since the last run: not changed, the destination sends no per-object ACL "
                    '(destination.acl = ""), so its bucket policy decides who reads them')
        if self.refused:
            return (f"visibility: {self.records} media records of accounts suspended or unsuspended, or posts "
                    "removed, since the last run: not changed, the destination takes no per-object ACL "
                    f"({self.refused}); its bucket policy decides who reads them")
        failed = f", {self.failed} could not be changed (the next run tries again)" if self.failed else ""
        return f"visibility: {self.made_private} made private, {self.made_public} made public again{failed}"


class AppliedVisibility:
    """The hidden accounts and statuses that the destination's objects were last written under."""

    def __init__(self, settings: Settings, shard: tuple[int, int] | None) -> None:
        digest = hashlib.sha256(json.dumps(selection(settings, shard), sort_keys=True).encode()).hexdigest()[:16]
        suffix = "" if shard is None else f"-shard-{shard[0]}of{shard[1]}"
        self.path = Path(settings.sync.state_dir) / f"visibility-{digest}{suffix}.json"

    def load(self) -> layout.Hidden | None:
        try:
            data = json.loads(self.path.read_text())
            return layout.Hidden(frozenset(data["suspended_accounts"]), frozenset(data["discarded_statuses"]))
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def save(self, hidden: layout.Hidden) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"suspended_accounts": sorted(hidden.suspended_accounts),
                                   "discarded_statuses": sorted(hidden.discarded_statuses)}))
        os.replace(tmp, self.path)


async def owners_to_recheck(db: records.Database, settings: Settings, shard: tuple[int, int] | None,
                            before: layout.Hidden | None,
                            now: layout.Hidden) -> tuple[frozenset[int], frozenset[int]]:
    """Accounts and statuses whose media may be written with the wrong visibility."""
    if before is not None:
        return (before.suspended_accounts ^ now.suspended_accounts,
                before.discarded_statuses ^ now.discarded_statuses)
    last: datetime | None = RunHistory(settings.sync.state_dir).last_start(settings, shard)
    if last is None:
        return frozenset(), frozenset()  # the first run: everything is written as it is now
    return await records.hidden_since(db, last - timedelta(seconds=settings.sync.since_margin))


async def reapply(db: records.Database, destination: Store, settings: Settings, filters: records.Filters,
                  owners: tuple[frozenset[int], frozenset[int]], now: layout.Hidden, policy: RetryPolicy,
                  concurrency: int) -> Changed:
    """Set the visibility Mastodon has now on every copied object of the owners' media."""
    changed = Changed()
    if not (owners[0] or owners[1]):
        return changed
    query = await records.query_for(db, MEDIA, dataclasses.replace(
        filters, owned_by=(tuple(sorted(owners[0])), tuple(sorted(owners[1]))), ids=None, limit=None, since=None))
    if query is None:
        return changed
    cannot_hide = destination.keeps_metadata and not settings.destination.acl
    acl = settings.destination.acl or "public-read"  # a folder: anything but "private" is 0644
    gate = asyncio.Semaphore(concurrency)

    async def apply(obj: layout.MediaObject) -> None:
        async with gate:
            if changed.refused:
                return
            for key in (obj.key, obj.fallback):
                if key is None:
                    continue
                full = layout.full_key(destination.key_prefix, key)
                try:
                    await policy.call(functools.partial(destination.put_acl, full, "private" if obj.private else acl))
                except NotFound:
                    continue  # not copied yet (or not at this key): it will be written as it is now
                except Transient:
                    changed.failed += 1
                    return
                except StorageError as exc:  # no ACLs there (R2, "bucket owner enforced", rclone)
                    changed.refused = changed.refused or str(exc)
                    return
                if obj.private:
                    changed.made_private += 1
                else:
                    changed.made_public += 1
                return

    pending: list[layout.MediaObject] = []
    async for row in records.stream(db, query):
        changed.records += 1
        if cannot_hide:
            continue
        pending.extend(layout.objects_of(MEDIA, row, None, now))
        if len(pending) >= BATCH:
            await asyncio.gather(*(apply(o) for o in pending))
            pending = []
    await asyncio.gather(*(apply(o) for o in pending))
    changed.cannot_hide = cannot_hide and changed.records > 0
    return changed
