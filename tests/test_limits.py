"""--bwlimit and --tpslimit: the timetable, the virtual clock, and a real run held to its limit."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime
from pathlib import Path

import pytest

from mastosync.storage.limits import RateLimit, Timetable, parse_rate
from tests.conftest import MastodonDb, new_bucket, run_cli, write_config
from tests.services.faultproxy import FaultProxy
from tests.services.instance import body
from tests.services.s3 import S3Server

MiB = 2**20


@pytest.mark.parametrize("text,rate", [("10M", 10 * MiB), ("512K", 512 * 1024), ("1.5M", 1.5 * MiB), ("off", None),
                                       ("0", None), ("2G", 2 * 1024 * MiB), ("100", 100 * 1024),
                                       ("4MiB", 4 * MiB), ("4M/s", 4 * MiB)])
def test_rates_as_rclone_writes_them(text: str, rate: float | None) -> None:
    assert parse_rate(text) == rate


def test_a_timetable_by_local_time() -> None:
    table = Timetable.parse("08:00,10M 23:00,off")
    assert table.rate_at(datetime(2026, 1, 1, 7, 59)) is None  # yesterday's 23:00 slot, wrapped
    assert table.rate_at(datetime(2026, 1, 1, 8, 0)) == 10 * MiB
    assert table.rate_at(datetime(2026, 1, 1, 22, 59)) == 10 * MiB
    assert table.rate_at(datetime(2026, 1, 1, 23, 30)) is None
    assert Timetable.parse("4M").rate_at(datetime(2026, 1, 1, 3, 0)) == 4 * MiB
    for bad in ("8:00-10M", "25:00,1M", "08:00,fast", "tomorrow"):
        with pytest.raises(ValueError):
            Timetable.parse(bad)


def test_the_virtual_clock_keeps_the_long_run_rate() -> None:
    """1,000 reservations of 100 KiB at 1 MiB/s, on a clock the test moves: never ahead of the rate."""
    now = [0.0]

    async def main() -> None:
        limit = RateLimit(lambda: float(MiB), clock=lambda: now[0])

        async def fake_sleep(seconds: float) -> None:
            now[0] += seconds

        taken = 0
        original = asyncio.sleep
        asyncio.sleep = fake_sleep  # type: ignore[assignment]
        try:
            for _ in range(1000):
                await limit.take(100 * 1024)
                taken += 100 * 1024
                assert taken <= MiB * now[0] + 100 * 1024  # one burst at most ahead
        finally:
            asyncio.sleep = original
        assert abs(taken / now[0] - MiB) / MiB < 0.01

    asyncio.run(main())


async def test_a_change_of_slot_takes_effect_within_a_second() -> None:
    rate: list[float | None] = [10 * 1024.0]  # 10 KiB/s: the second 100 KiB would wait 10 s
    limit = RateLimit(lambda: rate[0])
    await limit.take(100 * 1024)
    waiting = asyncio.create_task(limit.take(100 * 1024))
    await asyncio.sleep(0.3)
    assert not waiting.done()
    rate[0] = None  # the timetable's next slot: off
    await asyncio.wait_for(waiting, timeout=3)  # well before the 10 s the old slot would have made it wait


async def test_a_run_under_bwlimit_reads_no_faster(tmp_path: Path, mastodon_db: MastodonDb, moto: S3Server) -> None:
    """6 objects of 1 MiB under --bwlimit 2M: the source is read at 2 MiB/s at most, so the last
    upload comes at least (6 - 2) MiB / 2 MiB/s after the second (a lower bound: a slow machine
    cannot break it; not from the first, whose upload also waits for the first connections),
    and the limit in force is in the progress lines."""
    src, dst = new_bucket(moto, "src"), new_bucket(moto, "dst")
    rows = []
    for i in range(1, 7):
        key = f"media_attachments/files/000/000/{i:03d}/original/v{i}.mp4"
        moto.put(src, key, body(key, MiB, "video/mp4"), "video/mp4")
        rows.append({"id": i, "file_file_name": f"v{i}.mp4", "file_content_type": "video/mp4"})
    await mastodon_db.insert("media_attachments", rows)
    proxy = FaultProxy(moto.port).start()
    try:
        config = write_config(tmp_path / "config.toml", db=mastodon_db, source=(moto, src), destination=(moto, dst),
                              destination_endpoint=proxy.endpoint, extra={"sync": {"progress_interval": 0.5}})
        started = time.monotonic()
        result = run_cli("run", "--bwlimit", "2M", "--tpslimit", "50", config=config)
        assert result.returncode == 0, result.stderr
        puts = [t for t, op, status in proxy.counters.timeline if op == "PutObject" and status == 200]
        assert len(puts) == 6 and max(puts) - sorted(puts)[1] >= 4 * MiB / (2 * MiB) * 0.95, puts
        assert time.monotonic() - started >= 2.5
        assert "limit 2.0 MiB/s read, 50 requests/s to each bucket" in result.stdout
        bad = run_cli("run", "--bwlimit", "fast", config=config)
        assert bad.returncode == 2 and "--bwlimit" in bad.stderr
    finally:
        proxy.stop()
