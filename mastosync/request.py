"""What the user asked for on the command line, and what it selects from the database."""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TextIO

from mastosync import records
from mastosync.config import Settings
from mastosync.errors import UsageError
from mastosync.state import RunHistory


@dataclass(frozen=True)
class Request:
    """What the user asked for on the command line."""

    types: tuple[str, ...]
    limit: int | None = None
    since: datetime | None = None
    since_last: bool = False  # --since last: `since` is set by resolve_since()
    concurrency: int = 32
    restart: bool = False
    shard: tuple[int, int] | None = None  # --shard K/N
    log_file: str | None = None  # --log-file: JSON lines of events
    as_json: bool = False  # run --json: the summary as one JSON object on stdout
    checksum: bool = False  # run --checksum: equal sizes are not enough, equal MD5 ETags are
    processes: int = 1  # run --processes N: N local worker processes, one shard each


def resolve_since(settings: Settings, request: Request, out: TextIO | None = None) -> Request:
    """`--since last`: the baseline of the last completed sequence of runs of this migration and
    these types (state.RunHistory), less sync.since_margin; said on `out`."""
    if not request.since_last:
        return request
    started = RunHistory(settings.sync.state_dir).last_complete_start(settings, request.types, request.shard)
    if started is None:
        raise UsageError(f"--since last: no completed run of these types between these buckets is recorded in "
                         f"{Path(settings.sync.state_dir).resolve()} (a --limit run does not count); give a time "
                         "instead")
    margin = timedelta(seconds=settings.sync.since_margin)
    since = started - margin
    print(f"mastosync: --since last: {since:%Y-%m-%d %H:%M:%S} UTC: the start of the completed migration run "
          f"of {started:%Y-%m-%d %H:%M:%S} UTC (database clock), less sync.since_margin "
          f"({format_duration(settings.sync.since_margin)}) for files whose rows were not yet committed",
          file=out or sys.stdout, flush=True)
    return dataclasses.replace(request, since=since, since_last=False)


def format_duration(seconds: float) -> str:
    for unit, size in (("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g}{unit}"
    return f"{seconds:g}s"


def report_label(command: str, shard: tuple[int, int] | None) -> str:
    return command if shard is None else f"{command}-shard-{shard[0]}of{shard[1]}"


def filters_for(settings: Settings, request: Request) -> records.Filters:
    return records.Filters(
        limit=request.limit, since=request.since, include_remote=settings.sync.include_remote, shard=request.shard
    )
