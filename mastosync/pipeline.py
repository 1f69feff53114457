"""Wires the stages together (filled in by the run/dry-run/verify work)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from mastosync.config import Settings
from mastosync.errors import UsageError


@dataclass(frozen=True)
class Request:
    types: tuple[str, ...]
    limit: int | None = None
    since: datetime | None = None
    concurrency: int = 32
    restart: bool = False


def run(settings: Settings, request: Request) -> None:
    raise UsageError("`run` is not available yet in this version")


def dry_run(settings: Settings, request: Request, as_json: bool) -> None:
    raise UsageError("`dry-run` is not available yet in this version")


def verify(settings: Settings, request: Request, as_json: bool) -> None:
    raise UsageError("`verify` is not available yet in this version")
