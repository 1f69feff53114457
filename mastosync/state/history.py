"""state_dir/runs.jsonl: every run's start, end and outcome, for `run --since last` and `cutover`."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

from mastosync.config.settings import Settings
from mastosync.state.resume import selection


class RunHistory:
    """Every run's start, end and outcome, one JSON line each in state_dir/runs.jsonl.

    `run --since last` takes the baseline of the migration: the start of the first run of
    the last sequence of runs (a run and the runs that resumed it) that completed the same
    selection. Everything written since then is what the cut-over catch-up must copy. A
    `--limit` trial is never a baseline; a `--since` run is one only if it reached back to
    the baseline before it (a mistyped date in the future proves nothing). Times are the
    database's clock, naive UTC.
    """

    def __init__(self, state_dir: str) -> None:
        self.path = Path(state_dir) / "runs.jsonl"

    def record(self, settings: Settings, types: tuple[str, ...], started: datetime, ended: datetime,
               since: datetime | None, complete: bool, shard: tuple[int, int] | None = None,
               baseline: datetime | None = None, limit: int | None = None, command: str = "run",
               clean: bool | None = None, mastodon: str | None = None) -> None:
        entry = {"selection": selection(settings, shard), "types": list(types), "started": started.isoformat(),
                 "ended": ended.isoformat(), "since": since.isoformat() if since else None, "complete": complete,
                 "baseline": (baseline or started).isoformat(), "limit": limit, "mastodon": mastodon}
        if command != "run":
            entry["command"] = command
        if clean is not None:
            entry["clean"] = clean  # verify: nothing absent or different
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(entry) + "\n")

    def _entries(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        found = []
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                found.append(json.loads(line))
            except ValueError:
                continue  # a line cut by a crash
        return found

    def last_complete_start(self, settings: Settings, types: tuple[str, ...],
                            shard: tuple[int, int] | None = None) -> datetime | None:
        """The baseline (naive UTC) of the latest completed sequence of runs covering `types`."""
        wanted = selection(settings, shard)
        found: datetime | None = None
        for entry in self._entries():
            if (entry.get("command", "run") != "run" or not entry.get("complete")
                    or entry.get("limit") is not None or entry.get("selection") != wanted
                    or not set(types) <= set(entry.get("types", []))):
                continue
            start = datetime.fromisoformat(entry.get("baseline") or entry["started"])
            since = entry.get("since")
            if since is not None and (found is None or datetime.fromisoformat(since) > found):
                continue  # left a gap between the baseline and its own start
            found = start if found is None else max(found, start)
        return found

    def last_start(self, settings: Settings, shard: tuple[int, int] | None = None) -> datetime | None:
        """The start of the latest run of this migration, finished or not."""
        wanted = selection(settings, shard)
        starts = [datetime.fromisoformat(e["started"]) for e in self._entries()
                  if e.get("command", "run") == "run" and e.get("selection") == wanted]
        return max(starts, default=None)

    def last_of_shard(self, settings: Settings, shard: tuple[int, int]) -> dict[str, Any] | None:
        """The latest run entry of one shard of this migration."""
        wanted = selection(settings, shard)
        return next((e for e in reversed(self._entries())
                     if e.get("command", "run") == "run" and e.get("selection") == wanted), None)

    def mastodon(self) -> str | None:
        """The Mastodon release the latest run or verify found in the database."""
        return next((e["mastodon"] for e in reversed(self._entries()) if e.get("mastodon")), None)

    def last_verify(self, settings: Settings) -> dict[str, bool | None]:
        """Per type: whether the latest whole verify of it (no --limit, --since or --shard)
        found nothing absent or different; None when none was recorded."""
        wanted = selection(settings)
        found: dict[str, bool | None] = {}
        for entry in self._entries():
            if (entry.get("command") == "verify" and entry.get("selection") == wanted and entry.get("limit") is None
                    and entry.get("since") is None and entry.get("clean") is not None):
                for name in entry.get("types", []):
                    found[name] = bool(entry["clean"])
        return found
