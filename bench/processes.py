"""`run --processes 2` against one process, where the client's CPU is the limit.

    .venv/bin/python bench/processes.py [--objects 2000] [--rounds 2] [--latency 0.025]

The latency-bound case of bench/compare.py: small files (2-20 KB) through proxies adding
LATENCY to every request, concurrency 64 in total, on two `rclone serve s3` servers. Each
round copies the set afresh with --processes 1 and --processes 2 (who goes first alternates)
and prints objects/s, the ratio, and each run's peak RSS per process (VmHWM, read from
/proc while it runs). Prints figures only.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.compare import Bench, make_instance, seed_db, write_objects  # noqa: E402
from tests.conftest import to_toml  # noqa: E402
from tests.services.latencyproxy import LatencyProxy  # noqa: E402


def peak_rss_mb(pids: set[int]) -> dict[int, float]:
    found = {}
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    found[pid] = int(line.split()[1]) / 1024
        except OSError:
            pass
    return found


def mastosync_pids() -> set[int]:
    out = subprocess.run(["pgrep", "-f", "mastosync run"], capture_output=True, text=True).stdout
    return {int(p) for p in out.split()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--latency", type=float, default=0.025)
    args = parser.parse_args()
    args.concurrency, args.pairs, args.baseline = 64, 1, None
    bench = Bench(args)
    src_proxy, dst_proxy = LatencyProxy(bench.src.port).start(), LatencyProxy(bench.dst.port).start()
    try:
        src_proxy.latency = dst_proxy.latency = args.latency
        rows, objects = make_instance(args.objects, seed=9, small_only=True)
        bench.src.create_bucket("small")
        write_objects(bench.src, "small", objects)
        db = asyncio.run(seed_db(bench.pg, rows))
        print(f"load average {os.getloadavg()[0]:.2f}; {len(objects)} objects, +{args.latency * 1000:.0f} ms per "
              "request, concurrency 64 in total")
        rates: dict[int, list[float]] = {1: [], 2: []}
        for round_ in range(args.rounds):
            for n in ((1, 2) if round_ % 2 == 0 else (2, 1)):
                dst = bench.fresh_bucket()
                config = bench.tmp / f"p-{dst}.toml"
                config.write_text(to_toml({
                    "database": {"host": bench.pg.host, "port": bench.pg.port, "name": db.name, "user": db.user,
                                 "password": db.password},
                    "source": {"endpoint": src_proxy.endpoint, "bucket": "small",
                               "access_key_id": bench.src.access_key, "secret_access_key": bench.src.secret_key},
                    "destination": {"endpoint": dst_proxy.endpoint, "bucket": dst, "acl": "",
                                    "access_key_id": bench.dst.access_key,
                                    "secret_access_key": bench.dst.secret_key},
                    "sync": {"concurrency": 64, "state_dir": str(bench.tmp / "state" / dst)}}))
                started = time.monotonic()
                proc = subprocess.Popen([sys.executable, "-m", "mastosync", "run", "--all", "--config", str(config),
                                         "--processes", str(n)], stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL, cwd=ROOT)
                peaks: dict[int, float] = {}
                while proc.poll() is None:
                    peaks.update(peak_rss_mb(mastosync_pids()))
                    time.sleep(0.2)
                wall = time.monotonic() - started
                if proc.returncode != 0:
                    raise SystemExit(f"--processes {n} exited {proc.returncode}")
                bench.drop_bucket(dst)
                rates[n].append(len(objects) / wall)
                print(f"--processes {n}: {len(objects) / wall:6.0f} obj/s ({wall:.2f}s); peak RSS per process "
                      f"{max(peaks.values(), default=0):.0f} MB")
        one, two = statistics.median(rates[1]), statistics.median(rates[2])
        print(f"--processes 2 / --processes 1 (medians): {two / one:.2f}x")
    finally:
        src_proxy.stop()
        dst_proxy.stop()
        bench.stop()


if __name__ == "__main__":
    main()
