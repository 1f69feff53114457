"""Resume state, per type: `done_through`, an id such that every record up to it is
finished, and `failed_ids`, records with an object that failed (retried first by the
next run). Records stream in id order, so a small ordered window of records in flight
is enough to advance the mark; memory does not grow with the table. The file is
keyed by what makes progress comparable (both buckets and prefixes, --since,
include_remote) and replaced atomically.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from mastosync.config.settings import BucketSettings, Settings

VERSION = 1


SO_FAR = ("copied", "skipped", "missing", "bytes")


@dataclass
class TypeProgress:
    """Tracks which records of one type are finished, for the resume mark."""

    done_through: int | None = None
    failed_ids: set[int] = field(default_factory=set)
    retrying: set[int] = field(default_factory=set)  # ids re-read from failed_ids this run
    earlier: dict[str, int] = field(default_factory=dict)  # counters of the earlier runs being resumed
    _open: OrderedDict[int, list[Any]] = field(default_factory=OrderedDict)  # id → [left, failed]

    _seen: set[int] = field(default_factory=set)  # ids of `retrying` the retry query returned

    def retrying_seen(self, record_id: int) -> None:
        if record_id in self.retrying:
            self._seen.add(record_id)

    def forget_unseen_retries(self) -> None:
        """Failed records the retry query did not return no longer exist (or have no file):
        done, so that the type can finish."""
        gone = self.retrying - self._seen
        self.failed_ids -= gone
        self.retrying -= gone

    def begin(self, record_id: int, objects: int) -> None:
        """A record was read and expanded into `objects` objects (possibly none)."""
        self._open[record_id] = [objects, False]
        if objects == 0:
            self._advance()

    def finish(self, record_id: int, ok: bool) -> None:
        """One object of the record is done; `ok` false means it failed."""
        entry = self._open[record_id]
        entry[0] -= 1
        entry[1] = entry[1] or not ok
        if entry[0] <= 0:
            self._advance()

    def _advance(self) -> None:
        while self._open:
            record_id, (left, failed) = next(iter(self._open.items()))
            if left > 0:
                return
            del self._open[record_id]
            if failed:
                self.failed_ids.add(record_id)
            else:
                self.failed_ids.discard(record_id)
            if record_id not in self.retrying:
                self.done_through = record_id if self.done_through is None else max(self.done_through, record_id)

    def to_json(self) -> dict[str, Any]:
        return {"done_through": self.done_through, "failed_ids": sorted(self.failed_ids)}


class ResumeState:
    """The resume file of one source → destination selection."""

    def __init__(self, settings: Settings, since: datetime | None, shard: tuple[int, int] | None = None,
                 kind: str = "resume", counted: Mapping[str, Any] | None = None) -> None:
        # The migration (and shard), and --since: progress is comparable only within both.
        # `kind` other than "resume" is another command's progress (fix-destination …).
        self.identity: dict[str, Any] = {**selection(settings, shard),
                                          "since": since.isoformat() if since else None,
                                          **({"command": kind} if kind != "resume" else {})}
        digest = hashlib.sha256(json.dumps(self.identity, sort_keys=True).encode()).hexdigest()[:16]
        name = f"{kind}-{digest}.json" if shard is None else f"{kind}-{digest}-shard-{shard[0]}of{shard[1]}.json"
        self.path = Path(settings.sync.state_dir) / name
        self.shard = shard
        self.types: dict[str, TypeProgress] = {}
        # This run's counters per type (progress.Stats: copied, skipped, missing, bytes), added
        # to the earlier runs' in the file: a resumed run can say what the whole migration has done.
        self.counted: Mapping[str, Any] = counted or {}
        # Multipart uploads started and not yet completed or aborted: (key, upload id).
        # Written when one starts, so that after a crash the next run aborts what was left.
        self.open_uploads: set[tuple[str, str]] = set()
        # When the first run of this sequence (a run and the runs resuming it) started: a
        # resumed run skips records finished before, so only that start bounds what it saw.
        self.sequence_started: datetime | None = None
        self._saved_at = 0.0

    def other_partitions(self) -> list[Path]:
        """Unfinished states of the same migration split another way (another N, or unsplit):
        resuming beside them would mix partitions and leave records to neither."""
        mine = {k: v for k, v in self.identity.items() if k != "shard"}
        n = self.shard[1] if self.shard else 1
        found = []
        for path in sorted(self.path.parent.glob("resume-*.json")):
            try:
                data = json.loads(path.read_text())
            except (OSError, ValueError):
                continue
            identity = data.get("identity", {})
            other_n = identity.get("shard", [1, 1])[1]
            unfinished = any(not t.get("complete") for t in data.get("types", {}).values())
            if other_n != n and unfinished and {k: v for k, v in identity.items() if k != "shard"} == mine:
                found.append(path)
        return found

    def load(self, types: tuple[str, ...], restart: bool) -> dict[str, TypeProgress]:
        """Progress per type from the last unfinished run (nothing with `restart`)."""
        saved: dict[str, Any] = {}
        if self.path.exists():
            try:
                data = json.loads(self.path.read_text())
                if data.get("version") == VERSION and data.get("identity") == self.identity:
                    saved = {} if restart else data.get("types", {})
                    unfinished = any(not t.get("complete")
                                     and (t.get("done_through") is not None or t.get("failed_ids"))
                                     for t in saved.values())
                    if unfinished and data.get("sequence_started"):
                        self.sequence_started = datetime.fromisoformat(data["sequence_started"])
                    # Open uploads are billed: they are aborted even when progress is not resumed.
                    self.open_uploads = {(str(k), str(u)) for k, u in data.get("open_uploads", [])}
            except (OSError, ValueError):
                saved = {}  # unreadable state: start over, which is always safe
        for name in types:
            entry = saved.get(name) or {}
            if entry.get("complete"):
                entry = {}  # a finished run is not resumed: the next run checks everything again
            self.types[name] = TypeProgress(entry.get("done_through"), set(entry.get("failed_ids", [])),
                                            earlier={k: int(v) for k, v in entry.get("so_far", {}).items()})
        return self.types

    def save(self, complete: dict[str, bool] | None = None, every: float = 0.0) -> None:
        """Write atomically; with `every`, only if that many seconds passed since the last write."""
        now = time.monotonic()
        if every and now - self._saved_at < every:
            return
        self._saved_at = now
        types = {}
        for name, progress in self.types.items():
            types[name] = progress.to_json()
            this_run = self.counted.get(name)
            types[name]["so_far"] = {k: progress.earlier.get(k, 0) + getattr(this_run, k, 0)
                                     for k in (*SO_FAR, *progress.earlier)}
            if complete and complete.get(name) and not progress.failed_ids:
                types[name]["complete"] = True
        payload = {"version": VERSION, "identity": self.identity, "types": types,
                   "open_uploads": sorted([k, u] for k, u in self.open_uploads),
                   "sequence_started": self.sequence_started.isoformat() if self.sequence_started else None,
                   "saved_at": datetime.now().astimezone().isoformat(timespec="seconds")}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        with tmp.open("w") as f:
            json.dump(payload, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)


    def upload_started(self, key: str, upload_id: str) -> None:
        """Record an upload at once: uploads are rare (large objects), a crash can come any time."""
        self.open_uploads.add((key, upload_id))
        self.save()

    def upload_ended(self, key: str, upload_id: str) -> None:
        self.open_uploads.discard((key, upload_id))


def selection(settings: Settings, shard: tuple[int, int] | None = None) -> dict[str, Any]:
    """What makes two runs the same migration: both places, include_remote and the shard
    (not --since)."""
    from mastosync.sides import side_of

    def place(side: BucketSettings) -> list[str]:
        return side_of(side, settings.ssh).identity()

    found: dict[str, Any] = {"source": place(settings.source), "destination": place(settings.destination),
                             "include_remote": settings.sync.include_remote}
    if shard is not None:  # absent when not sharded: older state files keep their name
        found["shard"] = list(shard)
    return found
