"""The pipeline, top to bottom: tunnel → records → layout → (copy | check | print) → outcomes.

Each command is one function here. `run` and `verify` share one engine: a producer
pages records and expands them into objects, a bounded queue feeds a fixed set of
workers, and every outcome goes to the observers (progress, resume state, report).
Bounded queues keep memory flat however large the tables are.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from typing import TextIO

from mastosync import layout, records
from mastosync.config import Settings
from mastosync.tunnel import Tunnel


@dataclass(frozen=True)
class Request:
    """What the user asked for on the command line."""

    types: tuple[str, ...]
    limit: int | None = None
    since: datetime | None = None
    concurrency: int = 32
    restart: bool = False


def filters_for(settings: Settings, request: Request) -> records.Filters:
    return records.Filters(
        limit=request.limit, since=request.since, include_remote=settings.sync.include_remote
    )


@contextlib.asynccontextmanager
async def open_database(settings: Settings) -> AsyncIterator[records.Database]:
    """The database, through the SSH tunnel when configured; both closed on every exit."""
    async with contextlib.AsyncExitStack() as stack:
        endpoint = None
        if settings.ssh.enabled:
            tunnel = await stack.enter_async_context(Tunnel(settings.ssh, settings.database))
            endpoint = tunnel.endpoint
        db = records.Database(settings.database, endpoint)
        stack.push_async_callback(db.close)
        await db.connection()  # fail now, before any work, if it cannot be reached
        yield db


# -- dry-run ----------------------------------------------------------------------------


def dry_run(settings: Settings, request: Request, as_json: bool, out: TextIO | None = None) -> None:
    """Print every object `run` would copy; touches no bucket."""
    out = out or sys.stdout
    try:
        asyncio.run(_dry_run(settings, request, as_json, out))
        out.flush()
    except BrokenPipeError:  # `mastosync dry-run | head` is fine
        with contextlib.suppress(Exception):
            sys.stdout = None  # type: ignore[assignment]


async def _dry_run(settings: Settings, request: Request, as_json: bool, out: TextIO) -> None:
    filters = filters_for(settings, request)
    src, dst = settings.source, settings.destination
    async with open_database(settings) as db:
        for name in request.types:
            object_type = layout.TYPES[name]
            query = await records.query_for(db, object_type, filters)
            if query is None:
                continue
            lines: list[str] = []
            async for row in records.stream(db, query):
                for obj in layout.objects_of(object_type, row, request.since):
                    if as_json:
                        lines.append(json.dumps({
                            "type": obj.type, "id": obj.id, "attachment": obj.attachment,
                            "style": obj.style, "source_key": src.full_key(obj.key),
                            "destination_key": dst.full_key(obj.key), "size": obj.size,
                            "content_type": obj.content_type,
                        }, ensure_ascii=False))
                    else:
                        lines.append(f"{obj.type}\t{obj.id}\t{src.full_key(obj.key)}\t{dst.full_key(obj.key)}")
                if len(lines) >= 2000:
                    out.write("\n".join(lines) + "\n")
                    lines.clear()
            if lines:
                out.write("\n".join(lines) + "\n")


def run(settings: Settings, request: Request) -> None:
    from mastosync.errors import UsageError

    raise UsageError("`run` is not available yet in this version")


def verify(settings: Settings, request: Request, as_json: bool) -> None:
    from mastosync.errors import UsageError

    raise UsageError("`verify` is not available yet in this version")
