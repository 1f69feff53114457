"""A defect (an exception nobody foresaw) stops the run with one line and exit 70, the
traceback in a file, the resume state saved; it never hangs or "completes"."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, MastodonDb, new_bucket, run_cli, write_config
from tests.services.s3 import S3Server
from tests.test_resume import seed_many

PLANTED = ROOT / "tests" / "services" / "raising_step.py"


def run_with_defect(after: int, mode: str, config: Path, log: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MASTOSYNC_")}
    return subprocess.run([sys.executable, str(PLANTED), str(after), mode, "run", "--config", str(config),
                           "--log-file", str(log)],
                          capture_output=True, text=True, timeout=120, env=env, cwd=ROOT)


@pytest.mark.parametrize("mode", ["once", "always"])
async def test_a_defect_stops_the_run_with_exit_70_and_progress_saved(
        tmp_path: Path, mastodon_db: MastodonDb, moto: S3Server, mode: str) -> None:
    src, dst = new_bucket(moto, "src"), new_bucket(moto, "dst")
    objects = await seed_many(mastodon_db, moto, src, rows=60, large=0)
    config = write_config(tmp_path / "config.toml", db=mastodon_db, source=(moto, src), destination=(moto, dst),
                          extra={"sync": {"concurrency": 2, "progress_interval": 0.5}})
    log = tmp_path / "events.jsonl"
    # "always": every worker dies in turn; the run must still end (it used to hang on a full queue).
    result = run_with_defect(20, mode, config, log)
    assert result.returncode == 70, result.stderr + result.stdout
    lines = [line for line in result.stderr.splitlines() if line.startswith("mastosync: error:")]
    assert len(lines) == 1 and "internal error" in lines[0] and "planted defect at object 20" in lines[0], result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    # The traceback is in the log file, with the line that raised.
    events = [json.loads(line) for line in log.read_text().splitlines()]
    crash = [e for e in events if e["event"] == "internal-error"]
    assert crash and "raising_step.py" in crash[0]["traceback"] and "RuntimeError" in crash[0]["traceback"]
    crash_file = next((tmp_path / "state").glob("crash-*.log"))
    assert str(crash_file) in lines[0] and "planted defect" in crash_file.read_text()
    # Not complete, not "finished": the resume mark stays behind the object that raised.
    state = json.loads(next((tmp_path / "state").glob("resume-*.json")).read_text())
    media = state["types"]["media_attachments"]
    assert not media.get("complete")
    assert media["done_through"] is None or media["done_through"] < 60
    history = [json.loads(line) for line in (tmp_path / "state" / "runs.jsonl").read_text().splitlines()]
    assert history[-1]["complete"] is False
    # The next run (no defect) resumes and finishes everything.
    again = run_cli("run", config=config)
    assert again.returncode == 0, again.stderr
    assert "resuming" in again.stdout
    assert moto.keys(dst) == set(objects)


def test_a_defect_outside_the_engine_writes_its_traceback_to_the_state_dir(tmp_path: Path) -> None:
    """A defect before any copy (here: in reading the configuration's state_dir) is the same
    one line and exit 70, with the traceback kept in a file."""
    config = write_config(tmp_path / "config.toml",
                          extra={"source": {"kind": "filesystem", "root": str(tmp_path / "old")},
                                 "destination": {"kind": "filesystem", "root": str(tmp_path / "new")}})
    code = ("import sys; import mastosync.commands.status as s\n"
            "def boom(state_dir): raise KeyError('planted')\n"
            "s.report = boom\n"
            "from mastosync.cli import main; main(sys.argv[1:])")
    result = subprocess.run([sys.executable, "-c", code, "status", "--config", str(config)], capture_output=True,
                            text=True, timeout=60, cwd=ROOT)
    assert result.returncode == 70, result.stderr
    assert "Traceback" not in result.stderr and "internal error" in result.stderr
    crash = list((tmp_path / "state").glob("crash-*.log"))
    assert len(crash) == 1 and "KeyError: 'planted'" in crash[0].read_text()
    assert str(crash[0]) in result.stderr
