"""`mastosync dry-run`: every object `run` would copy, computed from the database alone."""

from __future__ import annotations

import contextlib
import json
import sys
import urllib.parse
from typing import TextIO

from mastosync import loop
from mastosync.config.settings import Settings
from mastosync.config.units import format_size
from mastosync.connect import open_database
from mastosync.errors import UsageError
from mastosync.mastodon import layout, records
from mastosync.request import Request, filters_for, resolve_since


def dry_run(settings: Settings, request: Request, output_format: str = "text", out: TextIO | None = None) -> None:
    """Print every object `run` would copy; touches no bucket."""
    out = out or sys.stdout
    if output_format == "s3-batch-csv" and settings.source.is_folder:
        raise UsageError("--format s3-batch-csv lists a bucket's objects for S3 Batch Operations; the source is "
                         "a folder (--format rclone gives the paths under its root)")
    try:
        loop.run(_dry_run(settings, resolve_since(settings, request, sys.stderr), output_format, out))
        out.flush()
    except BrokenPipeError:  # `mastosync dry-run | head` is fine
        with contextlib.suppress(Exception):
            sys.stdout = None


async def _dry_run(settings: Settings, request: Request, output_format: str, out: TextIO) -> None:
    as_json = output_format == "json"
    bucket = settings.source.bucket
    filters = filters_for(settings, request)
    src, dst = settings.source.key_prefix, settings.destination.key_prefix
    full_key = layout.full_key
    # Hand-assembled JSON with the C string encoder: several times faster than json.dumps
    # of a dict, and this loop runs for every object of the instance.
    quote = json.encoder.encode_basestring
    objects = size = 0
    async with open_database(settings) as db:
        hidden = await records.hidden(db, tuple(layout.TYPES[name] for name in request.types))
        for name in request.types:
            object_type = layout.TYPES[name]
            query = await records.query_for(db, object_type, filters)
            if query is not None and request.limit is None:
                _, count, estimate = await records.totals(db, query)
                objects, size = objects + count, size + estimate
            if query is None:
                continue
            lines: list[str] = []
            head = f'{{"type": {quote(name)}, "id": '
            types: dict[str | None, str] = {None: "null"}  # a few content types, each quoted once
            async for row in records.stream(db, query, prefetch=settings.sync.db_batch):
                for o in layout.objects_of(object_type, row, request.since, hidden):
                    if as_json:
                        source_key = quote(full_key(src, o.key))
                        content_type = types.get(o.content_type)
                        if content_type is None:
                            content_type = types[o.content_type] = quote(o.content_type or "")
                        lines.append(
                            f'{head}{o.id}, "attachment": "{o.attachment}", "style": "{o.style}", '
                            f'"source_key": {source_key}, '
                            f'"destination_key": {source_key if src == dst else quote(full_key(dst, o.key))}, '
                            f'"size": {"null" if o.size is None else int(o.size)}, '
                            f'"content_type": {content_type}, "private": {"true" if o.private else "false"}'
                            + ("}" if o.fallback is None else
                               f', "fallback_source_key": {quote(full_key(src, o.fallback))}}}')
                        )
                    elif output_format == "rclone":
                        lines.append(full_key(src, o.key))
                    elif output_format == "s3-batch-csv":
                        lines.append(f"{bucket},{urllib.parse.quote(full_key(src, o.key), safe='/')}")
                    else:
                        lines.append(f"{name}\t{o.id}\t{full_key(src, o.key)}\t{full_key(dst, o.key)}")
                if len(lines) >= 2000:
                    out.write("\n".join(lines) + "\n")
                    lines.clear()
            if lines:
                out.write("\n".join(lines) + "\n")
    if request.limit is None:
        # On stderr: stdout is the plan itself, for pipes and files.
        out.flush()
        sys.stderr.write(f"dry-run: {objects} objects, about {format_size(size)} (originals' sizes from the "
                         "database, derived styles estimated)\n")
