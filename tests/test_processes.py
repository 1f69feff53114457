"""run --processes N through the CLI: one merged progress, summary, report and exit code; stop
and resume with two processes; a failing worker named; --since last after it."""

from __future__ import annotations

import json
import os
import re
import signal
from pathlib import Path

import pytest

from mastosync.commands.processes import processes_for
from mastosync.errors import UsageError
from tests.conftest import MastodonDb, new_bucket, run_cli, write_config
from tests.reliability.helpers import config_behind_proxy, fault_proxy, start_run, summary_row, wait_stored
from tests.services.faultproxy import FaultProxy
from tests.services.s3 import S3Server
from tests.test_cutover_flow import media_key, seed_media


async def test_two_processes_copy_everything_once(tmp_path: Path, mastodon_db: MastodonDb, rclone: S3Server) -> None:
    src, dst = new_bucket(rclone, "src"), new_bucket(rclone, "dst")
    objects = await seed_media(mastodon_db, rclone, src, range(1, 41))
    await mastodon_db.insert("media_attachments", [{"id": 99, "file_file_name": "gone.jpg",
                                                    "file_content_type": "image/jpeg"}])  # missing at the source
    proxy = FaultProxy(rclone.port).start()
    try:
        config = write_config(tmp_path / "config.toml", db=mastodon_db, source=(rclone, src), destination=(rclone, dst),
                              destination_endpoint=proxy.endpoint, extra={"sync": {"progress_interval": 0.5}})
        result = run_cli("run", "--processes", "2", "--concurrency", "8", config=config)
        assert result.returncode == 0, result.stdout + result.stderr
        stored = dict(proxy.counters.stored)
        # Recorded as one run: the catch-up without --processes finds its baseline.
        catch_up = run_cli("run", "--since", "last", config=config)
        assert catch_up.returncode == 0 and "--since last:" in catch_up.stdout, catch_up.stderr
    finally:
        proxy.stop()
    assert rclone.keys(dst) == set(objects)
    assert all(n == 1 for n in stored.values())  # each object once, by one shard
    out = result.stdout
    assert "2 processes, shards 1/2 to 2/2" in out and "progress:" in out
    assert out.count("mastosync run, 2 processes") == 1  # one summary table
    assert summary_row(out)["copied"] == str(len(objects)) and summary_row(out)["missing"] == "2"
    found = re.search(r"report: (\S+\.jsonl) \(2 failed or missing", out)
    assert found, out
    report = Path(found[1])
    entries = [json.loads(line) for line in report.read_text().splitlines()]
    assert {e["status"] for e in entries} == {"missing"} and {e["shard"] for e in entries} == {"2/2"}  # id 99 is odd


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM])
async def test_stop_and_resume_with_two_processes(tmp_path: Path, mastodon_db: MastodonDb, rclone: S3Server,
                                                  stop: signal.Signals) -> None:
    src, dst = new_bucket(rclone, "src"), new_bucket(rclone, "dst")
    objects = await seed_media(mastodon_db, rclone, src, range(1, 121))
    with fault_proxy(rclone, latency=0.03) as proxy:
        config = config_behind_proxy(tmp_path, mastodon_db, rclone, src, dst, proxy, concurrency=4)
        proc = start_run(config, "--processes", "2")
        wait_stored(proxy, len(objects) // 3, proc)
        proc.send_signal(stop)
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 128 + stop, err  # 130 for Ctrl-C, 143 for SIGTERM (a service manager)
        assert "every process finishes its copies in flight" in out and "(interrupted)" in out
        first = set(proxy.counters.stored)
        assert 0 < len(first) < len(objects)
        states = list((tmp_path / "state").glob("resume-*-shard-*of2.json"))
        assert len(states) == 2 and all(not json.loads(p.read_text())["types"]["media_attachments"].get("complete")
                                        for p in states)
        proxy.reset_counters()
        resumed = run_cli("run", "--processes", "2", config=config)
        assert resumed.returncode == 0, resumed.stdout + resumed.stderr
        assert first.isdisjoint(proxy.counters.stored), "objects finished before the stop were uploaded again"
        assert rclone.keys(dst) == set(objects)
        assert media_key(1) in rclone.keys(dst)


async def test_a_failing_worker_is_named(tmp_path: Path, mastodon_db: MastodonDb, moto: S3Server) -> None:
    src, dst = new_bucket(moto, "src"), new_bucket(moto, "dst")
    await seed_media(mastodon_db, moto, src, range(1, 5))
    proxy = FaultProxy(moto.port).start()
    try:
        proxy.set_faults(error=1.0, error_answer=(403, "AccessDenied"), only_ops=("GetObject",))
        config = write_config(tmp_path / "config.toml", db=mastodon_db, source=(moto, src), destination=(moto, dst),
                              source_endpoint=proxy.endpoint)
        result = run_cli("run", "--processes", "2", config=config)
    finally:
        proxy.stop()
    assert result.returncode == 1, result.stdout + result.stderr
    for k in (1, 2):
        assert f"mastosync: shard {k}/2 exited with 1: 4 objects failed to copy" in result.stderr, result.stderr
    assert "8 objects failed to copy" in result.stderr


def test_processes_auto_is_one_per_core(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "cpu_count", lambda: 6)
    assert processes_for("auto") == processes_for("AUTO ") == 6
    monkeypatch.setattr(os, "cpu_count", lambda: None)  # unknown: one
    assert processes_for("auto") == 1
    assert processes_for("3") == 3
    for bad in ("0", "-1", "two", "1.5", ""):
        with pytest.raises(UsageError, match="--processes"):
            processes_for(bad)
