"""What the engine and its parts tell while a command runs, to whoever listens.

One object, given to each part when it is built (the pool, the copier, the stores, the
display), instead of callbacks assigned to each other's attributes afterwards. A command
subclasses `Quiet` with what it listens to: run writes open uploads into the resume state
and retries into the --log-file; verify and audit only print the stop message.
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from typing import Protocol


class Events(Protocol):
    def stopping(self, signum: int, grace: float) -> None:
        """A first SIGINT/SIGTERM: the intake stops, actions in flight get `grace` seconds."""

    def retry(self, key: str, attempt: int, error: str) -> None:
        """An object's copy is about to be tried again."""

    def upload_started(self, key: str, upload_id: str) -> None:
        """A multipart upload (a large file's temporary) was opened: a crash would leave it."""

    def upload_ended(self, key: str, upload_id: str) -> None:
        """It was completed or aborted."""

    def tick(self) -> None:
        """Every progress interval while the command runs."""


class Quiet:
    """Events nobody listens to; each command's own events override what they need."""

    def stopping(self, signum: int, grace: float) -> None:
        pass

    def retry(self, key: str, attempt: int, error: str) -> None:
        pass

    def upload_started(self, key: str, upload_id: str) -> None:
        pass

    def upload_ended(self, key: str, upload_id: str) -> None:
        pass

    def tick(self) -> None:
        pass


QUIET: Events = Quiet()


class Told(Quiet):
    """Only the stop message, printed with `say` (verify, audit, fix)."""

    def __init__(self, say: Callable[[str], None]) -> None:
        self.say = say

    def stopping(self, signum: int, grace: float) -> None:
        self.say(stop_message(signum, grace))


def stop_message(signum: int, grace: float) -> str:
    return (f"mastosync: {signal.Signals(signum).name} received: finishing copies in flight "
            f"(at most {grace:.0f}s) and saving progress; press Ctrl-C again to stop at once")
