"""How fast `mastosync audit` goes over a large bucket (listing only, no --headers).

    .venv/bin/python bench/audit.py [--objects 100000] [--orphans 10000]

The instance of bench/compare.py (media originals and their small style) in `rclone serve
s3` (in memory), written straight into its directory, plus orphans under the same folders
and under cache/; then `mastosync audit` of it, timed. Prints wall time, CPU, peak RSS and
objects per second: the expected objects checked (by key-range listings) and the keys
listed for orphans. Figures only.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from compare import ROOT, Bench, make_instance, seed_db, timed, write_tree  # noqa: E402

from tests.conftest import to_toml  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", type=int, default=100_000)
    parser.add_argument("--orphans", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args()
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(ROOT / "mastosync")], check=True)
    bench = Bench(args)
    try:
        rows, objects = make_instance(args.objects, small_only=True)
        for n in range(args.orphans):
            where = "cache/media_attachments/files" if n % 2 else "media_attachments/files"
            objects[f"{where}/999/{n // 1000:03d}/{n % 1000:03d}/original/o{n}.jpg"] = 100
        bench.dst.create_bucket("audited")
        started = time.monotonic()
        write_tree(bench.dst.root / "data" / "audited", objects)
        db = asyncio.run(seed_db(bench.pg, rows))
        print(f"machine: {os.cpu_count()} cores, load {os.getloadavg()[0]:.2f}; bucket: {len(objects)} keys "
              f"({args.objects} expected, {args.orphans} orphans), written in {time.monotonic() - started:.0f}s")
        config = bench.tmp / "audit.toml"
        config.write_text(to_toml({
            "database": {"host": bench.pg.host, "port": bench.pg.port, "name": db.name, "user": db.user,
                         "password": db.password},
            "source": {"bucket": "unused"},
            "destination": {"endpoint": bench.dst.endpoint, "bucket": "audited", "acl": "",
                            "access_key_id": bench.dst.access_key, "secret_access_key": bench.dst.secret_key},
            "sync": {"concurrency": args.concurrency, "state_dir": str(bench.tmp / "state")},
        }))
        for attempt in (1, 2):
            wall, cpu, rss = timed([sys.executable, "-m", "mastosync", "audit", "--config", str(config)])
            listed = sorted((bench.tmp / "state").glob("orphans-*.jsonl"))[-1]
            orphans = sum(1 for _ in listed.open())
            print(f"run {attempt}: {wall:.1f}s, cpu {cpu:.1f}s, peak RSS {rss:.0f} MB; "
                  f"{args.objects / wall:,.0f} expected objects/s checked, {len(objects) / wall:,.0f} keys/s listed "
                  f"(both passes); {orphans} orphans found")
    finally:
        bench.stop()


if __name__ == "__main__":
    main()
