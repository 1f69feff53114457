"""The report of each command (failed, missing, findings) and the --log-file's events, JSON lines."""

from __future__ import annotations

import json
import os
from datetime import datetime
from pathlib import Path
from typing import IO, Any

from mastosync.redact import redact


class EventLog:
    """--log-file: one JSON object per line for every failed or missing object, retry, progress
    tick and the summary, flushed as written, so that `tail -f | jq` follows a long run."""

    def __init__(self, path: str) -> None:
        self.path = Path(path).expanduser().resolve()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = self.path.open("a", encoding="utf-8")

    def event(self, kind: str, **fields: Any) -> None:
        entry = {"time": datetime.now().astimezone().isoformat(timespec="milliseconds"), "event": kind, **fields}
        self._file.write(redact(json.dumps(entry, ensure_ascii=False)) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()


class Report:
    """One JSON line per failed or missing object, written as they happen."""

    def __init__(self, state_dir: str, command: str, events: EventLog | None = None) -> None:
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        name = f"report-{command}-{stamp}-{os.getpid()}"
        self.path = Path(state_dir).resolve() / f"{name}.jsonl"
        n = 1
        while self.path.exists():  # another command of this process, in the same second
            n += 1
            self.path = self.path.with_name(f"{name}-{n}.jsonl")
        self._file: IO[str] | None = None
        self.lines = 0
        self.events = events  # each entry is also an event of the --log-file

    def write(self, entry: dict[str, Any]) -> None:
        if self.events is not None:
            self.events.event("object", **entry)
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
