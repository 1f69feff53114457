"""`run --processes N`: every core. N local worker processes, each the shard K/N of the
migration (the same split as `--shard`), under one parent that shows one merged progress and
prints one summary, one report and one exit code.

The workers are `mastosync run --shard K/N` processes: each resumes, locks and reports its own
shard as a sharded run does, with its share of --concurrency and of --bwlimit and --tpslimit
(so that N processes add CPU, not load on the providers). Each writes its events (--log-file)
to state_dir/processes/; the parent follows those files for the progress, gathers the
summaries and reports at the end, forwards Ctrl-C and SIGTERM to every worker (each saves its
progress), and names a worker that failed. When every shard completes, the parent records the
run as one, unsharded, in the run history: `--since last` works after it as after a single
process.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mastosync import loop
from mastosync.config.settings import Settings
from mastosync.display.progress import Display
from mastosync.engine.counters import Stats, summary_json
from mastosync.errors import InternalError, Interrupted, MastosyncError, ObjectsFailed, UsageError
from mastosync.loop import stopping_signals
from mastosync.request import Request, resolve_since
from mastosync.state.history import RunHistory
from mastosync.state.lock import RunLock
from mastosync.state.reports import Report
from mastosync.storage.limits import Timetable

COUNTERS = ("records", "copied", "skipped", "missing", "failed", "bytes", "retries", "private", "kept")


def processes_for(value: str) -> int:
    """--processes N or auto (the cores of this machine)."""
    if value.strip().lower() == "auto":
        return max(1, os.cpu_count() or 1)
    if not value.strip().isdigit() or int(value) < 1:
        raise UsageError(f"--processes {value!r}: expected a number of processes, or auto (one per core)")
    return int(value)


@dataclass
class Worker:
    shard: int
    log: Path
    errors: Path
    process: asyncio.subprocess.Process | None = None
    offset: int = 0
    latest: dict[str, Any] = field(default_factory=dict)  # the last progress event's types
    summary: dict[str, Any] | None = None
    code: int | None = None

    def follow(self) -> None:
        """Read the events written since the last look."""
        try:
            with self.log.open("rb") as f:
                f.seek(self.offset)
                data = f.read()
        except FileNotFoundError:
            return
        end = data.rfind(b"\n") + 1  # a line still being written waits for the next look
        self.offset += end
        for line in data[:end].splitlines():
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if event.get("event") == "progress" and "types" in event:
                self.latest = event["types"]
            elif event.get("event") == "summary":
                self.summary = event
                self.latest = event.get("types", self.latest)

    def error(self) -> str:
        try:
            lines = self.errors.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return next((line for line in reversed(lines) if line.startswith("mastosync: error:")), "")


def share(total: float, n: int, k: int) -> float:
    """Worker k's (1-based) share of `total` split n ways, whole numbers where total is one."""
    if float(total).is_integer():
        base, extra = divmod(int(total), n)
        return base + (1 if k <= extra else 0)
    return total / n


def worker_argv(settings: Settings, request: Request, n: int, k: int, log: Path) -> list[str]:
    argv = [sys.executable, "-m", "mastosync", "--config", str(settings.path), "run", "--shard", f"{k}/{n}",
            "--concurrency", str(max(1, int(share(request.concurrency, n, k)))), "--json", "--log-file", str(log)]
    for name in request.types:
        argv += ["--type", name]
    if request.limit is not None:
        argv += ["--limit", str(request.limit)]
    if request.since is not None:
        argv += ["--since", request.since.isoformat()]
    if request.restart:
        argv.append("--restart")
    if request.checksum:
        argv.append("--checksum")
    if request.accept_missing:
        argv.append("--accept-missing")
    argv += ["--bwlimit", Timetable.parse(settings.sync.bwlimit).divided(n)]
    if settings.sync.tpslimit:
        argv += ["--tpslimit", f"{settings.sync.tpslimit / n:g}"]
    return argv


def run_many(settings: Settings, request: Request, n: int) -> None:
    """Run the migration as N shard processes; raises as a single run would."""
    if request.shard is not None:
        raise UsageError("--processes splits the run into shards itself; give --shard or --processes, not both")
    loop.run(_run_many(settings, resolve_since(settings, request, sys.stderr if request.as_json else None), n))


async def _run_many(settings: Settings, request: Request, n: int) -> None:
    folder = Path(settings.sync.state_dir).resolve() / "processes"
    folder.mkdir(parents=True, exist_ok=True)
    started = datetime.now(UTC).replace(tzinfo=None)
    with RunLock(settings.sync.state_dir, f"run-processes-{n}.lock"):
        stats = {name: Stats(name) for name in request.types}
        display = Display(list(stats.values()), settings.sync.progress_interval,
                          out=sys.stderr if request.as_json else None)
        workers = []
        for k in range(1, n + 1):
            log, errors = folder / f"shard-{k}of{n}.jsonl", folder / f"shard-{k}of{n}.log"
            log.unlink(missing_ok=True)
            workers.append(Worker(k, log, errors))
        signals: list[int] = []

        def forward(signum: int) -> None:
            signals.append(signum)
            if len(signals) == 1:
                display.message(f"mastosync: {signal.Signals(signum).name} received: every process finishes its "
                                "copies in flight and saves its progress")
            for w in workers:
                if w.process is not None and w.process.returncode is None:
                    w.process.send_signal(signum)

        with stopping_signals(forward):
            try:
                # The workers tick every second: the merged progress follows their events.
                env = {**os.environ, "MASTOSYNC_SYNC_PROGRESS_INTERVAL": "1"}
                for w in workers:
                    with w.errors.open("wb") as error_file:
                        w.process = await asyncio.create_subprocess_exec(
                            *worker_argv(settings, request, n, w.shard, w.log), stdin=asyncio.subprocess.DEVNULL,
                            stdout=asyncio.subprocess.DEVNULL, stderr=error_file, start_new_session=True, env=env)
                display.message(f"mastosync: {n} processes, shards 1/{n} to {n}/{n} (their logs in {folder})")
                with display.running():
                    waiting = asyncio.gather(*(w.process.wait() for w in workers if w.process is not None))
                    while not waiting.done():
                        merge(workers, stats)
                        await asyncio.wait({waiting}, timeout=0.5)
                    for w in workers:
                        w.code = w.process.returncode if w.process is not None else None
                for w in workers:
                    w.follow()
                merge(workers, stats, final=True)
            finally:
                for w in workers:  # never leave a worker behind (an exception here, a defect)
                    if w.process is not None and w.process.returncode is None:
                        w.process.kill()
        for s in stats.values():
            s.ended = s.ended or s.started
        report = merged_report(settings, workers, n)
        complete = all(w.code == 0 for w in workers) and not signals
        display.summary(f"mastosync run, {n} processes" + (" (interrupted)" if signals else ""))
        display.message(f"report: {report.path} ({report.lines} failed or missing objects)")
        record_as_one(settings, request, workers, n, started, complete)
        if request.as_json:
            sys.stdout.write(json.dumps({"command": "run", "processes": n, "started": started.isoformat(),
                                         "complete": complete, "report": str(report.path),
                                         **summary_json(list(stats.values()))}) + "\n")
            sys.stdout.flush()
    outcome(workers, signals, n, report.path)


def merge(workers: list[Worker], stats: dict[str, Stats], final: bool = False) -> None:
    """The parent's counters: the sum of every worker's latest."""
    if not final:
        for w in workers:
            w.follow()
    for name, s in stats.items():
        found = [w.latest[name] for w in workers if name in w.latest]
        if not found:
            continue
        for counter in COUNTERS:
            setattr(s, counter, sum(int(f.get(counter) or 0) for f in found))
        s.records_total = sum(int(f.get("records_total") or 0) for f in found)
        s.objects_total = sum(int(f.get("objects_total") or 0) for f in found)
        # bytes_expected = bytes_total - estimated_done + bytes_done: set so that it is the sum.
        s.bytes_done = sum(int(f.get("bytes_done") or 0) for f in found)
        s.bytes_total = sum(int(f.get("bytes_expected") or 0) for f in found)
        s.estimated_done = s.bytes_done
        s.proofs.clear()
        for f in found:
            s.proofs.update(f.get("proofs") or {})
        if final:
            s.ended = s.started + max(float(f.get("seconds") or 0) for f in found)


def merged_report(settings: Settings, workers: list[Worker], n: int) -> Report:
    """One report: every worker's lines, each with its shard."""
    report = Report(settings.sync.state_dir, f"run-processes-{n}")
    for w in workers:
        path = (w.summary or {}).get("report")
        if not path:
            continue
        try:
            lines = Path(path).read_text(encoding="utf-8").splitlines()
        except OSError:
            continue
        for line in lines:
            try:
                report.write({**json.loads(line), "shard": f"{w.shard}/{n}"})
            except ValueError:
                continue
    report.close()
    return report


def record_as_one(settings: Settings, request: Request, workers: list[Worker], n: int, started: datetime,
                  complete: bool) -> None:
    """The run, as one unsharded entry of the run history (its baseline: the earliest of the
    shards' sequences), so that a later run without --processes finds it for --since last."""
    history = RunHistory(settings.sync.state_dir)
    baselines = [e for e in (history.last_of_shard(settings, (w.shard, n)) for w in workers) if e is not None]
    baseline = min((datetime.fromisoformat(e["baseline"]) for e in baselines if e.get("baseline")), default=started)
    mastodon = next((e.get("mastodon") for e in baselines if e.get("mastodon")), None)
    history.record(settings, request.types, started, datetime.now(UTC).replace(tzinfo=None), request.since,
                   complete and len(baselines) == n, None, baseline, request.limit, mastodon=mastodon)


def outcome(workers: list[Worker], signals: list[int], n: int, report: Path) -> None:
    """One exit code for all: the gravest of the workers', naming the workers that failed."""
    failed = [w for w in workers if w.code not in (0, None)]
    for w in failed:
        reason = w.error() or f"see {w.errors}"
        print(f"mastosync: shard {w.shard}/{n} exited with {w.code}: {reason.removeprefix('mastosync: error: ')}",
              file=sys.stderr)
    codes = {w.code for w in failed}
    if 70 in codes:
        raise InternalError(RuntimeError("a worker process hit a defect; its traceback is under state_dir"))
    if 2 in codes:
        raise ProcessesFailed(f"{sum(w.code == 2 for w in failed)} of {n} processes could not start their shard "
                              "(the lines above say why)")
    if signals:
        raise Interrupted(signals[0])
    for code in (143, 130):
        if code in codes:
            raise Interrupted(code - 128)
    if failed:
        objects = sum(int((w.summary or {}).get("total", {}).get("failed") or 0) for w in workers)
        raise ObjectsFailed(f"{objects} objects failed to copy; they are listed in {report} and the next run "
                            "retries them")


class ProcessesFailed(MastosyncError):
    """A worker stopped on a setting or an unreachable service (exit 2)."""
