"""What the user sees while a run goes and when it ends.

The pipeline only bumps counters in `Stats`; the display reads them a few times a
second (rich Live on a terminal) or every sync.progress_interval seconds (plain lines
without control characters for cron, nohup and CI). Nothing here is on the
per-object path.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TextIO

from rich import box
from rich.console import Console, Group
from rich.live import Live
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from mastosync.config import format_size


@dataclass
class Stats:
    """Counters of one type (or the total)."""

    name: str
    records_total: int | None = None
    bytes_total: int | None = None  # of originals, from the database
    records: int = 0
    copied: int = 0
    skipped: int = 0
    missing: int = 0
    failed: int = 0
    bytes: int = 0
    retries: int = 0
    private: int = 0  # copied without the public ACL (Mastodon keeps them private)
    proofs: collections.Counter[str] = field(default_factory=collections.Counter)  # copied, by content proof
    started: float = field(default_factory=time.monotonic)
    ended: float | None = None
    # verify's findings
    ok: int = 0
    absent: int = 0
    different: int = 0

    @property
    def objects(self) -> int:
        return self.copied + self.skipped + self.missing + self.failed + self.ok + self.absent + self.different

    @property
    def elapsed(self) -> float:
        return max(1e-6, (self.ended or time.monotonic()) - self.started)

    def eta(self) -> float | None:
        if not self.records_total or not self.records or self.ended:
            return None
        left = max(0, self.records_total - self.records)
        return self.elapsed * left / self.records


def total_of(stats: list[Stats]) -> Stats:
    total = Stats("total")
    for s in stats:
        for name in ("records", "copied", "skipped", "missing", "failed", "bytes", "retries", "private", "ok",
                     "absent", "different"):
            setattr(total, name, getattr(total, name) + getattr(s, name))
    for s in stats:
        total.proofs.update(s.proofs)
    if all(s.records_total is not None for s in stats):
        total.records_total = sum(s.records_total or 0 for s in stats)
        total.bytes_total = sum(s.bytes_total or 0 for s in stats)
    if stats:
        total.started = min(s.started for s in stats)
        ends = [s.ended for s in stats]
        total.ended = max(e for e in ends if e is not None) if all(e is not None for e in ends) else None
    return total


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def _rate(n: float, elapsed: float) -> str:
    return f"{n / elapsed:.1f}"


class Display:
    """Live table on a terminal, plain periodic lines otherwise."""

    def __init__(self, stats: list[Stats], interval: float, mode: str = "copy",
                 out: TextIO | None = None, live: bool | None = None) -> None:
        self.stats = stats
        self.interval = interval
        self.mode = mode
        self.out = out or sys.stdout
        self.live = self.out.isatty() if live is None else live
        # Off a terminal, a wide fixed width: log files should not wrap or truncate cells.
        self.console = Console(file=self.out, highlight=False, soft_wrap=False,
                               force_terminal=self.live or None, no_color=not self.live,
                               width=None if self.live else 160)
        self._bar = Progress(TextColumn("overall"), BarColumn(), TextColumn("{task.percentage:>5.1f}%"),
                             TextColumn("{task.fields[rate]}"), TextColumn("ETA"), TimeRemainingColumn(),
                             console=self.console)
        self._task = self._bar.add_task("overall", total=None, rate="")

    def message(self, text: str) -> None:
        if self.live:
            self.console.print(text, markup=False, highlight=False, soft_wrap=True)
        else:
            self.out.write(text + "\n")
            self.out.flush()

    @contextlib.contextmanager
    def running(self) -> Iterator[None]:
        """Show progress while the body runs (as a task on the running loop)."""
        if self.live:
            with Live(self._render(), console=self.console, refresh_per_second=4, transient=False) as live:
                task = asyncio.get_running_loop().create_task(self._refresh_live(live))
                try:
                    yield
                finally:
                    task.cancel()
                    live.update(self._render())
        else:
            task = asyncio.get_running_loop().create_task(self._plain_lines())
            try:
                yield
            finally:
                task.cancel()
                # Like the live table's last update: a log always has the final counters,
                # even of a run shorter than one interval.
                self._write_plain_line()

    async def _refresh_live(self, live: Live) -> None:
        while True:
            await asyncio.sleep(0.25)
            live.update(self._render())

    async def _plain_lines(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            self._write_plain_line()

    def _write_plain_line(self) -> None:
        self.out.write(self.plain_line() + "\n")
        self.out.flush()

    def plain_line(self) -> str:
        total = total_of(self.stats)
        parts = []
        for s in self.stats:
            if s.records or s.objects:
                parts.append(f"{s.name} {s.records}/{s.records_total if s.records_total is not None else '?'}")
        counts = (f"copied {total.copied} skipped {total.skipped} missing {total.missing} failed {total.failed}"
                  if self.mode == "copy" else
                  f"ok {total.ok} absent {total.absent} different {total.different} missing {total.missing}")
        return (f"progress: {', '.join(parts) or 'starting'}; {counts}; {format_size(total.bytes)}, "
                f"{_rate(total.objects, total.elapsed)} obj/s, {format_size(total.bytes / total.elapsed)}/s, "
                f"ETA {_duration(total.eta())}")

    def _render(self) -> Group:
        table = Table(box=box.SIMPLE_HEAD, expand=False)
        table.add_column("type")
        table.add_column("records", justify="right")
        columns = (("copied", "skipped", "missing", "failed") if self.mode == "copy"
                   else ("ok", "absent", "different", "missing"))
        for c in columns:
            table.add_column(c, justify="right")
        table.add_column("bytes", justify="right")
        table.add_column("obj/s", justify="right")
        for s in [*self.stats, total_of(self.stats)]:
            total = f"/{s.records_total}" if s.records_total is not None else ""
            table.add_row(s.name, f"{s.records}{total}", *(str(getattr(s, c)) for c in columns),
                          format_size(s.bytes), _rate(s.objects, s.elapsed))
        overall = total_of(self.stats)
        if overall.records_total:
            self._bar.update(self._task, total=overall.records_total, completed=overall.records,
                             rate=f"{format_size(overall.bytes / overall.elapsed)}/s")
        return Group(table, self._bar)

    def summary(self, title: str) -> None:
        """The final table: per type and total, with duration and rates."""
        table = Table(title=title, box=box.SIMPLE_HEAD if self.live else box.ASCII2)
        columns = (("copied", "skipped", "missing", "failed") if self.mode == "copy"
                   else ("ok", "absent", "different", "missing"))
        for c in ("type", *columns, "retries", "bytes", "duration", "obj/s", "MB/s"):
            table.add_column(c, justify="left" if c == "type" else "right")
        for s in [*self.stats, total_of(self.stats)]:
            table.add_row(s.name, *(str(getattr(s, c)) for c in columns), str(s.retries), format_size(s.bytes),
                          _duration(s.elapsed), _rate(s.objects, s.elapsed), f"{s.bytes / s.elapsed / 1e6:.2f}")
        self.console.print(table)
        total = total_of(self.stats)
        private = total.private
        if self.mode == "copy" and total.proofs:
            names = {"md5": "the source's MD5 ETag", "multipart-etag": "its multipart ETag recomputed",
                     "server-side": "server-side copy", "transfer": "the destination's Content-MD5 check only"}
            self.message("content proven: " + ", ".join(f"{n} by {names.get(proof, proof)}"
                                                         for proof, n in total.proofs.most_common()))
        if self.mode == "copy" and private:
            self.message(f"kept private: {private} objects copied without a public ACL (backups, imports, "
                         "media of suspended accounts and of removed posts, as Mastodon keeps them)")
