"""Interrupting a run (SIGINT, SIGTERM) and resuming it: nothing finished is uploaded again."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mastosync.config.units import MiB
from tests.conftest import ROOT, MastodonDb, new_bucket, run_cli, write_config
from tests.services.faultproxy import FaultProxy
from tests.services.instance import body
from tests.services.s3 import S3Server


async def seed_many(db: MastodonDb, s3: S3Server, bucket: str, rows: int, large: int) -> dict[str, bytes]:
    """`rows` JPEG media (original + small) and `large` 20 MiB videos (original + small)."""
    objects: dict[str, bytes] = {}
    table = []
    for i in range(1, rows + large + 1):
        video = i > rows
        name, ct = (f"v{i}.mp4", "video/mp4") if video else (f"p{i}.jpg", "image/jpeg")
        table.append({"id": i, "file_file_name": name, "file_content_type": ct})
        part = f"000/{i // 1000:03d}/{i % 1000:03d}"
        original = f"media_attachments/files/{part}/original/{name}"
        small = f"media_attachments/files/{part}/small/" + (f"v{i}.png" if video else name)
        objects[original] = body(original, 6 * MiB if video else 2000 + 37 * i, ct)  # two 5 MiB parts
        objects[small] = body(small, 1500, "image/png")
    await db.insert("media_attachments", table)
    for key, data in objects.items():
        s3.put(bucket, key, data, "video/mp4" if key.endswith(".mp4") else "image/jpeg")
    return objects


@pytest.mark.parametrize("signum,code", [(signal.SIGINT, 130)])  # SIGTERM: the reliability stop test
async def test_interrupt_then_resume(tmp_path: Path, mastodon_db: MastodonDb, rclone: S3Server,
                                     signum: int, code: int) -> None:
    src, dst = new_bucket(rclone, "src"), new_bucket(rclone, "dst")
    objects = await seed_many(mastodon_db, rclone, src, rows=150, large=3)
    proxy = FaultProxy(rclone.port).start()
    proxy.set_faults(latency=0.03)
    try:
        config = write_config(tmp_path / "config.toml", db=mastodon_db, source=(rclone, src),
                              destination=(rclone, dst), destination_endpoint=proxy.endpoint,
                              extra={"sync": {"concurrency": 4, "progress_interval": 0.5,
                                              "multipart_threshold": "5MiB", "part_size": "5MiB"}})
        env = {k: v for k, v in os.environ.items() if not k.startswith("MASTOSYNC_")}
        proc = subprocess.Popen([sys.executable, "-m", "mastosync", "run", "--config", str(config)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT, env=env)
        deadline = time.monotonic() + 120
        while sum(proxy.counters.stored.values()) < len(objects) // 3:
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the run did not get a third of the way"
            time.sleep(0.05)
        proc.send_signal(signum)
        out, err = proc.communicate(timeout=60)  # a stop that hangs fails here
        assert proc.returncode == code, err
        assert "progress saved" in err and "interrupted" in out
        assert rclone.open_uploads(dst) == []
        first_run = {path for path, n in proxy.counters.stored.items()}
        assert 0 < len(first_run) < len(objects)

        state = json.loads(next((tmp_path / "state").glob("resume-*.json")).read_text())
        mark = state["types"]["media_attachments"]["done_through"]
        assert mark is not None and 0 < mark < 153
        proxy.reset_counters()
        log = tmp_path / "resumed.jsonl"
        resumed = run_cli("run", "--log-file", str(log), config=config)
        assert resumed.returncode == 0, resumed.stderr
        resuming = f"resuming an unfinished run (--restart starts over): media_attachments after id {mark}"
        assert resuming in resumed.stdout
        # Only the records after the mark are read again (a resume that started over would read
        # all 153 and skip the copied ones: nothing uploaded twice, yet nothing resumed).
        summary = [json.loads(line) for line in log.read_text().splitlines()][-1]
        assert summary["event"] == "summary" and summary["types"]["media_attachments"]["records"] == 153 - mark
        # The summary tells this run's counts and the whole migration's, earlier runs included.
        assert (f"whole migration so far (this run and the earlier ones it resumed): {len(objects)} copied "
                f"({len(first_run)} earlier)") in resumed.stdout, resumed.stdout
        second_run = set(proxy.counters.stored)
        assert first_run.isdisjoint(second_run), "objects finished before the interrupt were uploaded again"
        assert rclone.keys(dst) == set(objects)
        for key, data in objects.items():
            assert rclone.get(dst, key)[0] == data
        state = json.loads(next((tmp_path / "state").glob("resume-*.json")).read_text())
        assert state["types"]["media_attachments"]["complete"] is True
    finally:
        proxy.stop()


async def test_the_memory_budget_holds_end_to_end(tmp_path: Path, mastodon_db: MastodonDb, moto: S3Server) -> None:
    """multipart_threshold + part_size bounds the bodies in memory, whatever the concurrency: with
    5 MiB + 5 MiB, never more than 10 MiB of bodies are being uploaded at once (the proxy adds
    them up); with a budget that allows more, more are, so the count can tell."""
    src = new_bucket(moto, "src")
    table, sizes = [], 11 * MiB
    for i in range(1, 5):
        table.append({"id": i, "file_file_name": f"v{i}.mp4", "file_content_type": "video/mp4"})
        key = f"media_attachments/files/000/000/{i:03d}/original/v{i}.mp4"
        moto.put(src, key, body(key, sizes, "video/mp4"), "video/mp4")
    await mastodon_db.insert("media_attachments", table)
    proxy = FaultProxy(moto.port).start()
    proxy.set_faults(latency=0.2, only_ops=("PutObject", "UploadPart"))
    try:
        seen = {}
        for label, size in (("tight", "5MiB"), ("loose", "64MiB")):
            dst = new_bucket(moto, label)
            config = write_config(tmp_path / f"{label}.toml", db=mastodon_db, source=(moto, src),
                                  destination=(moto, dst), destination_endpoint=proxy.endpoint,
                                  extra={"sync": {"concurrency": 8, "multipart_threshold": size, "part_size": size,
                                                  "state_dir": str(tmp_path / label)}})
            proxy.reset_counters()
            result = run_cli("run", config=config)
            assert result.returncode == 0, result.stderr
            assert len(moto.keys(dst)) == 4
            seen[label] = proxy.counters.most_upload_bytes_at_once
        assert 5 * MiB <= seen["tight"] <= 10 * MiB, seen
        assert seen["loose"] > 10 * MiB, seen  # the same count sees more when the budget allows more
    finally:
        proxy.stop()
