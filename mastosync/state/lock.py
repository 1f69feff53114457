"""One run per state directory (a flock the kernel releases however the run ends)."""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

from mastosync.errors import ConfigError, StateBusy


class RunLock:
    """One run per state directory: an exclusive flock held for the run, with the holder's PID.

    The kernel releases a flock when its process dies, however it dies, so a crashed run
    never leaves the directory locked.
    """

    def __init__(self, state_dir: str, name: str = "run.lock") -> None:
        self.path = Path(state_dir).resolve() / name
        self._fd: int | None = None

    def __enter__(self) -> RunLock:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise ConfigError("sync.state_dir", f"cannot use {self.path.parent}: {exc.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 64).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise StateBusy(f"another mastosync run (PID {holder}) is using the state directory "
                            f"{self.path.parent}; wait for it to end, or give this one another sync.state_dir"
                            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return self

    def __exit__(self, *exc: object) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, 0)
            os.close(self._fd)  # closing releases the lock
            self._fd = None
