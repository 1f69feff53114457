"""Sizes and durations as people write them ("16MiB", "8MB", "5m"), and sizes for people."""

from __future__ import annotations

import re
import typing
from typing import Any

MiB = 1024 * 1024


GiB = 1024 * MiB


_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?i?B?)?\s*$", re.IGNORECASE)


_UNITS = {
    "": 1,
    "b": 1,
    "k": 1024,
    "kb": 1000,
    "kib": 1024,
    "m": MiB,
    "mb": 1000**2,
    "mib": MiB,
    "g": GiB,
    "gb": 1000**3,
    "gib": GiB,
    "t": 1024 * GiB,
    "tb": 1000**4,
    "tib": 1024 * GiB,
}


def parse_size(text: str) -> int:
    """'16MiB' → 16777216; '8MB' → 8000000; '1024' → 1024. ValueError when unreadable."""
    match = _SIZE.match(text)
    if not match or (match.group(2) or "").lower() not in _UNITS:
        raise ValueError(text)
    return int(float(match.group(1)) * _UNITS[(match.group(2) or "").lower()])


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d)?\s*$", re.IGNORECASE)


_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> float:
    """'5m' → 300.0; '1h' → 3600.0; '90' (seconds) → 90.0. ValueError when unreadable."""
    match = _DURATION.match(text)
    if not match:
        raise ValueError(text)
    return float(match.group(1)) * _SECONDS[(match.group(2) or "").lower()]


# Values given with a unit: (the plain number's type, the parser of a text, what is expected).
UNITS: dict[str, tuple[Any, typing.Callable[[str], Any], str]] = {
    "size": (int, parse_size, "a size such as \"8MiB\" or a number of bytes"),
    "duration": (int | float, parse_duration, "a duration such as \"5m\", \"1h\" or a number of seconds"),
}


def format_size(n: float) -> str:
    """Bytes in binary units for people: 16777216 → '16.0 MiB'."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"
