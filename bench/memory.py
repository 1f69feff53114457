"""Peak RSS of `mastosync run` from a cold process, with the S3 servers' files on disk.

    .venv/bin/python bench/memory.py [--objects 3000] [--concurrency 64 256] [--baseline DIR]

Two `rclone serve s3` servers on directories on disk (not /dev/shm: a source that is slow
to read keeps GETs waiting, which is where memory used to pile up), a throwaway
PostgreSQL, the instance of bench/compare.py (originals log-normal around 100 KB, 1% videos
of 5-40 MB, each with a small style). For each concurrency, a run onto a fresh bucket;
prints wall time and peak RSS (VmHWM, read while it runs) of the mastosync process, and of the
--baseline checkout's when given. Prints figures only.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.compare import Bench, make_instance, seed_db, write_objects  # noqa: E402
from tests.services.s3 import RcloneServer  # noqa: E402


class DiskBench(Bench):
    """compare.py's bench, with both servers' files on disk."""

    def __init__(self, args: argparse.Namespace) -> None:
        super().__init__(args)
        for server in (self.src, self.dst):
            server.stop()
        disk = Path(tempfile.mkdtemp(prefix="mastosync-disk-", dir="/var/tmp"))
        self.disk = disk
        self.src = RcloneServer(parent=disk).start()
        self.dst = RcloneServer(parent=disk).start()

    def stop(self) -> None:
        super().stop()
        shutil.rmtree(self.disk, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[64, 256])
    parser.add_argument("--baseline", type=Path)
    args = parser.parse_args()
    bench = DiskBench(args)
    try:
        rows, objects = make_instance(args.objects)
        bench.src.create_bucket("src")
        write_objects(bench.src, "src", objects)
        db = asyncio.run(seed_db(bench.pg, rows))
        total = sum(objects.values())
        print(f"{len(objects)} objects, {total / 2**20:.0f} MiB, servers' files on disk")
        roots = [("mastosync", ROOT), *([("baseline", args.baseline)] if args.baseline else [])]
        for concurrency in args.concurrency:
            for name, root in roots:
                dst = bench.fresh_bucket()
                wall, cpu, rss = bench.mastosync(db, "src", dst, concurrency, root=root)
                bench.drop_bucket(dst)
                print(f"{name:<10} concurrency {concurrency:>4}: {wall:6.2f}s, cpu {cpu:5.2f}s, "
                      f"peak RSS {rss:6.1f} MB", flush=True)
    finally:
        bench.stop()


if __name__ == "__main__":
    main()
