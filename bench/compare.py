"""mastosync against rclone on the same job, on this machine.

    .venv/bin/python bench/compare.py [--objects 3000] [--concurrency 32] [--pairs 2] [--baseline DIR]

Starts two `rclone serve s3` servers on fresh directories and a throwaway PostgreSQL,
creates a synthetic instance (media_attachments, originals log-normal around 100 KB,
1% videos of 5-40 MB, each with its small style), then runs, in pairs on fresh destination
buckets (who goes first alternates), `mastosync run --all` and `rclone copy --files-from-raw`
of the same keys with the same concurrency. Prints wall time, objects/s, MB/s, CPU seconds and peak
RSS of each tool process, and the objects/s ratio (median over the pairs). Also: a rerun
over a complete destination, a latency-bound case through a proxy adding 25 ms to every
request (and the same with 100 ms), with the CPU the servers and proxies used meanwhile,
and peak RSS at concurrency 64 with the videos in the mix. With --baseline DIR (a checkout
of another mastosync version, e.g. `git worktree add /tmp/before <commit>`), that version
runs the fresh copy too, in the same pairs: before and after measured side by side.
Prints figures only.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.conftest import DB_PASSWORD, DB_USER, MastodonDb, make_db, to_toml  # noqa: E402
from tests.services.latencyproxy import LatencyProxy  # noqa: E402
from tests.services.postgres import PostgresServer  # noqa: E402
from tests.services.s3 import RcloneServer, rclone_binary  # noqa: E402

MB = 1_000_000


@dataclass
class Measure:
    tool: str
    wall: float
    cpu: float
    rss_mb: float
    objects: int
    size: int

    @property
    def rate(self) -> float:
        return self.objects / self.wall

    def line(self) -> str:
        return (f"{self.tool:<10} {self.wall:7.2f}s {self.rate:8.1f} obj/s {self.size / MB / self.wall:7.1f} MB/s "
                f"cpu {self.cpu:6.2f}s  peak RSS {self.rss_mb:6.1f} MB")


def timed(argv: list[str], env: dict[str, str] | None = None, cwd: Path = ROOT) -> tuple[float, float, float]:
    """(wall seconds, CPU seconds, peak RSS MB) of a child process; fails loudly on error.

    `python -m mastosync` imports the package from `cwd` (it comes first on sys.path).
    """
    started = time.monotonic()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, cwd=cwd)
    status, cpu, peak = wait_measured(proc.pid)
    wall = time.monotonic() - started
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise SystemExit(f"{argv[0]} exited {code}: {proc.stderr.read().decode()[-2000:] if proc.stderr else ''}")
    return wall, cpu, peak


def vm_hwm_mb(pid: int) -> float:
    """A running process's peak RSS so far (VmHWM), 0 once it has gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def wait_measured(pid: int) -> tuple[int, float, float]:
    """Wait for a child: (wait status, CPU seconds, peak RSS MB). The peak is VmHWM read while
    it runs: wait4's ru_maxrss keeps the high-water mark of the forked copy of this process."""
    peak = 0.0
    while True:
        peak = max(peak, vm_hwm_mb(pid))
        done, status, usage = os.wait4(pid, os.WNOHANG)
        if done:
            return status, usage.ru_utime + usage.ru_stime, peak
        time.sleep(0.05)


def make_instance(count_objects: int, seed: int = 1,
                  small_only: bool = False) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """Rows and {key: size}: every row has an original and a small style (2 objects)."""
    rng, id_bits = random.Random(seed), random.Random(seed + 1)
    rows, objects = [], {}
    for n in range(count_objects // 2):
        # A Mastodon id: milliseconds since the epoch above 16 bits of hash and sequence. Low
        # bits that vary matter: `--shard K/N` and `--processes` split on id mod N.
        rid = (1603783907088 + n) << 16 | id_bits.getrandbits(16)
        digits = f"{rid:018d}"
        part = "/".join(digits[i:i + 3] for i in range(0, 18, 3))
        if small_only:
            size, name, ct, small = rng.randint(2000, 20000), f"{n:016x}.jpg", "image/jpeg", f"{n:016x}.jpg"
        elif rng.random() < 0.01:
            size, name, ct, small = rng.randint(5 * MB, 40 * MB), f"{n:016x}.mp4", "video/mp4", f"{n:016x}.png"
        else:
            size = min(16 * MB, int(rng.lognormvariate(math.log(100_000), 1.0)) + 200)
            name, ct, small = f"{n:016x}.jpg", "image/jpeg", f"{n:016x}.jpg"
        rows.append({"id": rid, "file_file_name": name, "file_content_type": ct, "file_file_size": size})
        objects[f"media_attachments/files/{part}/original/{name}"] = size
        objects[f"media_attachments/files/{part}/small/{small}"] = max(500, min(size // 8, 60_000))
    return rows, objects


def write_objects(server: RcloneServer, bucket: str, objects: dict[str, int]) -> None:
    """Straight into the served directory: much faster than uploading, same result for both tools."""
    write_tree(server.root / "data" / bucket, objects)


def write_tree(base: Path, objects: dict[str, int]) -> None:
    """Files of the given sizes under `base`, keys as relative paths (a bucket's folder, or public/system)."""
    block = random.Random(3).randbytes(1 << 20)
    for key, size in objects.items():
        path = base / key
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("wb") as f:
            left = size
            while left:
                chunk = block[: min(left, len(block))]
                f.write(chunk)
                left -= len(chunk)


async def seed_db(pg: PostgresServer, rows: list[dict[str, Any]]) -> MastodonDb:
    db = await make_db(pg, "4.6")
    conn = await db.connect()
    try:
        await conn.executemany(
            "INSERT INTO media_attachments (id, file_file_name, file_content_type, file_file_size) "
            "VALUES ($1, $2, $3, $4)",
            [(r["id"], r["file_file_name"], r["file_content_type"], r["file_file_size"]) for r in rows])
    finally:
        await conn.close()
    return db


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.tmp = Path(tempfile.mkdtemp(prefix="mastosync-bench-"))
        self.pg = PostgresServer().start()
        self.pg.psql(f"CREATE ROLE {DB_USER} LOGIN PASSWORD '{DB_PASSWORD}'")
        # The servers stand in for a provider across the network, whose disks and CPU are
        # not ours: in memory when the machine has it, their files cost no disk writes.
        shm = Path("/dev/shm")
        parent = shm if shm.is_dir() and os.access(shm, os.W_OK) else None
        self.src = RcloneServer(parent=parent).start()
        self.dst = RcloneServer(parent=parent).start()
        self.runs = 0

    def stop(self) -> None:
        for server in (self.dst, self.src, self.pg):
            server.stop()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def rclone_env(self, src_endpoint: str, dst_endpoint: str) -> dict[str, str]:
        env = dict(os.environ, RCLONE_CONFIG=str(self.tmp / "rclone.conf"))
        for name, server, endpoint in (("SRC", self.src, src_endpoint), ("DST", self.dst, dst_endpoint)):
            env.update({f"RCLONE_CONFIG_{name}_TYPE": "s3", f"RCLONE_CONFIG_{name}_PROVIDER": "Other",
                        f"RCLONE_CONFIG_{name}_ENDPOINT": endpoint,
                        f"RCLONE_CONFIG_{name}_ACCESS_KEY_ID": server.access_key,
                        f"RCLONE_CONFIG_{name}_SECRET_ACCESS_KEY": server.secret_key,
                        f"RCLONE_CONFIG_{name}_FORCE_PATH_STYLE": "true"})
        return env

    def drop_bucket(self, name: str) -> None:
        """Free a destination bucket's files (in memory) once it is measured."""
        shutil.rmtree(self.dst.root / "data" / name, ignore_errors=True)

    def fresh_bucket(self) -> str:
        self.runs += 1
        name = f"dst-{self.runs}"
        self.dst.create_bucket(name)
        return name

    def mastosync(self, db: MastodonDb, src_bucket: str, dst_bucket: str, concurrency: int, *extra: str,
                  src_endpoint: str | None = None, dst_endpoint: str | None = None,
                  root: Path = ROOT) -> tuple[float, float, float]:
        config = self.tmp / f"m-{dst_bucket}.toml"
        config.write_text(to_toml({
            "database": {"host": self.pg.host, "port": self.pg.port, "name": db.name, "user": db.user,
                         "password": db.password},
            "source": {"endpoint": src_endpoint or self.src.endpoint, "bucket": src_bucket,
                       "access_key_id": self.src.access_key, "secret_access_key": self.src.secret_key},
            "destination": {"endpoint": dst_endpoint or self.dst.endpoint, "bucket": dst_bucket, "acl": "",
                            "access_key_id": self.dst.access_key, "secret_access_key": self.dst.secret_key},
            "sync": {"concurrency": concurrency, "state_dir": str(self.tmp / "state" / dst_bucket)},
        }))
        return timed([sys.executable, "-m", "mastosync", "run", "--all", "--config", str(config), *extra], cwd=root)

    def rclone(self, src_bucket: str, dst_bucket: str, keys: Path, concurrency: int,
               src_endpoint: str | None = None, dst_endpoint: str | None = None) -> tuple[float, float, float]:
        env = self.rclone_env(src_endpoint or self.src.endpoint, dst_endpoint or self.dst.endpoint)
        return timed([rclone_binary(), "copy", f"src:{src_bucket}", f"dst:{dst_bucket}", "--files-from-raw",
                      str(keys), "--no-traverse", "--transfers", str(concurrency), "--checkers", str(concurrency),
                      "--s3-no-check-bucket", "--s3-upload-cutoff", "16M", "--s3-chunk-size", "8M"], env=env)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--pairs", type=int, default=2)
    parser.add_argument("--baseline", type=Path, help="a checkout of another mastosync, run beside this one")
    args = parser.parse_args()
    # Measured as installed: pip compiles the bytecode, so the runs do not compile the source.
    for root in (ROOT, *([args.baseline] if args.baseline else [])):
        subprocess.run([sys.executable, "-m", "compileall", "-q", str(root / "mastosync")], check=True)
    bench = Bench(args)
    try:
        run(bench, args)
    finally:
        bench.stop()


def run(bench: Bench, args: argparse.Namespace) -> None:
    rows, objects = make_instance(args.objects)
    total = sum(objects.values())
    bench.src.create_bucket("src")
    write_objects(bench.src, "src", objects)
    db = asyncio.run(seed_db(bench.pg, rows))
    keys = bench.tmp / "keys.txt"
    keys.write_text("\n".join(objects) + "\n")
    videos = sum(1 for k in objects if k.endswith(".mp4"))
    print(f"machine: {os.cpu_count()} cores; instance: {len(objects)} objects ({videos} videos), "
          f"{total / MB:.0f} MB; concurrency {args.concurrency}")

    print("\n== fresh copy, alternating ==")
    ratios, m_runs, r_runs, baseline_ratios = [], [], [], []
    order = ["mastosync", "rclone", *(["baseline"] if args.baseline else [])]
    for pair in range(args.pairs):
        # Who goes first rotates: the first run after seeding meets the servers' cold caches.
        dst, dst_r = bench.fresh_bucket(), bench.fresh_bucket()
        for tool in order[pair % len(order):] + order[:pair % len(order)]:
            if tool == "mastosync":
                m = Measure("mastosync", *bench.mastosync(db, "src", dst, args.concurrency), len(objects), total)
                print(m.line())
            elif tool == "baseline":
                dst_b = bench.fresh_bucket()
                b = Measure("baseline", *bench.mastosync(db, "src", dst_b, args.concurrency, root=args.baseline),
                            len(objects), total)
                bench.drop_bucket(dst_b)
                print(b.line())
            else:
                r = Measure("rclone", *bench.rclone("src", dst_r, keys, args.concurrency), len(objects), total)
                print(r.line())
        ratios.append(m.rate / r.rate)
        if args.baseline:
            baseline_ratios.append(m.rate / b.rate)
        # Requests per object are about 2 (GET and PUT) plus listings and a few parts.
        print(f"           mastosync CPU per object {m.cpu / len(objects) * 1000:.2f} ms"
              + (f", baseline {b.cpu / len(objects) * 1000:.2f} ms" if args.baseline else ""))
        m_runs.append((m, dst))
        r_runs.append((r, dst_r))
        if pair:  # the first pair's buckets are kept for the reruns
            bench.drop_bucket(dst)
            bench.drop_bucket(dst_r)
    print(f"objects/s ratio mastosync/rclone (median of {len(ratios)} pairs): {statistics.median(ratios):.2f}")
    if baseline_ratios:
        print(f"objects/s ratio mastosync/baseline (median of {len(baseline_ratios)} pairs): "
              f"{statistics.median(baseline_ratios):.2f}")

    print("\n== rerun over a complete destination ==")
    m = Measure("mastosync", *bench.mastosync(db, "src", m_runs[0][1], args.concurrency, "--restart"),
                len(objects), 0)
    r = Measure("rclone", *bench.rclone("src", r_runs[0][1], keys, args.concurrency), len(objects), 0)
    print(m.line())
    print(r.line())
    print(f"rerun speed-up mastosync vs rclone: {r.wall / m.wall:.2f}x")

    print("\n== peak RSS at concurrency 64, videos in the mix ==")
    for _, bucket in (m_runs[0], r_runs[0]):
        bench.drop_bucket(bucket)
    big = bench.fresh_bucket()
    wall, cpu, rss = bench.mastosync(db, "src", big, 64)
    bench.drop_bucket(big)
    print(f"mastosync --concurrency 64: {wall:.2f}s, peak RSS {rss:.1f} MB")

    print("\n== latency-bound: 2,000 objects of 2-20 KB, +25 ms on every request, concurrency 64 ==")
    small_rows, small = make_instance(2000, seed=9, small_only=True)
    bench.src.create_bucket("small")
    write_objects(bench.src, "small", small)
    small_db = asyncio.run(seed_db(bench.pg, small_rows))
    keys_small = bench.tmp / "keys-small.txt"
    keys_small.write_text("\n".join(small) + "\n")
    # A lean relay, not the fault proxy: its Python HTTP parsing would take a third of the
    # CPU the client gets here (tests/services/latencyproxy.py).
    src_proxy, dst_proxy = LatencyProxy(bench.src.port).start(), LatencyProxy(bench.dst.port).start()
    try:
        for latency in (0.025, 0.100):
            if latency != 0.025:
                print(f"\n== the same with +{latency * 1000:.0f} ms: where the servers have CPU to spare ==")
            for proxy in (src_proxy, dst_proxy):
                proxy.latency = latency
            tools = [("mastosync", lambda: bench.mastosync(
                small_db, "small", bench.fresh_bucket(), 64,
                src_endpoint=src_proxy.endpoint, dst_endpoint=dst_proxy.endpoint))]
            if latency == 0.025:
                tools.append(("rclone", lambda: bench.rclone(
                    "small", bench.fresh_bucket(), keys_small, 64,
                    src_endpoint=src_proxy.endpoint, dst_endpoint=dst_proxy.endpoint)))
            for tool, start in tools:
                latency_run(bench, tool, start, (src_proxy, dst_proxy), len(small), latency)
    finally:
        src_proxy.stop()
        dst_proxy.stop()


def process_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def latency_run(bench: Bench, tool: str, start, proxies, objects: int, latency: float) -> None:  # type: ignore[no-untyped-def]
    """One run through the latency proxies, with the CPU everything else used meanwhile.

    On two cores the S3 servers and the proxies can use up the machine before the client
    does. "Machine ceiling for any client" is the rate at which they alone would fill both
    cores: no client can pass it here. "With this one's CPU" adds the client's own.
    """
    for proxy in proxies:
        proxy.reset_counters()
    servers = [bench.src.process.proc.pid, bench.dst.process.proc.pid]  # type: ignore[union-attr]
    others_before = sum(process_cpu(pid) for pid in servers) + time.process_time()  # proxies run in this process
    started = time.monotonic()
    wall, cpu, _ = start()
    others = sum(process_cpu(pid) for pid in servers) + time.process_time() - others_before
    timeline = sorted(t for proxy in proxies for t, op in proxy.counts.timeline
                      if op in ("GetObject", "PutObject"))
    requests = sum(p.counts.operations.total() for p in proxies)
    per_object = (requests - (4 if tool == "mastosync" else 0)) / objects  # minus the up-front bucket checks
    ideal = 64 / (per_object * latency)
    rate = objects / wall
    line = (f"{tool:<10} {rate:5.0f} obj/s ({wall:.2f}s), {per_object:.2f} requests/object, ideal {ideal:.0f} obj/s "
            f"-> {rate / ideal:.0%} of ideal; cpu {cpu:.1f}s")
    if tool == "mastosync" and len(timeline) > 1:
        copying = timeline[-1] - timeline[0]
        line += (f"\n           copy phase (first GET to last PUT, {copying:.2f}s, without the "
                 f"{timeline[0] - started:.2f}s start): {objects / copying:.0f} obj/s -> "
                 f"{objects / copying / ideal:.0%} of ideal")
    line += (f"\n           servers + proxies used {others:.1f} CPU-s in {wall:.1f}s. Machine ceiling (the rate "
             f"at which the 2 cores are full) for any client: {2 * objects / others:.0f} obj/s "
             f"({min(1.0, 2 * objects / others / ideal):.0%} of ideal); with this one's CPU: "
             f"{2 * objects / (others + cpu):.0f} obj/s ({min(1.0, 2 * objects / (others + cpu) / ideal):.0%})")
    print(line)


if __name__ == "__main__":
    main()
