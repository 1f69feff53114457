"""Whatever goes wrong, nothing is lost, nothing is corrupted, nothing is leaked, and the user is told.

Each scenario runs the real CLI against real servers, with the fault-injecting proxy in
front of the buckets. Randomness is seeded; objects are small so the suite stays quick.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from mastosync.config.units import MiB
from tests.conftest import DB_PASSWORD, MastodonDb, new_bucket, run_cli, write_config
from tests.reliability.helpers import (
    assert_no_secrets,
    config_behind_proxy,
    fault_proxy,
    start_run,
    summary_row,
    wait_stored,
)
from tests.services import instance
from tests.services.faultproxy import FaultProxy
from tests.services.s3 import SECRET_KEY, S3Server

SECRETS = [DB_PASSWORD, SECRET_KEY]
FAST_SYNC = {"multipart_threshold": "5MiB", "part_size": "5MiB", "concurrency": 8, "progress_interval": 1}


async def seeded(db: MastodonDb, s3: S3Server, media: int = 60,
                 video: int = 6 * MiB) -> tuple[instance.Instance, str]:
    inst = instance.build(db.shape, video_size=video)
    instance.add_bulk(inst, media=media, accounts=10)
    src = new_bucket(s3, "src")
    await instance.seed(inst, db, s3, src)
    return inst, src


def assert_exact(s3: S3Server, bucket: str, inst: instance.Instance) -> None:
    expected = inst.expected(present=True)
    assert s3.keys(bucket) == set(expected)
    for key, obj in expected.items():
        assert s3.get(bucket, key)[0] == obj.data, key
    assert s3.open_uploads(bucket) == []


async def test_faults_on_both_sides(tmp_path: Path, mastodon_db: MastodonDb, s3: S3Server) -> None:
    inst, src = await seeded(mastodon_db, s3)
    dst = new_bucket(s3, "dst")
    source_proxy, destination_proxy = FaultProxy(s3.port, seed=11).start(), FaultProxy(s3.port, seed=12).start()
    faults = dict(slowdown=0.10, internal=0.03, reset=0.02, truncate=0.01, latency=0.05, latency_share=0.3)
    source_proxy.set_faults(**faults)
    destination_proxy.set_faults(**faults)
    try:
        config = write_config(tmp_path / "config.toml", db=mastodon_db, source=(s3, src), destination=(s3, dst),
                              source_endpoint=source_proxy.endpoint,
                              destination_endpoint=destination_proxy.endpoint,
                              extra={"sync": {**FAST_SYNC, "retries": 12}})
        started = time.monotonic()
        result = run_cli("run", "--all", config=config)
        elapsed = time.monotonic() - started
    finally:
        source_proxy.stop()
        destination_proxy.stop()
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr
    injected = source_proxy.counters.faults + destination_proxy.counters.faults
    retries = int(summary_row(result.stdout)["retries"])
    print(f"\nfaults on both sides ({s3.kind}): {len(inst.expected())} objects, injected {dict(injected)}, "
          f"{retries} retries, {elapsed:.1f}s")
    assert injected["slowdown"] > 0 and injected["reset"] > 0 and retries > 0
    assert_exact(s3, dst, inst)
    assert_no_secrets(SECRETS, result.stdout, result.stderr, state_dir=tmp_path / "state")


@pytest.mark.parametrize("outage", ["refused", "reset"])
async def test_destination_down_then_back(tmp_path: Path, mastodon_db: MastodonDb, rclone: S3Server,
                                          outage: str) -> None:
    """Down for good: connections refused, or every request reset (the worse case: each
    request connects, then fails). The run stops once nothing but failures has come back
    for sync.timeout, without asyncio's warnings; the next run completes."""
    inst, src = await seeded(mastodon_db, rclone, media=80)
    dst = new_bucket(rclone, "dst")
    with fault_proxy(rclone, latency=0.02) as proxy:
        config = config_behind_proxy(tmp_path, mastodon_db, rclone, src, dst, proxy,
                                     **{**FAST_SYNC, "timeout": 3, "concurrency": 4})
        proc = start_run(config)
        wait_stored(proxy, 30, proc)
        if outage == "refused":
            proxy.set_down(True)
        else:
            proxy.set_faults(reset=1.0)
        down_at = time.monotonic()
        out, err = proc.communicate(timeout=120)
        ended_after = time.monotonic() - down_at
        assert proc.returncode == 1, err
        failed = int(summary_row(out)["failed"])
        copied = int(summary_row(out)["copied"])
        print(f"\ndestination down ({outage}): ended {ended_after:.1f}s after the outage, {copied} copied, "
              f"{failed} failed")
        assert ended_after < 3 + 30, "the run did not end within timeout + 30 s"
        assert failed >= 1 and copied < len(inst.objects)
        lines = err.strip().splitlines()
        assert len(lines) == 1 and "nothing but failures" in lines[0] and "stopped" in lines[0], err
        assert "socket.send() raised exception" not in err
        # nothing half-written: whatever reached the destination is whole
        for key in rclone.keys(dst):
            assert rclone.get(dst, key)[0] == inst.expected()[key].data
        # An upload cut by the outage could not be aborted (nothing answers): the next run does it.
        open_during_outage = len(rclone.open_uploads(dst))

        proxy.set_down(False)
        proxy.set_faults()
        again = run_cli("run", config=config)
        assert again.returncode == 0, again.stderr
        assert_exact(rclone, dst, inst)  # includes: no multipart upload left open
        if open_during_outage:
            assert "aborted" in again.stdout
        assert_no_secrets(SECRETS, out, err, again.stdout, again.stderr, state_dir=tmp_path / "state")


async def test_throttling_storm_slows_down_then_completes(tmp_path: Path, mastodon_db: MastodonDb,
                                                          rclone: S3Server) -> None:
    inst, src = await seeded(mastodon_db, rclone, media=180, video=1000)
    dst = new_bucket(rclone, "dst")
    with fault_proxy(rclone, seed=5, latency=0.01) as proxy:
        config = config_behind_proxy(tmp_path, mastodon_db, rclone, src, dst, proxy,
                                     **{**FAST_SYNC, "concurrency": 16})
        proc = start_run(config)
        wait_stored(proxy, 40, proc)
        calm_start = time.monotonic()
        time.sleep(1.5)
        storm_start = time.monotonic()
        proxy.set_faults(slowdown=0.9, latency=0.01)
        time.sleep(4.0)
        storm_end = time.monotonic()
        proxy.set_faults(latency=0.01)
        out, err = proc.communicate(timeout=180)
        assert proc.returncode == 0, err

        def in_flight(start: float, end: float) -> float:
            """Mean requests in flight: what the pacing decides, however fast the machine is."""
            samples = [n for t, n in proxy.counters.in_flight if start <= t < end]
            return sum(samples) / max(1, len(samples))

        before = in_flight(calm_start, storm_start)
        during = in_flight(storm_start + 1.0, storm_end)  # after the first second of the storm
        print(f"\nthrottling storm: {before:.1f} requests in flight before, {during:.1f} during; "
              f"retries {summary_row(out)['retries']}")
        assert during < before / 2, (before, during)
        assert_exact(rclone, dst, inst)


async def test_postgres_restart_mid_run(tmp_path: Path, mastodon_db: MastodonDb, rclone: S3Server) -> None:
    inst, src = await seeded(mastodon_db, rclone, media=120, video=1000)
    dst = new_bucket(rclone, "dst")
    with fault_proxy(rclone, latency=0.01) as proxy:
        config = config_behind_proxy(tmp_path, mastodon_db, rclone, src, dst, proxy,
                                     **{**FAST_SYNC, "db_batch": 20, "concurrency": 4})
        proc = start_run(config)
        wait_stored(proxy, 60, proc)
        mastodon_db.server.restart()
        out, err = proc.communicate(timeout=180)
        assert proc.returncode == 0, err
        assert "reconnecting" in err
        assert all(n == 1 for n in proxy.counters.stored.values())  # nothing copied twice
        assert_exact(rclone, dst, inst)


async def test_weird_but_valid_data(tmp_path: Path, mastodon_db: MastodonDb, rclone: S3Server) -> None:
    hostile = "$(touch pwned);`id`|&<>*?!#.png"
    rows = [
        {"id": 1, "file_file_name": "zero.mp3", "file_content_type": "audio/mpeg"},
        {"id": 2, "file_file_name": hostile, "file_content_type": "image/png"},
        {"id": 3, "file_file_name": "Ünï cødé + @ 'q'.mp3", "file_content_type": "audio/mpeg"},
        {"id": 4, "file_file_name": "huge.mp4", "file_content_type": "video/mp4"},
    ]
    await mastodon_db.insert("media_attachments", rows)
    base = "media_attachments/files/000/000"
    objects = {
        f"{base}/001/original/zero.mp3": b"",
        f"{base}/002/original/{hostile}": b"\x89PNG" + b"x" * 500,
        f"{base}/002/small/{hostile}": b"\x89PNG" + b"y" * 100,
        f"{base}/003/original/Ünï cødé + @ 'q'.mp3": b"ID3" + b"z" * 300,
        f"{base}/004/original/huge.mp4": instance.body("huge", 99 * 1000 * 1000, "video/mp4"),
        f"{base}/004/small/huge.png": b"\x89PNG" + b"s" * 100,
    }
    src, dst = new_bucket(rclone, "src"), new_bucket(rclone, "dst")
    for key, data in objects.items():
        rclone.put(src, key, data, "application/octet-stream")
    config = write_config(tmp_path / "config.toml", db=mastodon_db, source=(rclone, src),
                          destination=(rclone, dst),
                          destination_endpoint=rclone.endpoint.replace("127.0.0.1", "localhost"),
                          extra={"destination": {"acl": ""}})
    result = run_cli("run", config=config, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert not (tmp_path / "pwned").exists()
    assert rclone.keys(dst) == set(objects)
    for key, data in objects.items():
        assert rclone.get(dst, key)[0] == data, key
    assert rclone.open_uploads(dst) == []


BAD_INPUT = [
    ("malformed TOML", "[source\n", [], "not valid TOML"),
    ("unknown key", "[sync]\nturbo = true\n", [], "sync.turbo: unknown key"),
    ("wrong type", "[sync]\nretries = \"many\"\n", [], "sync.retries: expected an integer"),
    ("concurrency 0", "[sync]\nconcurrency = 0\n", [], "sync.concurrency"),
    ("concurrency 100000", "[sync]\nconcurrency = 100000\n", [], "sync.concurrency"),
    ("--concurrency 100000", "", ["--concurrency", "100000"], "--concurrency"),
    ("part_size below 5 MiB", "[sync]\npart_size = \"4MiB\"\n", [], "sync.part_size"),
    ("unknown --type", "", ["--type", "statuses"], "statuses"),
    ("--since not a date", "", ["--since", "last tuesday"], "ISO-8601"),
]


@pytest.mark.parametrize("text,args,message", [c[1:] for c in BAD_INPUT], ids=[c[0] for c in BAD_INPUT])
def test_bad_input_is_one_clear_line(tmp_path: Path, text: str, args: list[str], message: str) -> None:
    config = tmp_path / "config.toml"
    base = ('[database]\npassword = "db-secret-zz9"\n[source]\nbucket = "a"\nsecret_access_key = "s3-secret-zz9"\n'
            '[destination]\nbucket = "b"\n')
    config.write_text(text if text.startswith("[source\n") else base + text)
    result = run_cli("run", *args, config=config)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert len([line for line in result.stderr.splitlines() if line.strip()]) <= 3  # click adds usage lines
    assert_no_secrets(["db-secret-zz9", "s3-secret-zz9"], result.stdout, result.stderr)


# -- stopping, locking, refusing what cannot be right --------------------------------------


@pytest.mark.parametrize("signum,code", [(15, 143)])  # SIGINT: test_a_second_ctrl_c_stops_at_once
async def test_stop_takes_only_as_long_as_copies_in_flight(tmp_path: Path, mastodon_db: MastodonDb,
                                                           rclone: S3Server, signum: int, code: int) -> None:
    """With only small objects in flight, a stop ends when they are done, not at the end of the
    grace period (which it always took before: the wait included the second-signal task). The
    grace period is set far beyond the test's own timeout, so waiting it out fails the test."""
    import signal as signals

    inst, src = await seeded(mastodon_db, rclone, media=70, video=1000)
    dst = new_bucket(rclone, "dst")
    with fault_proxy(rclone, latency=0.02) as proxy:
        config = config_behind_proxy(tmp_path, mastodon_db, rclone, src, dst, proxy,
                                     **{**FAST_SYNC, "grace_period": 600})
        proc = start_run(config)
        wait_stored(proxy, 20, proc)
        proc.send_signal(signum)
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == code, err
        assert signals.Signals(signum).name in out and "at most 600s" in out
        again = run_cli("run", config=config)
        assert again.returncode == 0 and "resuming" in again.stdout, again.stdout + again.stderr
    assert_exact(rclone, dst, inst)


async def test_a_second_ctrl_c_stops_at_once(tmp_path: Path, mastodon_db: MastodonDb, rclone: S3Server) -> None:
    """The first Ctrl-C lets the large copy in flight go on (the grace period); the second ends
    the run at once, its upload aborted, and the next run resumes and completes."""
    import signal as signals

    inst, src = await seeded(mastodon_db, rclone, media=10, video=25 * MiB)
    dst = new_bucket(rclone, "dst")
    with fault_proxy(rclone, latency=0.4) as proxy:  # 5 parts of 5 MiB: 2 s for the video
        config = config_behind_proxy(tmp_path, mastodon_db, rclone, src, dst, proxy,
                                     **{**FAST_SYNC, "grace_period": 600})
        proc = start_run(config)
        deadline = time.monotonic() + 60
        while proxy.count("UploadPart") == 0 and time.monotonic() < deadline:
            time.sleep(0.02)
        proc.send_signal(signals.SIGINT)
        time.sleep(0.5)
        assert proc.poll() is None, "the first Ctrl-C did not wait for the copy in flight"
        proc.send_signal(signals.SIGINT)
        out, err = proc.communicate(timeout=30)
        assert proc.returncode == 130, err
        assert "press Ctrl-C again to stop at once" in out
        assert rclone.open_uploads(dst) == []  # the cancelled upload was aborted on the way out
        proxy.set_faults(latency=0.0)
        again = run_cli("run", config=config)
        assert again.returncode == 0 and "resuming" in again.stdout, again.stdout + again.stderr
    assert_exact(rclone, dst, inst)


async def test_one_run_per_state_directory(tmp_path: Path, mastodon_db: MastodonDb, rclone: S3Server) -> None:
    """Overlapping cron jobs: the second run refuses in one line naming the first's PID."""
    inst, src = await seeded(mastodon_db, rclone, media=50, video=1000)
    dst = new_bucket(rclone, "dst")
    with fault_proxy(rclone, latency=0.05) as proxy:
        config = config_behind_proxy(tmp_path, mastodon_db, rclone, src, dst, proxy, **FAST_SYNC)
        first = start_run(config)
        wait_stored(proxy, 5, first)
        second = run_cli("run", config=config)
        out, err = first.communicate(timeout=120)
        assert second.returncode == 2
        lines = second.stderr.strip().splitlines()
        assert len(lines) == 1 and f"PID {first.pid}" in lines[0] and "state directory" in lines[0], second.stderr
        assert first.returncode == 0, err
        assert all(n == 1 for n in proxy.counters.stored.values())  # nothing copied twice
        assert run_cli("run", config=config).returncode == 0  # the lock went with the first run
    assert_exact(rclone, dst, inst)


@pytest.mark.parametrize("destination,refused", [
    ({}, True),  # same endpoint, bucket and prefix
    ({"endpoint": "HTTP://127.0.0.1:{port}/"}, True),  # the same endpoint, spelt differently
    ({"key_prefix": "copy"}, False),  # another prefix in the same bucket: a different place
])
def test_source_and_destination_the_same_place(tmp_path: Path, moto: S3Server, destination: dict[str, str],
                                               refused: bool) -> None:
    bucket = new_bucket(moto, "same")
    extra: dict[str, dict[str, Any]] = {"destination": {k: v.format(port=moto.port) for k, v in destination.items()},
             "database": {"port": 1}}
    config = write_config(tmp_path / "c.toml", source=(moto, bucket), destination=(moto, bucket), extra=extra)
    result = run_cli("run", config=config, timeout=60)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    if refused:
        assert "same bucket and key prefix as the source" in lines[0], lines
    else:  # accepted: it goes on to the database, which is not there
        assert "database" in lines[0] and "same bucket" not in lines[0], lines
