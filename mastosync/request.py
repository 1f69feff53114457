"""What the user asked for on the command line, and what it selects from the database."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

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


def resolve_since(settings: Settings, request: Request) -> Request:
    """`--since last`: the start of the last completed run of this migration and these types."""
    if not request.since_last:
        return request
    started = RunHistory(settings.sync.state_dir).last_complete_start(settings, request.types, request.shard)
    if started is None:
        raise UsageError(f"--since last: no completed run of these types between these buckets is recorded in "
                         f"{Path(settings.sync.state_dir).resolve()}; give a time instead")
    return dataclasses.replace(request, since=started, since_last=False)


def report_label(command: str, shard: tuple[int, int] | None) -> str:
    return command if shard is None else f"{command}-shard-{shard[0]}of{shard[1]}"


def filters_for(settings: Settings, request: Request) -> records.Filters:
    return records.Filters(
        limit=request.limit, since=request.since, include_remote=settings.sync.include_remote, shard=request.shard
    )
