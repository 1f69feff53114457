"""Shared pieces of the reliability suite: running the CLI in the background, reading its summary,
and checking that no secret leaked anywhere."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import ROOT
from tests.services.faultproxy import FaultProxy


def start_run(config: Path, *args: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MASTOSYNC_")}
    return subprocess.Popen([sys.executable, "-m", "mastosync", "run", "--config", str(config), *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT, env=env)


def wait_stored(proxy: FaultProxy, count: int, proc: subprocess.Popen[str], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while sum(proxy.counters.stored.values()) < count:
        if proc.poll() is not None:
            raise AssertionError(f"run ended early ({proc.returncode}): {proc.communicate()}")
        if time.monotonic() > deadline:
            raise AssertionError("the run made no progress")
        time.sleep(0.02)


def summary_row(stdout: str, name: str = "total") -> dict[str, str]:
    """A row of the final summary table, by column name."""
    lines = [line for line in stdout.splitlines() if line.startswith("|")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    for line in lines[1:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        if cells[0] == name:
            return dict(zip(header, cells, strict=False))
    raise AssertionError(f"no {name} row in:\n{stdout}")


def assert_no_secrets(secrets: list[str], *texts: str, state_dir: Path | None = None) -> None:
    blobs = list(texts)
    if state_dir is not None and state_dir.exists():
        blobs += [p.read_text(errors="replace") for p in state_dir.rglob("*") if p.is_file()]
    for secret in secrets:
        for blob in blobs:
            assert secret not in blob, "a secret leaked into output or state"
