"""Resume state and the report of failed and missing objects, both under sync.state_dir.

Resume state, per type: `done_through`, an id such that every record up to it is
finished, and `failed_ids`, records with an object that failed (retried first by the
next run). Records stream in id order, so a small ordered window of records in flight
is enough to advance the mark; memory does not grow with the table. The file is
keyed by what makes progress comparable (both buckets and prefixes, --since,
include_remote) and replaced atomically.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO, Any

from mastosync.config import Settings
from mastosync.errors import StateBusy
from mastosync.redact import redact

VERSION = 1


@dataclass
class TypeProgress:
    """Tracks which records of one type are finished, for the resume mark."""

    done_through: int | None = None
    failed_ids: set[int] = field(default_factory=set)
    retrying: set[int] = field(default_factory=set)  # ids re-read from failed_ids this run
    _open: OrderedDict[int, list[Any]] = field(default_factory=OrderedDict)  # id → [left, failed]

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

    def __init__(self, settings: Settings, since: datetime | None) -> None:
        src, dst = settings.source, settings.destination
        self.identity = {
            # Prefixes verbatim: "m" and "m/" are different places (layout.full_key).
            "source": [src.endpoint, src.bucket, src.key_prefix],
            "destination": [dst.endpoint, dst.bucket, dst.key_prefix],
            "since": since.isoformat() if since else None,
            "include_remote": settings.sync.include_remote,
        }
        digest = hashlib.sha256(json.dumps(self.identity, sort_keys=True).encode()).hexdigest()[:16]
        self.path = Path(settings.sync.state_dir) / f"resume-{digest}.json"
        self.types: dict[str, TypeProgress] = {}
        # Multipart uploads started and not yet completed or aborted: (key, upload id).
        # Written when one starts, so that after a crash the next run aborts what was left.
        self.open_uploads: set[tuple[str, str]] = set()
        self._saved_at = 0.0

    def load(self, types: tuple[str, ...], restart: bool) -> dict[str, TypeProgress]:
        """Progress per type from the last unfinished run (nothing with `restart`)."""
        saved: dict[str, Any] = {}
        if self.path.exists():
            try:
                data = json.loads(self.path.read_text())
                if data.get("version") == VERSION and data.get("identity") == self.identity:
                    saved = {} if restart else data.get("types", {})
                    # Open uploads are billed: they are aborted even when progress is not resumed.
                    self.open_uploads = {(str(k), str(u)) for k, u in data.get("open_uploads", [])}
            except (OSError, ValueError):
                saved = {}  # unreadable state: start over, which is always safe
        for name in types:
            entry = saved.get(name) or {}
            if entry.get("complete"):
                entry = {}  # a finished run is not resumed: the next run checks everything again
            self.types[name] = TypeProgress(entry.get("done_through"), set(entry.get("failed_ids", [])))
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
            if complete and complete.get(name) and not progress.failed_ids:
                types[name]["complete"] = True
        payload = {"version": VERSION, "identity": self.identity, "types": types,
                   "open_uploads": sorted([k, u] for k, u in self.open_uploads),
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


class RunLock:
    """One run per state directory: an exclusive flock held for the run, with the holder's PID.

    The kernel releases a flock when its process dies, however it dies, so a crashed run
    never leaves the directory locked.
    """

    def __init__(self, state_dir: str, name: str = "run.lock") -> None:
        self.path = Path(state_dir).resolve() / name
        self._fd: int | None = None

    def __enter__(self) -> RunLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 64).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise StateBusy(f"another mastosync run (PID {holder}) is using the state directory "
                            f"{self.path.parent}; wait for it to end, or give this one another sync.state_dir"
                            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return self

    def __exit__(self, *exc: object) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, 0)
            os.close(self._fd)  # closing releases the lock
            self._fd = None


class Report:
    """One JSON line per failed or missing object, written as they happen."""

    def __init__(self, state_dir: str, command: str) -> None:
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        self.path = Path(state_dir) / f"report-{command}-{stamp}-{os.getpid()}.jsonl"
        self._file: IO[str] | None = None
        self.lines = 0

    def write(self, entry: dict[str, Any]) -> None:
        if self._file is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = self.path.open("a", encoding="utf-8")
        self._file.write(redact(json.dumps(entry, ensure_ascii=False)) + "\n")
        self.lines += 1

    def close(self) -> None:
        if self._file is None:  # an empty report still exists, so its printed path is real
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.touch()
        else:
            self._file.close()
