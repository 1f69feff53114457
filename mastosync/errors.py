"""The errors mastosync reports to its user, and the exit code each one means.

Every error that can reach the command line is one of these; the CLI prints its
message on one line and exits with its code. Nothing else escapes as a traceback.

    MastosyncError                    exit 2 unless a subclass says otherwise
    ├── UsageError                    bad option value on the command line
    ├── ConfigError                   configuration file or environment; names the key
    ├── ConnectError                  something the run needs cannot be reached
    │   ├── DatabaseError             PostgreSQL: refused, bad password, missing table
    │   ├── TunnelError               SSH: refused, host key, authentication, forward
    │   ├── BucketError               S3: endpoint unreachable, credentials, no bucket
    │   └── FolderError               a folder root: missing, not a folder, not readable/writable
    ├── StateBusy                     another run holds the state directory's lock
    ├── ObjectsFailed                 exit 1: the run finished but some objects failed
    ├── EndpointDown                  exit 1: a bucket's endpoint stopped answering mid-run
    ├── DiskFull                      exit 1: a folder destination's filesystem filled up mid-run
    ├── VerifyGaps                    exit 1: verify found objects absent or different
    ├── SourceMisconfigured           (nearly) nothing referenced is at the source: a wrong setting
    ├── InternalError                 exit 70: a defect; traceback in a file, progress saved
    └── Interrupted                   exit 130 (SIGINT) or 143 (SIGTERM); progress saved

Messages never contain secrets: callers build them from key names and hosts, never
from configuration values that may hold a password.
"""

from __future__ import annotations

import signal


class MastosyncError(Exception):
    """Base of every error shown to the user."""

    exit_code = 2


class UsageError(MastosyncError):
    """A command-line option has a value mastosync cannot use."""


class ConfigError(MastosyncError):
    """The configuration is missing, unreadable, or has a bad key or value."""

    def __init__(self, key: str | None, problem: str) -> None:
        self.key = key
        self.problem = problem
        super().__init__(f"configuration: {key}: {problem}" if key else f"configuration: {problem}")


class ConnectError(MastosyncError):
    """A service the run needs cannot be reached or refuses us."""


class DatabaseError(ConnectError):
    """PostgreSQL is unreachable, refuses the login, or lacks what we read."""


class TunnelError(ConnectError):
    """The SSH tunnel to the database cannot be opened."""


class BucketError(ConnectError):
    """An S3 endpoint or bucket is unreachable or refuses our credentials."""


class FolderError(ConnectError):
    """A folder side's root is missing, not a directory, or cannot be read or written."""


class StateBusy(MastosyncError):
    """Another run is using the same state directory (overlapping cron jobs)."""


class ObjectsFailed(MastosyncError):
    """Some objects could not be copied; the report lists them."""

    exit_code = 1


class EndpointDown(MastosyncError):
    """An endpoint has answered nothing but failures for longer than sync.timeout: the run stops."""

    exit_code = 1


class DiskFull(MastosyncError):
    """The destination folder's filesystem is full (or the quota reached): every next write
    would fail too, so the run stops; the partial file is removed, complete ones stay."""

    exit_code = 1


class VerifyGaps(MastosyncError):
    """The destination lacks objects the source has, or holds them with another size."""

    exit_code = 1


class SourceMisconfigured(MastosyncError):
    """Nearly every object the database references is absent at the source: the source
    setting (key_prefix, root, bucket) points at the wrong place, not a few lost files."""


class InternalError(MastosyncError):
    """An exception nobody foresaw: a defect in mastosync. The run stops as after Ctrl-C
    (progress saved), the traceback goes to a file, and the exit code (70, EX_SOFTWARE)
    tells a wrapper script that this is neither a failed object nor a bad setting."""

    exit_code = 70

    def __init__(self, error: BaseException) -> None:
        import traceback

        self.error = error
        self.traceback = "".join(traceback.format_exception(error))
        self.log_path: str | None = None  # where the traceback was written, once it was
        super().__init__(f"internal error (a defect in mastosync, please report it): "
                         f"{type(error).__name__}: {error}")

    def __str__(self) -> str:
        where = f"; the traceback is in {self.log_path}" if self.log_path else ""
        return super().__str__() + where + "; progress saved"


class Interrupted(MastosyncError):
    """The run was stopped by a signal after saving its progress."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        self.exit_code = 128 + signum
        super().__init__(f"interrupted by {signal.Signals(signum).name}; progress saved")
