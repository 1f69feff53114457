"""What an outcome changes: the counters shown and summarised, the report, the resume state.

The steps (steps/) decide what happened to an object; these books write it down, one per
command (run, verify, audit and fix), so a step never updates progress behind the
command's back.
"""

from __future__ import annotations

import collections
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TextIO

from mastosync.engine.outcome import Proof, Status
from mastosync.engine.plan import Job
from mastosync.engine.sanity import SourceWatch
from mastosync.engine.steps.check import Finding
from mastosync.engine.steps.copy import Copied
from mastosync.state.reports import Report
from mastosync.state.resume import ResumeState

if TYPE_CHECKING:  # audit's step is imported by audit alone
    from mastosync.engine.steps.audit import Audit, Inspection

SAVE_EVERY = 2.0  # seconds between writes of the resume state while objects finish


def report_entry(job: Job, status: str, reason: str | None, attempts: int) -> dict[str, Any]:
    o = job.obj
    return {"type": o.type, "id": o.id, "attachment": o.attachment, "style": o.style,
            "source_key": job.source_key, "destination_key": job.destination_key, "status": str(status),
            "reason": reason, "attempts": attempts}


class CopyBook:
    """run: counters per type, failures and missing objects (and notes) in the report,
    finished records in the resume state; what the source holds watched for a wrong setting."""

    def __init__(self, report: Report, state: ResumeState, watch: SourceWatch | None = None) -> None:
        self.report, self.state, self.watch = report, state, watch

    def record(self, copied: Copied) -> None:
        self.book(copied)
        status = copied.outcome.status
        if self.watch is not None and status != Status.FAILED:
            self.watch.saw(copied.job.obj.type, copied.job.source_key, status != Status.MISSING)

    def book(self, copied: Copied) -> None:
        job, outcome = copied.job, copied.outcome
        s = job.stats
        s.retries += outcome.retries
        s.done(outcome.size, job.obj.estimate)
        if outcome.status == Status.COPIED:
            s.copied += 1
            s.bytes += outcome.bytes
            s.private += job.obj.private
            s.proofs[outcome.proof or Proof.TRANSFER] += 1
            if outcome.note:
                self.report.write(report_entry(job, outcome.status, outcome.note, outcome.attempts))
        elif outcome.status == Status.SKIPPED:
            s.skipped += 1
            s.private += job.obj.private  # present, and written private when it was copied
            if outcome.note:  # newer at the destination, kept
                s.kept += 1
                self.report.write(report_entry(job, "kept", outcome.note, outcome.attempts))
        else:
            if outcome.status == Status.MISSING:
                s.missing += 1
            else:
                s.failed += 1
            self.report.write(report_entry(job, outcome.status, outcome.error, outcome.attempts))
        job.progress.finish(job.obj.id, outcome.status != Status.FAILED)
        self.state.save(every=SAVE_EVERY)


class VerifyBook:
    """verify: counters per type, every finding in the report (and on stdout, as lines or
    JSON with --json)."""

    def __init__(self, report: Report, say: Callable[[str], None], out: TextIO, as_json: bool,
                 watch: SourceWatch | None = None) -> None:
        self.report, self.say, self.out, self.as_json = report, say, out, as_json
        self.watch = watch

    def record(self, finding: Finding) -> None:
        self.book(finding)
        if self.watch is not None and finding.status != Status.ERROR:
            # Absent at the source but at the destination: Mastodon wrote it there (after the switch).
            at_source = finding.status != Status.MISSING or finding.destination_size is not None
            self.watch.saw(finding.job.obj.type, finding.job.source_key, at_source)

    def book(self, finding: Finding) -> None:
        job, status = finding.job, finding.status
        s = job.stats
        if status == Status.ERROR:
            s.failed += 1
            s.done(0, job.obj.estimate)
            self._write(finding)
            return  # not finished: the record is checked again next time
        if status == Status.OK:
            s.ok += 1
            s.bytes += finding.source_size or 0
            s.proofs[finding.proof or "size"] += 1
        else:
            if status == Status.MISSING:
                s.missing += 1
            elif status == Status.ABSENT:
                s.absent += 1
            else:
                s.different += 1
            self._write(finding)
        s.done(finding.source_size or 0, job.obj.estimate)
        job.progress.finish(job.obj.id, True)

    def _write(self, finding: Finding) -> None:
        job = finding.job
        entry = {**report_entry(job, finding.status, finding.reason, 1), "source_size": finding.source_size,
                 "destination_size": finding.destination_size}
        self.report.write(entry)
        if self.as_json:
            self.out.write(json.dumps(entry, ensure_ascii=False) + "\n")
        else:
            self.say(f"{finding.status}\t{job.obj.type}\t{job.obj.id}\t{job.destination_key}\t"
                                 f"{finding.reason}")


@dataclass
class Tally:
    """audit's counters of one type."""

    expected: int = 0
    present: int = 0
    missing: int = 0  # absent here, and at the source too (or this is the source): not an error
    absent: int = 0  # absent from the destination, though the source has it: a gap
    size_mismatch: int = 0
    wrong_headers: int = 0
    wrong_acl: int = 0
    fixed: int = 0
    would_fix: int = 0  # fix --dry-run
    skipped: int = 0  # SSE-C objects: their headers cannot be rewritten
    errors: int = 0
    headers_checked: int = 0  # (orphans are counted by find_orphans, per page, not per record)


class AuditBook:
    """audit and fix: a tally per type for the summary table, the live table's counters,
    every finding in the report (and on stdout with --json), fix's resume state."""

    def __init__(self, audit: Audit, report: Report, out: TextIO | None, state: ResumeState | None) -> None:
        self.audit, self.report, self.out, self.state = audit, report, out, state
        self.tallies: dict[str, Tally] = collections.defaultdict(Tally)

    def record(self, seen: Inspection) -> None:
        job = seen.job
        tally, s = self.tallies[job.obj.type], job.stats
        tally.expected += 1
        if seen.found == "error":
            tally.errors += 1
            s.failed += 1
        elif seen.found == "missing":
            tally.missing += 1
            s.missing += 1
        elif seen.found == "absent":
            tally.absent += 1
            s.absent += 1
        else:
            tally.present += 1
            s.ok += 1  # the live table counts what was found, as verify's does
        tally.size_mismatch += seen.size_mismatch
        tally.headers_checked += seen.headers_checked
        tally.wrong_headers += seen.wrong_headers
        tally.wrong_acl += seen.wrong_acl
        if seen.repair:
            setattr(tally, seen.repair, getattr(tally, seen.repair) + 1)
        for status, reason in seen.findings:
            entry = {"type": job.obj.type, "id": job.obj.id, "style": job.obj.style,
                     "key": self.audit.key_of(job), "status": status, "reason": reason}
            self.report.write(entry)
            if self.out is not None:
                self.out.write(json.dumps(entry) + "\n")
        s.done(0, job.obj.estimate)
        job.progress.finish(job.obj.id, seen.found != "error")  # fix tries an error again next time
        if self.state is not None:
            self.state.save(every=SAVE_EVERY)
