"""Throughput under faults: errors, scattered throttling, a throttling storm, an outage.

    .venv/bin/python bench/faults.py [--objects 1600] [--baseline DIR]

Two `rclone serve s3` servers, each behind the fault-injecting proxy (tests/services/
faultproxy.py), a throwaway PostgreSQL, the instance of bench/compare.py with small files
only. Each case is a fresh `mastosync run --all` (concurrency 32) onto a fresh bucket:

- clean: no faults;
- errors: 3% 500, 2% resets, 1% truncated bodies, on both sides;
- slowdown 2%: 2% of requests answered 503 SlowDown at random, on both sides;
- slowdown 10% + errors: 10% SlowDown, 3% 500, 2% resets, 1% truncated bodies;
- storm: the destination answers 90% SlowDown for 20 s from the 3rd second (4x objects);
  rates (PUTs answered 200 per second) before, during, and in the 10 s after;
- outage: every request to the destination reset from the 3rd second on, sync.timeout 60;
  how long after the outage the run ends.

Prints wall times and ratios to the clean run. With --baseline DIR, the same cases for
another checkout of mastosync. Prints figures only.
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.compare import Bench, make_instance, seed_db, write_objects  # noqa: E402
from tests.conftest import MastodonDb, to_toml  # noqa: E402
from tests.services.faultproxy import FaultProxy  # noqa: E402

ERRORS = {"internal": 0.03, "reset": 0.02, "truncate": 0.01}


class FaultBench(Bench):
    def __init__(self, args: argparse.Namespace) -> None:
        super().__init__(args)
        self.src_proxy = FaultProxy(self.src.port, seed=11).start()
        self.dst_proxy = FaultProxy(self.dst.port, seed=12).start()

    def stop(self) -> None:
        self.src_proxy.stop()
        self.dst_proxy.stop()
        super().stop()

    def run(self, db, bucket: str, root: Path, timeout: float = 60) -> tuple[float, int]:  # type: ignore[no-untyped-def]
        dst = self.fresh_bucket()
        config = self.tmp / f"f-{dst}.toml"
        config.write_text(to_toml({
            "database": {"host": self.pg.host, "port": self.pg.port, "name": db.name, "user": db.user,
                         "password": db.password},
            "source": {"endpoint": self.src_proxy.endpoint, "bucket": bucket,
                       "access_key_id": self.src.access_key, "secret_access_key": self.src.secret_key},
            "destination": {"endpoint": self.dst_proxy.endpoint, "bucket": dst, "acl": "",
                            "access_key_id": self.dst.access_key, "secret_access_key": self.dst.secret_key},
            "sync": {"concurrency": 32, "state_dir": str(self.tmp / "state" / dst), "timeout": timeout},
        }))
        started = time.monotonic()
        proc = subprocess.run([sys.executable, "-m", "mastosync", "run", "--all", "--config", str(config)],
                              cwd=root, capture_output=True, text=True)
        wall = time.monotonic() - started
        self.drop_bucket(dst)
        if "socket.send() raised exception" in proc.stderr:
            print("           (asyncio warnings on stderr)")
        return wall, proc.returncode

    def faults(self, **shares: float) -> None:
        for proxy in (self.src_proxy, self.dst_proxy):
            proxy.set_faults(**shares)
            proxy.reset_counters()


def later(seconds: float, action) -> threading.Timer:  # type: ignore[no-untyped-def]
    timer = threading.Timer(seconds, action)
    timer.start()
    return timer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", type=int, default=1600)
    parser.add_argument("--baseline", type=Path)
    args = parser.parse_args()
    args.concurrency, args.pairs = 32, 1
    bench = FaultBench(args)
    try:
        rows, objects = make_instance(args.objects, seed=9, small_only=True)
        bench.src.create_bucket("small")
        write_objects(bench.src, "small", objects)
        db = asyncio.run(seed_db(bench.pg, rows))
        big_rows, big = make_instance(4 * args.objects, seed=10, small_only=True)
        bench.src.create_bucket("big")
        write_objects(bench.src, "big", big)
        big_db = asyncio.run(seed_db(bench.pg, big_rows))
        print(f"{len(objects)} small objects ({len(big)} for the storm and the outage), concurrency 32")
        for name, root in [("mastosync", ROOT), *([("baseline", args.baseline)] if args.baseline else [])]:
            print(f"\n== {name} ==")
            cases = [("clean", {}), ("errors 6%", ERRORS), ("slowdown 2%", {"slowdown": 0.02}),
                     ("slowdown 10% + errors", {"slowdown": 0.10, **ERRORS})]
            clean = None
            for label, shares in cases:
                bench.faults(**shares)
                wall, code = bench.run(db, "small", root)
                clean = clean or wall
                print(f"{label:<24} {wall:6.2f}s  exit {code}  {len(objects) / wall:6.0f} obj/s  "
                      f"{clean / wall:5.0%} of the clean rate", flush=True)
            storm(bench, big_db, root, len(big))
            outage(bench, big_db, root)
    finally:
        bench.stop()


def storm(bench: FaultBench, db, root: Path, count: int) -> None:  # type: ignore[no-untyped-def]
    bench.faults()
    start = time.monotonic()
    t1 = later(3, lambda: bench.dst_proxy.set_faults(slowdown=0.9))
    t2 = later(23, lambda: bench.dst_proxy.set_faults())
    wall, code = bench.run(db, "big", root)
    t1.cancel()
    t2.cancel()
    puts = [t - start for t, op, status in bench.dst_proxy.counters.timeline if op == "PutObject" and status == 200]

    def rate(a: float, b: float) -> float:
        return sum(1 for t in puts if a <= t < b) / (b - a)

    before, during, after = rate(1, 3), rate(5, 23), rate(23, min(33, wall))
    print(f"{'storm 90% for 20 s':<24} {wall:6.2f}s  exit {code}  PUTs/s before {before:.0f}, during {during:.0f}, "
          f"in the 10 s after {after:.0f} ({after / before:.0%} of before)"
          + (f"; seconds 23-28: {rate(23, 28):.0f}, 28-33: {rate(28, 33):.0f}" if wall > 28 else ""), flush=True)


def outage(bench: FaultBench, db: MastodonDb, root: Path) -> None:
    bench.faults()
    down_at: list[float] = []

    def go_down() -> None:
        bench.dst_proxy.set_faults(reset=1.0)
        down_at.append(time.monotonic())

    timer = later(3, go_down)
    wall, code = bench.run(db, "big", root, timeout=60)
    timer.cancel()
    ended = (time.monotonic() - down_at[0]) if down_at else float("nan")
    print(f"{'outage (resets), timeout 60':<24} {wall:6.2f}s  exit {code}  ended {ended:.1f}s after the outage "
          f"began (target: timeout + 30 = 90 s)", flush=True)


if __name__ == "__main__":
    main()
