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

from mastosync.config import MiB
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
        objects[original] = body(original, 20 * MiB if video else 2000 + 37 * i, ct)
        objects[small] = body(small, 1500, "image/png")
    await db.insert("media_attachments", table)
    for key, data in objects.items():
        s3.put(bucket, key, data, "video/mp4" if key.endswith(".mp4") else "image/jpeg")
    return objects


@pytest.mark.parametrize("signum,code", [(signal.SIGINT, 130)])  # SIGTERM: the reliability stop test
async def test_interrupt_then_resume(tmp_path: Path, mastodon_db: MastodonDb, moto: S3Server,
                                     signum: int, code: int) -> None:
    src, dst = new_bucket(moto, "src"), new_bucket(moto, "dst")
    objects = await seed_many(mastodon_db, moto, src, rows=150, large=3)
    proxy = FaultProxy(moto.port).start()
    proxy.set_faults(latency=0.03)
    try:
        config = write_config(tmp_path / "config.toml", db=mastodon_db, source=(moto, src),
                              destination=(moto, dst), destination_endpoint=proxy.endpoint,
                              extra={"sync": {"concurrency": 4, "progress_interval": 0.5}})
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
        assert moto.open_uploads(dst) == []
        first_run = {path for path, n in proxy.counters.stored.items()}
        assert 0 < len(first_run) < len(objects)

        proxy.reset_counters()
        resumed = run_cli("run", config=config)
        assert resumed.returncode == 0, resumed.stderr
        assert "resuming" in resumed.stdout
        # The summary tells this run's counts and the whole migration's, earlier runs included.
        assert (f"whole migration so far (this run and the earlier ones it resumed): {len(objects)} copied "
                f"({len(first_run)} earlier)") in resumed.stdout, resumed.stdout
        second_run = set(proxy.counters.stored)
        assert first_run.isdisjoint(second_run), "objects finished before the interrupt were uploaded again"
        assert moto.keys(dst) == set(objects)
        for key, data in objects.items():
            assert moto.get(dst, key)[0] == data
        state = json.loads(next((tmp_path / "state").glob("resume-*.json")).read_text())
        assert state["types"]["media_attachments"]["complete"] is True
    finally:
        proxy.stop()
