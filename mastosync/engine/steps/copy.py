"""run's step: copy one object, trying the key where an older Mastodon put it if need be."""

from __future__ import annotations

from dataclasses import dataclass

from mastosync.engine.outcome import Outcome, Status
from mastosync.engine.plan import Job
from mastosync.engine.transfer import Copier, WriteAs
from mastosync.errors import EndpointDown, MastosyncError
from mastosync.mastodon import layout
from mastosync.storage.base import StorageError


@dataclass(slots=True)
class Copied:
    """A step's result: the job it ended on (the fallback's, if that is where the file was),
    its outcome, and an error that must end the run after the outcome is recorded."""

    job: Job
    outcome: Outcome
    fatal: MastosyncError | None = None


class CopyStep:
    def __init__(self, copier: Copier) -> None:
        self.copier = copier
        # A bucket tells each object's Content-Type; only a file needs the row's as a fallback.
        self.type_hints = not copier.source.keeps_metadata

    async def __call__(self, job: Job) -> Copied:
        try:
            outcome = await self._copy(job)
            other = job.fallback
            if outcome.status == Status.MISSING and other is not None:
                # Where an older Mastodon wrote this style; copied under its own key.
                found = await self._copy(other)
                if found.status == Status.MISSING:
                    outcome.error = f"not found at the source, nor at {other.source_key}"
                else:
                    job, outcome = other, found
        except EndpointDown as exc:  # the run stops; this object is one of those it leaves failed
            return Copied(job, Outcome(Status.FAILED, 0, 1, str(exc)), exc)
        return Copied(job, outcome)

    async def _copy(self, job: Job) -> Outcome:
        obj = job.obj
        how = WriteAs(obj.private, layout.likely_content_type(obj) if self.type_hints else None, layout.file_mode(obj))
        try:
            return await self.copier.copy(job.source_key, job.destination_key, job.known, how=how)
        except StorageError as exc:  # classified but escaped the copier: the object failed, not the run
            return Outcome(Status.FAILED, 0, 1, str(exc))
