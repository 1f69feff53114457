"""Shared pieces of the reliability suite: running the CLI in the background, reading its summary,
and checking that no secret leaked anywhere."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from tests.conftest import ROOT, MastodonDb, write_config
from tests.services.faultproxy import FaultProxy
from tests.services.s3 import S3Server


@contextlib.contextmanager
def fault_proxy(server: S3Server, seed: int = 1234, **faults: float) -> Iterator[FaultProxy]:
    """A started fault proxy in front of `server`, always stopped afterwards."""
    proxy = FaultProxy(server.port, seed=seed).start()
    proxy.set_faults(**faults)
    try:
        yield proxy
    finally:
        proxy.stop()


def config_behind_proxy(tmp_path: Path, db: MastodonDb, server: S3Server, source: str, destination: str,
                        proxy: FaultProxy, **sync: object) -> Path:
    """A config copying `source` to `destination` on `server`, the destination reached through `proxy`."""
    return write_config(tmp_path / "config.toml", db=db, source=(server, source),
                        destination=(server, destination), destination_endpoint=proxy.endpoint,
                        extra={"sync": dict(sync)})


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
