"""`--shard K/N`: N processes, each a disjoint share, together exactly the whole migration."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mastosync.errors import UsageError
from mastosync.request import parse_shard
from mastosync.state.lock import RunLock
from tests.conftest import ROOT, MastodonDb, new_bucket, run_cli, write_config
from tests.services import instance
from tests.services.faultproxy import FaultProxy
from tests.services.s3 import S3Server

PARTITION = re.compile(r"/(\d{3}(?:/\d{3})+)/")


@pytest.mark.parametrize("value,environ,expected", [
    ("1/1", {}, (1, 1)), ("2/8", {}, (2, 8)), (" 3 / 3 ", {}, (3, 3)),
    ("auto/4", {"JOB_COMPLETION_INDEX": "0"}, (1, 4)),  # Kubernetes Indexed Jobs count from 0
    ("auto/4", {"JOB_COMPLETION_INDEX": "3"}, (4, 4)),
    ("auto/10", {"AWS_BATCH_JOB_ARRAY_INDEX": "9"}, (10, 10)),
])
def test_parse_shard(value: str, environ: dict[str, str], expected: tuple[int, int]) -> None:
    assert parse_shard(value, environ) == expected


@pytest.mark.parametrize("value,environ,message", [
    ("0/3", {}, "between 1 and 3"), ("4/3", {}, "between 1 and 3"), ("1/0", {}, "expected K/N"),
    ("a/b", {}, "expected K/N"), ("auto/3", {}, "neither is set"),
    ("auto/3", {"JOB_COMPLETION_INDEX": "3"}, "between 1 and 3"),
])
def test_bad_shards(value: str, environ: dict[str, str], message: str) -> None:
    with pytest.raises(UsageError, match=message):
        parse_shard(value, environ)


async def sharded_instance(db: MastodonDb, s3: S3Server) -> tuple[instance.Instance, str]:
    inst = instance.build(db.shape, video_size=100_000)
    instance.add_bulk(inst, media=90, accounts=20, emojis=10, cards=10)
    src = new_bucket(s3, "src")
    await instance.seed(inst, db, s3, src)
    return inst, src


def start(config: Path, *args: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MASTOSYNC_")}
    return subprocess.Popen([sys.executable, "-m", "mastosync", *args, "--config", str(config)], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def stored_for_shard(stored: dict[str, int], k: int, n: int) -> int:
    """Objects written for records of shard K/N: the record id is the key's id partition."""
    ids = [int("".join(m.group(1).split("/"))) for m in map(PARTITION.search, stored) if m]
    return sum(1 for i in ids if i % n == k - 1)


async def test_three_shards_at_once_copy_everything_once(tmp_path: Path, mastodon_db: MastodonDb,
                                                         rclone: S3Server) -> None:
    inst, src = await sharded_instance(mastodon_db, rclone)
    dst = new_bucket(rclone, "dst")
    proxy = FaultProxy(rclone.port).start()
    try:
        proxy.set_faults(latency=0.01)
        config = write_config(tmp_path / "config.toml", db=mastodon_db, source=(rclone, src),
                              destination=(rclone, dst), destination_endpoint=proxy.endpoint,
                              extra={"sync": {"concurrency": 4}})
        # Shard 2 is interrupted and resumed alone; 1 and 3 run to the end meanwhile.
        procs = {k: start(config, "run", "--all", "--shard", f"{k}/3") for k in (1, 2, 3)}
        # Interrupt shard 2 only once it has itself saved progress (others copying says nothing of it).
        deadline = time.monotonic() + 60
        while stored_for_shard(dict(proxy.counters.stored), 2, 3) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        procs[2].send_signal(signal.SIGINT)
        outs = {k: p.communicate(timeout=180) for k, p in procs.items()}
        assert procs[2].returncode == 130, outs[2]
        assert procs[1].returncode == 0 and procs[3].returncode == 0, (outs[1], outs[3])
        refused = run_cli("run", "--all", "--shard", "1/2", config=config)  # another split, mid-migration
        assert refused.returncode == 2 and "split" in refused.stderr
        assert len(refused.stderr.strip().splitlines()) == 1
        status = run_cli("status", config=config)
        assert status.returncode == 1 and "shard 2/3" in status.stdout and "unfinished" in status.stdout
        resumed = run_cli("run", "--all", "--shard", "2/3", config=config)
        assert resumed.returncode == 0 and "resuming" in resumed.stdout, resumed.stdout + resumed.stderr
        stored = dict(proxy.counters.stored)
        for k in (1, 2, 3):
            assert run_cli("verify", "--all", "--shard", f"{k}/3", config=config).returncode == 0
        whole = run_cli("verify", "--all", config=config)
        assert whole.returncode == 0 and "Cut-over to" in whole.stdout
    finally:
        proxy.stop()
    expected = inst.expected(present=True)
    assert rclone.keys(dst) == set(expected)  # the union is the whole migration …
    assert all(n == 1 for n in stored.values()), {k: n for k, n in stored.items() if n > 1}  # … each key once
    reports = sorted((tmp_path / "state").glob("report-run-shard-*"))
    assert {p.name.split("-shard-")[1][:3] for p in reports} == {"1of", "2of", "3of"}
    status = run_cli("status", config=config)
    assert status.returncode == 0 and "shards of 3: 3 with saved progress" in status.stdout, status.stdout


async def test_shards_are_disjoint_and_balanced(tmp_path: Path, mastodon_db: MastodonDb) -> None:
    import random

    inst = instance.build(mastodon_db.shape)
    for table, rows in inst.rows.items():
        await mastodon_db.insert(table, rows)
    # Mastodon's snowflake ids: milliseconds << 16, and 16 low bits from a hash (not a counter).
    rng = random.Random(5)
    await mastodon_db.insert("media_attachments", [
        {"id": ((1_700_000_000_000 + n * 997) << 16) | rng.getrandbits(16), "file_file_name": f"{n}.mp3",
         "file_content_type": "audio/mpeg"} for n in range(400)])
    config = write_config(tmp_path / "c.toml", db=mastodon_db,
                          extra={"source": {"bucket": "old"}, "destination": {"bucket": "new"}})
    shares = []
    for k in (1, 2, 3, 4):
        result = run_cli("dry-run", "--json", "--shard", f"{k}/4", config=config)
        assert result.returncode == 0, result.stderr
        shares.append({json.loads(line)["source_key"] for line in result.stdout.splitlines()})
    whole = run_cli("dry-run", "--json", config=config)
    everything = {json.loads(line)["source_key"] for line in whole.stdout.splitlines()}
    assert set().union(*shares) == everything
    assert sum(len(s) for s in shares) == len(everything)  # pairwise disjoint
    assert min(len(s) for s in shares) > 0.6 * len(everything) / 4  # snowflake ids mod N: balanced


async def test_dry_run_formats_for_other_engines(tmp_path: Path, mastodon_db: MastodonDb) -> None:
    inst = instance.build(mastodon_db.shape)
    for table, rows in inst.rows.items():
        await mastodon_db.insert(table, rows)
    config = write_config(tmp_path / "c.toml", db=mastodon_db,
                          extra={"source": {"bucket": "old-bucket"}, "destination": {"bucket": "new"}})
    keys = run_cli("dry-run", "--format", "rclone", config=config)
    assert keys.returncode == 0 and set(keys.stdout.splitlines()) == set(inst.computed())
    csv = run_cli("dry-run", "--format", "s3-batch-csv", config=config)
    lines = csv.stdout.splitlines()
    assert all(line.startswith("old-bucket,") for line in lines) and len(lines) == len(inst.objects)
    odd = ("media_attachments/files/000/000/002/original/"
           "My%20holiday%20%281%29%20%2B%C3%A9t%C3%A9%40home%20%27best%27.jpg")
    assert f"old-bucket,{odd}" in lines  # keys URL-encoded, as S3 Batch Operations manifests want


async def test_the_lock_is_per_shard(tmp_path: Path, mastodon_db: MastodonDb, moto: S3Server) -> None:
    src, dst = new_bucket(moto, "src"), new_bucket(moto, "dst")
    config = write_config(tmp_path / "c.toml", db=mastodon_db, source=(moto, src), destination=(moto, dst))
    with RunLock(str(tmp_path / "state"), "run-shard-1of2.lock"):  # shard 1/2 is running
        busy = run_cli("run", "--shard", "1/2", config=config)
        other = run_cli("run", "--shard", "2/2", config=config)
    assert busy.returncode == 2 and f"PID {os.getpid()}" in busy.stderr
    assert other.returncode == 0, other.stderr
