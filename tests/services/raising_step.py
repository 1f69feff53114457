"""`mastosync` with a defect planted in run's copy step: the Nth object (and, with
`always`, every one after it) raises a plain RuntimeError, as a bug would.

    python tests/services/raising_step.py N once|always mastosync-args...

Everything else is the real CLI against the real services."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from mastosync.engine.plan import Job  # noqa: E402
from mastosync.engine.steps import copy  # noqa: E402

after, mode, args = int(sys.argv[1]), sys.argv[2], sys.argv[3:]
calls = 0
real = copy.CopyStep.__call__


async def planted(self: copy.CopyStep, job: Job) -> copy.Copied:
    global calls
    calls += 1
    if calls == after or (mode == "always" and calls > after):
        raise RuntimeError(f"planted defect at object {calls}")
    return await real(self, job)


copy.CopyStep.__call__ = planted  # type: ignore[method-assign]

from mastosync.cli import main  # noqa: E402

main(args)
