"""What the user asked for on the command line, and what it selects from the database."""

from __future__ import annotations

import dataclasses
import os
import re
import sys
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from mastosync.config.settings import Settings
from mastosync.errors import UsageError
from mastosync.state.history import RunHistory

if TYPE_CHECKING:  # asyncpg, imported by records, costs every start of the CLI 0.1 s
    from mastosync.mastodon import records


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
    accept_missing: bool = False  # --accept-missing: a type (nearly) wholly absent at the source is no error


def parse_since(value: str | None) -> datetime | str | None:
    """ISO-8601 date or datetime → naive UTC, as Mastodon stores its timestamps; "last" stays."""
    if value is None:
        return None
    if value.strip().lower() == "last":
        return "last"  # resolved from the run history once the configuration is known
    try:
        moment = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(
            f"--since {value!r} is not an ISO-8601 date or datetime (e.g. 2026-05-01 or 2026-05-01T12:00:00Z)"
        ) from None
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC).replace(tzinfo=None)
    return moment


SHARD_INDEX_VARIABLES = ("JOB_COMPLETION_INDEX", "AWS_BATCH_JOB_ARRAY_INDEX")


def parse_shard(value: str | None, environ: Any = None) -> tuple[int, int] | None:
    """"K/N" → (K, N); "auto/N" takes K from a job runner's zero-based index variable."""
    if value is None:
        return None
    match = re.fullmatch(r"\s*(\d+|auto)\s*/\s*(\d+)\s*", value)
    if not match or int(match.group(2)) < 1:
        raise UsageError(f"--shard {value!r}: expected K/N such as 2/8 (1 <= K <= N), or auto/N")
    n = int(match.group(2))
    if match.group(1) == "auto":
        environ = os.environ if environ is None else environ
        found = next((v for v in SHARD_INDEX_VARIABLES if v in environ), None)
        if found is None or not environ[found].strip().isdigit():
            raise UsageError(f"--shard auto/{n}: K comes from JOB_COMPLETION_INDEX (Kubernetes Indexed Jobs) or "
                             "AWS_BATCH_JOB_ARRAY_INDEX (AWS Batch), zero-based; neither is set to a number")
        k = int(environ[found]) + 1
    else:
        k = int(match.group(1))
    if not 1 <= k <= n:
        raise UsageError(f"--shard {value!r}: K must be between 1 and {n}")
    return k, n


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
    from mastosync.mastodon import records

    return records.Filters(
        limit=request.limit, since=request.since, include_remote=settings.sync.include_remote, shard=request.shard
    )
