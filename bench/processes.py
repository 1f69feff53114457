"""`run --processes 2` against one, where the client's CPU is the limit.

    .venv/bin/python bench/processes.py [--objects 2000] [--rounds 2] [--latency 0.025] [--client-cpu 0.3]

The latency-bound case of bench/compare.py: small files (2-20 KB) through proxies adding
LATENCY to every request, concurrency 64 in total, on two `rclone serve s3` servers. Each
round copies the set afresh with --processes 1 and --processes 2 (who goes first alternates)
and prints objects/s (overall, and from the first GET on), the ratio, each run's largest
peak RSS of one process (VmHWM, read from /proc while it runs) and how busy the machine's
cores were. On this 2-core machine the S3 servers and the relays fill the cores before one
client process does; --client-cpu caps every mastosync process at that share of a core (its
own cgroup), which stands for a client whose CPU is the limit while the providers have
CPU to spare. Prints figures only.
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

from bench.compare import Bench, make_instance, seed_db, vm_hwm_mb, write_objects  # noqa: E402
from tests.conftest import to_toml  # noqa: E402
from tests.services.latencyproxy import LatencyProxy  # noqa: E402


def peak_rss_mb(pids: set[int]) -> dict[int, float]:
    return {pid: peak for pid in pids if (peak := vm_hwm_mb(pid))}


class CpuCap:
    """Each mastosync process in its own cgroup (v1 `cpu` controller) capped at `share` of a core.

    On this machine the S3 servers, the relays and PostgreSQL share the two cores with the
    client, so they fill the machine before the client's CPU is the limit. Capping every
    client process stands for a client whose cores are its limit while the providers have
    CPU to spare: one process gets `share` of a core, N processes N times that. Processes are
    moved into their group as soon as they are seen (every 20 ms).
    """

    ROOT = Path("/sys/fs/cgroup/cpu")

    def __init__(self, share: float) -> None:
        self.share = share
        self.base = self.ROOT / f"mastosync-bench-{os.getpid()}"
        try:
            self.base.mkdir()
        except OSError as exc:
            raise SystemExit(f"--client-cpu needs root and the cgroup v1 cpu controller ({self.ROOT}): {exc}") from None
        self.placed: set[int] = set()

    def place(self, pids: set[int]) -> None:
        for pid in pids - self.placed:
            group = self.base / str(pid)
            try:
                group.mkdir(exist_ok=True)
                period = int((group / "cpu.cfs_period_us").read_text())
                (group / "cpu.cfs_quota_us").write_text(str(int(period * self.share)))
                (group / "cgroup.procs").write_text(str(pid))
            except OSError:
                continue  # the process already ended
            self.placed.add(pid)

    def close(self) -> None:
        for group in self.base.iterdir():
            if group.is_dir():
                for pid in (group / "cgroup.procs").read_text().split():
                    (self.ROOT / "cgroup.procs").write_text(pid)
                group.rmdir()
        self.base.rmdir()


def machine_busy() -> tuple[float, float]:
    """(busy, total) CPU time of the whole machine so far, from /proc/stat."""
    fields = [float(f) for f in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle and iowait
    return sum(fields) - idle, sum(fields)


def children(pid: int) -> set[int]:
    try:
        return {int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()}
    except OSError:
        return set()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--latency", type=float, default=0.025)
    parser.add_argument("--client-cpu", type=float, default=0.0,
                        help="cap every mastosync process at this share of a core (root, cgroup v1 cpu)")
    args = parser.parse_args()
    args.concurrency, args.pairs, args.baseline = 64, 1, None
    bench = Bench(args)
    cap = CpuCap(args.client_cpu) if args.client_cpu else None
    src_proxy, dst_proxy = LatencyProxy(bench.src.port).start(), LatencyProxy(bench.dst.port).start()
    try:
        src_proxy.latency = dst_proxy.latency = args.latency
        rows, objects = make_instance(args.objects, seed=9, small_only=True)
        bench.src.create_bucket("small")
        write_objects(bench.src, "small", objects)
        db = asyncio.run(seed_db(bench.pg, rows))
        print(f"load average {os.getloadavg()[0]:.2f}; {len(objects)} objects, +{args.latency * 1000:.0f} ms per "
              "request, concurrency 64 in total"
              + (f"; every mastosync process capped at {args.client_cpu:g} of a core" if cap else ""))
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
                for proxy in (src_proxy, dst_proxy):
                    proxy.reset_counters()
                busy_before = machine_busy()
                started = time.monotonic()
                proc = subprocess.Popen([sys.executable, "-m", "mastosync", "run", "--all", "--config", str(config),
                                         "--processes", str(n)], stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL, cwd=ROOT)
                peaks: dict[int, float] = {}
                looked = 0.0
                while proc.poll() is None:
                    if cap is not None:
                        cap.place({proc.pid} | children(proc.pid))
                    if time.monotonic() - looked > 0.2:
                        peaks.update(peak_rss_mb({proc.pid} | children(proc.pid)))
                        looked = time.monotonic()
                    time.sleep(0.02)
                wall = time.monotonic() - started
                busy = (machine_busy()[0] - busy_before[0]) / (machine_busy()[1] - busy_before[1])
                if proc.returncode != 0:
                    raise SystemExit(f"--processes {n} exited {proc.returncode}")
                bench.drop_bucket(dst)
                rates[n].append(len(objects) / wall)
                timeline = sorted(t for proxy in (src_proxy, dst_proxy) for t, op in proxy.counts.timeline
                                  if op in ("GetObject", "PutObject"))
                copying = timeline[-1] - timeline[0]
                print(f"--processes {n}: {len(objects) / wall:6.0f} obj/s ({wall:.2f}s; the first GET after "
                      f"{timeline[0] - started:.2f}s, then {len(objects) / copying:.0f} obj/s); peak RSS per process "
                      f"{max(peaks.values(), default=0):.0f} MB; the machine's cores {busy:.0%} busy")
        one, two = statistics.median(rates[1]), statistics.median(rates[2])
        print(f"--processes 2 / --processes 1 (medians): {two / one:.2f}x")
    finally:
        src_proxy.stop()
        dst_proxy.stop()
        bench.stop()
        if cap is not None:
            cap.close()


if __name__ == "__main__":
    main()
