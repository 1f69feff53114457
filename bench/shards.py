"""One process against two shards on the same migration, on this machine.

    .venv/bin/python bench/shards.py [--objects 3000] [--concurrency 32] [--rounds 2]

The instance and servers of bench/compare.py (two `rclone serve s3`, files in /dev/shm).
Each round: one `mastosync run --all --concurrency C` onto a fresh bucket, then two
processes at once, `--shard 1/2` and `--shard 2/2` with C/2 each, onto another. Prints
objects/s of each, and the CPU the clients and the S3 servers used during the run (the
servers share these two cores: when they need most of them, more client processes
cannot help). Prints figures only.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.compare import Bench, make_instance, process_cpu, seed_db, write_objects  # noqa: E402
from tests.conftest import MastodonDb, to_toml  # noqa: E402


def config_for(bench: Bench, db: MastodonDb, dst: str, concurrency: int, name: str) -> Path:
    path = bench.tmp / f"{name}.toml"
    path.write_text(to_toml({
        "database": {"host": bench.pg.host, "port": bench.pg.port, "name": db.name, "user": db.user,
                     "password": db.password},
        "source": {"endpoint": bench.src.endpoint, "bucket": "src", "access_key_id": bench.src.access_key,
                   "secret_access_key": bench.src.secret_key},
        "destination": {"endpoint": bench.dst.endpoint, "bucket": dst, "acl": "",
                        "access_key_id": bench.dst.access_key, "secret_access_key": bench.dst.secret_key},
        "sync": {"concurrency": concurrency, "state_dir": str(bench.tmp / "state" / name)},
    }))
    return path


def run_processes(bench: Bench, configs: list[tuple[Path, list[str]]]) -> tuple[float, float, float]:
    """(wall, clients' CPU, servers' CPU) of processes started together."""
    servers = [bench.src.process.proc.pid, bench.dst.process.proc.pid]  # type: ignore[union-attr]
    servers_before = sum(process_cpu(pid) for pid in servers)
    started = time.monotonic()
    procs = [subprocess.Popen([sys.executable, "-m", "mastosync", "run", "--all", "--config", str(c), *extra],
                              cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) for c, extra in configs]
    client_cpu = 0.0
    for proc in procs:
        _, status, usage = os.wait4(proc.pid, 0)
        if os.waitstatus_to_exitcode(status) != 0:
            told = proc.stderr.read().decode() if proc.stderr else ""
            raise SystemExit(f"mastosync exited {os.waitstatus_to_exitcode(status)}: {told}")
        client_cpu += usage.ru_utime + usage.ru_stime
    wall = time.monotonic() - started
    return wall, client_cpu, sum(process_cpu(pid) for pid in servers) - servers_before


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    args.pairs = 1
    bench = Bench(args)
    try:
        rows, objects = make_instance(args.objects)
        bench.src.create_bucket("src")
        write_objects(bench.src, "src", objects)
        db = asyncio.run(seed_db(bench.pg, rows))
        print(f"{len(objects)} objects, {sum(objects.values()) / 1e6:.0f} MB; {os.cpu_count()} cores")
        c = args.concurrency
        for round_ in range(args.rounds):
            for label in (["1 process", "2 shards"] if round_ % 2 == 0 else ["2 shards", "1 process"]):
                dst = bench.fresh_bucket()
                configs: list[tuple[Path, list[str]]]
                if label == "1 process":
                    configs = [(config_for(bench, db, dst, c, f"one-{dst}"), [])]
                else:
                    configs = [(config_for(bench, db, dst, c // 2, f"shards-{dst}"), ["--shard", f"{k}/2"])
                               for k in (1, 2)]
                wall, clients, servers = run_processes(bench, configs)
                bench.drop_bucket(dst)
                print(f"{label:<10} {wall:6.2f}s {len(objects) / wall:7.1f} obj/s; CPU: clients {clients:5.2f}s, "
                      f"servers {servers:5.2f}s, together {(clients + servers) / wall:4.2f} of "
                      f"{os.cpu_count()} cores", flush=True)
    finally:
        bench.stop()


if __name__ == "__main__":
    main()
