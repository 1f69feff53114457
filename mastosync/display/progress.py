"""What the user sees while a run goes and when it ends.

The engine only bumps counters (engine/counters.py); the display reads them a few times a
second (rich Live on a terminal) or every sync.progress_interval seconds (plain lines
without control characters for cron, nohup and CI). Nothing here is on the
per-object path.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from collections.abc import Callable, Iterator
from typing import TextIO

from rich import box
from rich.console import Console, Group
from rich.live import Live
from rich.progress import BarColumn, Progress, TextColumn
from rich.table import Table

from mastosync.config.units import format_size
from mastosync.engine.counters import MIB, RateWindow, Stats, total_of


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def _rate(n: float, elapsed: float) -> str:
    return f"{n / elapsed:.1f}"


def _mib_per_s(size: float, elapsed: float) -> str:
    return f"{size / elapsed / MIB:.1f} MiB/s"


def _size_pair(done: int, total: int | None) -> str:
    """"1.9/3.8 MiB": done of total in the total's unit, narrow enough for an 80-column table."""
    if total is None:
        return format_size(done)
    number, unit = format_size(total).split(" ")
    scale = {"B": 1, "KiB": 1024, "MiB": MIB, "GiB": 1024 * MIB, "TiB": 1024 * 1024 * MIB}[unit]
    done_text = f"{done / scale:.0f}" if unit == "B" else f"{done / scale:.1f}"
    return f"{done_text}/{number} {unit}"


def _done_of(done: int, total: int | None, formatter: Callable[[int], str] = str) -> str:
    return formatter(done) if total is None else f"{formatter(done)}/{formatter(total)}"


class Display:
    """Live table on a terminal, plain periodic lines otherwise."""

    def __init__(self, stats: list[Stats], interval: float, mode: str = "copy",
                 out: TextIO | None = None, live: bool | None = None, *,
                 limits: Callable[[], str] | None = None, private_note: str | None = None) -> None:
        self.stats = stats
        self.interval = interval
        self.mode = mode
        # Said instead of "kept private" where the destination cannot keep anything private
        # ({private}: how many objects Mastodon keeps private).
        self.private_note = private_note
        self.limit_text = limits  # the limits in force, shown with the progress
        self.window = RateWindow()
        self.out = out or sys.stdout
        self.live = self.out.isatty() if live is None else live
        # Off a terminal, a wide fixed width: log files should not wrap or truncate cells.
        self.console = Console(file=self.out, highlight=False, soft_wrap=False,
                               force_terminal=self.live or None, no_color=not self.live,
                               width=None if self.live else 160)
        self._bar = Progress(TextColumn("overall"), BarColumn(), TextColumn("{task.percentage:>5.1f}%"),
                             TextColumn("{task.fields[rate]}"), TextColumn("ETA {task.fields[eta]}"),
                             console=self.console)
        self._task = self._bar.add_task("overall", total=None, rate="", eta="-")

    def message(self, text: str) -> None:
        if self.live:
            self.console.print(text, markup=False, highlight=False, soft_wrap=True)
        else:
            self.out.write(text + "\n")
            self.out.flush()

    @contextlib.contextmanager
    def running(self) -> Iterator[None]:
        """Show progress while the body runs (as a task on the running loop)."""
        with self._showing():
            yield

    @contextlib.contextmanager
    def _showing(self) -> Iterator[None]:
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

    def _sample(self) -> Stats:
        total = total_of(self.stats)
        self.window.add(time.monotonic(), total.objects, total.bytes_done)
        return total

    def plain_line(self) -> str:
        total = self._sample()
        parts = []
        for s in self.stats:
            if s.started_work:
                parts.append(f"{s.name} {_done_of(s.objects, s.objects_total)}")
        counts = (f"copied {total.copied} skipped {total.skipped} missing {total.missing} failed {total.failed}"
                  if self.mode == "copy" else
                  f"ok {total.ok} absent {total.absent} different {total.different} missing {total.missing}")
        fraction = "" if total.fraction is None else f"{total.fraction:.1%} "
        limit = f"; {self.limit_text()}" if self.limit_text is not None else ""
        return (f"progress: {fraction}{', '.join(parts) or 'starting'} objects; {counts}; "
                f"{_done_of(total.bytes_done, total.bytes_expected, format_size)}, "
                f"{_rate(total.objects, total.elapsed)} obj/s, {_mib_per_s(total.bytes, total.elapsed)}, "
                f"ETA {_duration(self.window.eta(total))}{limit}")

    def _render(self) -> Group:
        table = Table(box=box.SIMPLE_HEAD, expand=False, padding=(0, 1), pad_edge=False)
        table.add_column("type", no_wrap=True)  # on 80 columns, the numbers give way, not the names
        table.add_column("objects", justify="right")
        columns = (("copied", "skipped", "missing", "failed") if self.mode == "copy"
                   else ("ok", "absent", "different", "missing"))
        for c in columns:
            table.add_column(c, justify="right")
        table.add_column("bytes", justify="right", no_wrap=True)
        table.add_column("obj/s", justify="right")
        overall = self._sample()
        # Types with nothing to do take no room while running (the summary lists them all).
        shown = [s for s in self.stats if s.objects_total != 0 or s.started_work]
        for s in [*shown, overall]:
            table.add_row(s.name, _done_of(s.objects, s.objects_total), *(str(getattr(s, c)) for c in columns),
                          _size_pair(s.bytes_done, s.bytes_expected),
                          _rate(s.objects, s.elapsed) if s.started_work else "-")
        if overall.fraction is not None:
            # The bar counts objects and bytes done of the totals; the ETA follows the last 30 s.
            self._bar.update(self._task, total=1000, completed=round(overall.fraction * 1000),
                             rate=_mib_per_s(overall.bytes, overall.elapsed),
                             eta=_duration(self.window.eta(overall)))
        if self.limit_text is not None:
            return Group(table, self._bar, self.limit_text())
        return Group(table, self._bar)

    def summary(self, title: str) -> None:
        """The final table: per type and total, with duration and rates."""
        table = Table(title=title, box=box.SIMPLE_HEAD if self.live else box.ASCII2)
        columns = (("copied", "skipped", "missing", "failed") if self.mode == "copy"
                   else ("ok", "absent", "different", "missing"))
        for c in ("type", *columns, "retries", "bytes", "duration", "obj/s", "MiB/s"):
            table.add_column(c, justify="left" if c == "type" else "right")
        for s in [*self.stats, total_of(self.stats)]:
            began = s.started_work or s.name == "total"
            table.add_row(s.name, *(str(getattr(s, c)) for c in columns), str(s.retries), format_size(s.bytes),
                          _duration(s.elapsed) if began else "-", _rate(s.objects, s.elapsed) if began else "-",
                          f"{s.bytes / s.elapsed / MIB:.2f}" if began else "-")
        self.console.print(table)
        total = total_of(self.stats)
        private = total.private
        if self.mode == "copy" and total.proofs:
            names = {"md5": "the source's MD5 ETag", "multipart-etag": "its multipart ETag recomputed",
                     "server-side": "server-side copy", "transfer": "the destination's Content-MD5 check only",
                     "written": "the bytes written as read (neither side keeps a checksum)"}
            self.message("content proven: " + ", ".join(f"{n} by {names.get(proof, proof)}"
                                                         for proof, n in total.proofs.most_common()))
        if self.mode == "copy" and private and self.private_note:
            self.message(self.private_note.format(private=private))
        elif self.mode == "copy" and private:
            self.message(f"kept private: {private} objects at the destination without a public ACL (backups, "
                         "imports, media of suspended accounts and of removed posts, as Mastodon keeps them)")
        if self.mode == "copy" and total.kept:
            self.message(f"newer at the destination, kept: {total.kept} objects that differ from the source's "
                         "and were written at the destination later (by Mastodon, after the switch); listed in "
                         "the report")
