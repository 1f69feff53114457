"""The counters of a command, per type: what the steps' outcomes added up to so far.

The books (books.py) bump them as each object ends; the display (display/progress.py), the
--log-file's progress lines, --metrics and the summary read them. Plain numbers, no I/O: nothing
here costs anything on the per-object path but an addition.
"""

from __future__ import annotations

import collections
import time
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Stats:
    """Counters of one type (or the total)."""

    name: str
    records_total: int | None = None
    objects_total: int | None = None  # from the database, before the copy starts
    bytes_total: int | None = None  # the same: originals' sizes known, derived styles estimated
    records: int = 0
    copied: int = 0
    skipped: int = 0
    missing: int = 0
    failed: int = 0
    bytes: int = 0
    retries: int = 0
    private: int = 0  # present without the public ACL (Mastodon keeps them private)
    kept: int = 0  # newer at the destination and different: kept (Mastodon rewrote it after the switch)
    proofs: collections.Counter[str] = field(default_factory=collections.Counter)  # copied, by content proof
    started: float = field(default_factory=time.monotonic)
    ended: float | None = None
    # verify's findings
    ok: int = 0
    absent: int = 0
    different: int = 0
    # Bytes of the objects done (copied, skipped, checked: their real size; missing: none),
    # and what the totals had estimated for them: the total is corrected as objects finish.
    bytes_done: int = 0
    estimated_done: int = 0

    def done(self, size: int, estimate: int) -> None:
        """An object is done; `size` its real size (0 when missing), `estimate` the total's guess."""
        self.bytes_done += size
        self.estimated_done += estimate

    @property
    def bytes_expected(self) -> int | None:
        """bytes_total, with the estimates of finished objects replaced by their real sizes."""
        if self.bytes_total is None:
            return None
        return max(self.bytes_done, self.bytes_total - self.estimated_done + self.bytes_done)

    @property
    def fraction(self) -> float | None:
        """How much is done, by objects and by bytes equally (None before the totals are known)."""
        expected = self.bytes_expected
        if not self.objects_total or expected is None:
            return None if self.objects_total is None else 1.0
        by_objects = min(1.0, self.objects / self.objects_total)
        by_bytes = min(1.0, self.bytes_done / expected) if expected else by_objects
        return (by_objects + by_bytes) / 2

    def to_json(self) -> dict[str, Any]:
        """The counters, for --json and --log-file."""
        fields = ("records", "copied", "skipped", "missing", "failed", "ok", "absent", "different", "bytes",
                  "retries", "private", "kept")
        out: dict[str, Any] = {name: getattr(self, name) for name in fields}
        out.update(records_total=self.records_total, objects=self.objects, objects_total=self.objects_total,
                   bytes_done=self.bytes_done, bytes_expected=self.bytes_expected,
                   fraction=None if self.fraction is None else round(self.fraction, 4),
                   seconds=round(self.elapsed, 3), objects_per_second=round(self.objects / self.elapsed, 1),
                   mib_per_second=round(self.bytes / self.elapsed / MIB, 2), proofs=dict(self.proofs))
        return out

    @property
    def objects(self) -> int:
        return self.copied + self.skipped + self.missing + self.failed + self.ok + self.absent + self.different

    @property
    def elapsed(self) -> float:
        return max(1e-6, (self.ended or time.monotonic()) - self.started)

    @property
    def started_work(self) -> bool:
        return bool(self.records or self.objects)


class RateWindow:
    """Objects and bytes per second over the last `seconds`, for an ETA that follows the run.

    A run's rate changes (a rerun skips fast, then copies slowly; videos come in bursts):
    the last half-minute says more about the next than the average since the start.
    """

    def __init__(self, seconds: float = 30.0) -> None:
        self.seconds = seconds
        self._samples: collections.deque[tuple[float, int, int]] = collections.deque()

    def add(self, now: float, objects: int, size: int) -> None:
        self._samples.append((now, objects, size))
        while len(self._samples) > 2 and now - self._samples[1][0] >= self.seconds:
            self._samples.popleft()

    def bytes_rate(self) -> float | None:
        """Bytes done per second over the window (None before two samples a second apart)."""
        if len(self._samples) < 2:
            return None
        (t0, _, b0), (t1, _, b1) = self._samples[0], self._samples[-1]
        return (b1 - b0) / (t1 - t0) if t1 - t0 >= 1.0 else None

    def eta(self, stats: Stats) -> float | None:
        """Seconds left: the slower of objects left at the objects' rate and bytes left at the bytes'."""
        if stats.ended or len(self._samples) < 2 or stats.objects_total is None:
            return None
        (t0, o0, b0), (t1, o1, b1) = self._samples[0], self._samples[-1]
        if t1 - t0 < 1.0 or o1 == o0:
            return None
        left = [max(0, stats.objects_total - stats.objects) / ((o1 - o0) / (t1 - t0))]
        expected = stats.bytes_expected
        if expected is not None and b1 > b0:
            left.append(max(0, expected - stats.bytes_done) / ((b1 - b0) / (t1 - t0)))
        return max(left)


MIB = 1024 * 1024


def summary_json(stats: list[Stats]) -> dict[str, Any]:
    """The final summary as one JSON-ready object: per type and total."""
    return {"types": {s.name: s.to_json() for s in stats}, "total": total_of(stats).to_json()}


def total_of(stats: list[Stats]) -> Stats:
    total = Stats("total")
    for s in stats:
        for name in ("records", "copied", "skipped", "missing", "failed", "bytes", "retries", "private", "kept", "ok",
                     "absent", "different"):
            setattr(total, name, getattr(total, name) + getattr(s, name))
    for s in stats:
        total.proofs.update(s.proofs)
    for s in stats:
        total.bytes_done += s.bytes_done
        total.estimated_done += s.estimated_done
    if all(s.records_total is not None for s in stats):
        total.records_total = sum(s.records_total or 0 for s in stats)
        total.objects_total = sum(s.objects_total or 0 for s in stats)
        total.bytes_total = sum(s.bytes_total or 0 for s in stats)
    begun = [s for s in stats if s.started_work] or stats
    if stats:
        total.started = min(s.started for s in begun)
        ends = [s.ended for s in stats]
        total.ended = max(e for e in ends if e is not None) if all(e is not None for e in ends) else None
    return total
