"""Limits an operator sets for a days-long run: bytes per second read from the source (a
timetable of them, as rclone writes it) and requests per second to each side.

Both are a virtual clock (the generic cell rate algorithm): each caller reserves the time its
bytes (or request) take at the rate, and waits until its slot starts, so the long-run rate
never exceeds the limit, whatever the concurrency, with bursts of one object at most. A
waiter wakes at least every second to look at the timetable again: a slot that lifts or
changes the limit takes effect within a second, not after the reservations made under it.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

_RATE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([bkmgt]?)(?:i?b)?(?:/s)?\s*$", re.IGNORECASE)
_UNITS = {"": 1024, "b": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}  # rclone's: "10M" is 10 MiB/s


def parse_rate(text: str) -> float | None:
    """"10M" → 10 MiB/s in bytes; "512K"; "off" (or "0") → None, no limit. ValueError when unreadable.
    A bare number is KiB/s, as in rclone."""
    if text.strip().lower() in ("off", "0", ""):
        return None
    match = _RATE.match(text)
    if not match:
        raise ValueError(f"{text!r} is not a rate")
    return float(match.group(1)) * _UNITS[match.group(2).lower()]


@dataclass(frozen=True)
class Timetable:
    """Rates by time of day: "08:00,10M 23:00,off"; or a single rate for all day."""

    slots: tuple[tuple[int, float | None], ...]  # (minute of the day, bytes per second or None)

    @classmethod
    def parse(cls, text: str) -> Timetable:
        """ValueError (naming what is wrong) when unreadable."""
        entries = text.split()
        if len(entries) == 1 and "," not in entries[0]:
            return cls(((0, parse_rate(entries[0])),))
        slots = []
        for entry in entries:
            when, _, rate = entry.partition(",")
            match = re.fullmatch(r"(\d{1,2}):(\d{2})", when)
            if not match or int(match.group(1)) > 23 or int(match.group(2)) > 59 or not rate:
                raise ValueError(f"{entry!r}: expected HH:MM,RATE such as 08:00,10M")
            slots.append((int(match.group(1)) * 60 + int(match.group(2)), parse_rate(rate)))
        if not slots:
            raise ValueError("empty timetable")
        return cls(tuple(sorted(slots)))

    def rate_at(self, moment: datetime) -> float | None:
        """The rate in force at `moment` (local time): the last slot started, wrapping from yesterday's."""
        minute = moment.hour * 60 + moment.minute
        current = self.slots[-1][1]
        for start, rate in self.slots:
            if start <= minute:
                current = rate
        return current

    @property
    def limits(self) -> bool:
        """Whether any slot sets a rate ("off" all day limits nothing)."""
        return any(rate is not None for _, rate in self.slots)

    def divided(self, n: int) -> str:
        """The same timetable with every rate split n ways ("off" stays off), as --bwlimit reads it."""
        def rate(value: float | None) -> str:
            return "off" if value is None else f"{max(1.0, value / n / 1024):.0f}K"

        if len(self.slots) == 1 and self.slots[0][0] == 0:
            return rate(self.slots[0][1])
        return " ".join(f"{start // 60:02d}:{start % 60:02d},{rate(value)}" for start, value in self.slots)

    def describe(self, rate: float | None) -> str:
        if rate is None:
            return "no limit"
        return f"{rate / 2**20:.1f} MiB/s" if rate >= 2**20 else f"{rate / 1024:.0f} KiB/s"


class RateLimit:
    """`take(amount)` waits for the amount's turn at the rate now in force (None: at once)."""

    def __init__(self, rate_now: Callable[[], float | None], clock: Callable[[], float] = time.monotonic) -> None:
        self.rate_now = rate_now
        self._clock = clock
        self._next = 0.0  # when the next reservation may start
        self._rate: float | None = None  # the rate the reservations were made at

    async def take(self, amount: float) -> None:
        while True:
            rate = self.rate_now()
            if rate is None:
                return
            now = self._clock()
            if rate != self._rate:  # a new slot of the timetable: earlier reservations are void
                self._rate, self._next = rate, now
            start = max(self._next, now)
            if start - now <= 0:
                self._next = start + amount / rate
                return
            # Not yet: wait (at most a second, to see a change of slot), then reserve again.
            await asyncio.sleep(min(1.0, start - now))


def bandwidth_limit(timetable: Timetable | None) -> RateLimit | None:
    """The limit on object bytes read from the source, shared by every copy of this process."""
    if timetable is None or not timetable.limits:
        return None
    return RateLimit(lambda: timetable.rate_at(datetime.now()))


def request_limit(per_second: float) -> RateLimit | None:
    return None if per_second <= 0 else RateLimit(lambda: per_second)
