"""--bwlimit held over a minute, and a change of timetable slot taking effect.

    .venv/bin/python bench/bwlimit.py [--limit 4M] [--seconds 60]

Starts two `rclone serve s3` servers and a throwaway PostgreSQL (bench/compare.py's), a
synthetic instance larger than the limit moves in the time given, then:
  1. `mastosync run --bwlimit LIMIT` for SECONDS (stopped with SIGTERM): the bytes that arrived
     at the destination, sampled every 0.5 s from its folder, give the throughput, printed
     beside the limit (target: within ±10%);
  2. a timetable whose next slot starts in 20 s ("HH:MM,1M HH:MM+1,8M" by local time, the
     second minute-aligned): how long after the slot's start the throughput follows it.
Prints figures only.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.compare import Bench, make_instance, seed_db, write_objects  # noqa: E402
from mastosync.storage.limits import parse_rate  # noqa: E402
from tests.conftest import MastodonDb, to_toml  # noqa: E402

MiB = 2**20


def folder_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def run_for(bench: Bench, db: MastodonDb, src: str, dst: str, bwlimit: str, seconds: float) -> list[tuple[float, int]]:
    """Run mastosync under `bwlimit` for `seconds`; (time, bytes at the destination) every 0.5 s."""
    config = bench.tmp / f"bw-{dst}.toml"
    config.write_text(to_toml({
        "database": {"host": bench.pg.host, "port": bench.pg.port, "name": db.name, "user": db.user,
                     "password": db.password},
        "source": {"endpoint": bench.src.endpoint, "bucket": src, "access_key_id": bench.src.access_key,
                   "secret_access_key": bench.src.secret_key},
        "destination": {"endpoint": bench.dst.endpoint, "bucket": dst, "acl": "",
                        "access_key_id": bench.dst.access_key, "secret_access_key": bench.dst.secret_key},
        "sync": {"concurrency": 16, "state_dir": str(bench.tmp / "state" / dst)},
    }))
    proc = subprocess.Popen([sys.executable, "-m", "mastosync", "run", "--all", "--config", str(config),
                             "--bwlimit", bwlimit], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT)
    folder = bench.dst.root / "data" / dst
    samples = []
    started = time.monotonic()
    while time.monotonic() - started < seconds and proc.poll() is None:
        samples.append((time.monotonic() - started, folder_bytes(folder)))
        time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=60)
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", default="4M")
    parser.add_argument("--seconds", type=float, default=60.0)
    args = parser.parse_args()
    rate = parse_rate(args.limit) or 0.0
    args.objects, args.concurrency, args.pairs, args.baseline = 0, 16, 1, None
    bench = Bench(args)
    try:
        count = int(rate * args.seconds * 1.5 / 110_000) * 2 + 200  # more than the limit lets through
        rows, objects = make_instance(count, seed=5)
        bench.src.create_bucket("src")
        write_objects(bench.src, "src", objects)
        db = asyncio.run(seed_db(bench.pg, rows))
        print(f"load average {os.getloadavg()[0]:.2f}; {len(objects)} objects, {sum(objects.values()) / MiB:.0f} MiB")

        samples = run_for(bench, db, "src", bench.fresh_bucket(), args.limit, args.seconds)
        # From the first bytes on (the start-up is not the limit's business).
        first = next(i for i, (_, b) in enumerate(samples) if b > 0)
        (t0, b0), (t1, b1) = samples[first], samples[-1]
        measured = (b1 - b0) / (t1 - t0)
        print(f"--bwlimit {args.limit}: {measured / MiB:.2f} MiB/s over {t1 - t0:.0f} s "
              f"({(measured / rate - 1) * 100:+.1f}% of the limit)")

        start = (datetime.now() + timedelta(minutes=1)).replace(second=0, microsecond=0)
        if (start - datetime.now()).total_seconds() < 20:
            start += timedelta(minutes=1)
        before = (start - timedelta(minutes=1)).strftime("%H:%M")
        table = f"{before},1M {start:%H:%M},8M"
        wait = (start - datetime.now()).total_seconds()
        samples = run_for(bench, db, "src", bench.fresh_bucket(), table, wait + 15)
        switch = wait  # seconds from the run's start to the slot (the run starts at once)
        pairs = zip(samples, samples[2:], strict=False)
        rates = [((t0 + t1) / 2, (b1 - b0) / (t1 - t0)) for (t0, b0), (t1, b1) in pairs]
        followed = next((t for t, r in rates if t > switch and r > 4 * MiB), None)
        print(f"timetable {table!r}: slot at +{switch:.1f} s; throughput above 4 MiB/s from +"
              + (f"{followed:.1f} s ({followed - switch:.1f} s after the slot began)" if followed else "never"))
    finally:
        bench.stop()


if __name__ == "__main__":
    main()
