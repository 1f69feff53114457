"""CPU per object of `mastosync run`, side by side: this checkout, on uvloop and on asyncio's
loop, and (with --baseline DIR) another checkout.

    .venv/bin/python bench/cpu.py [--objects 3000] [--rounds 3] [--baseline DIR]

Two instances on `rclone serve s3` (bench/compare.py's servers): the mix (originals around
100 KB, 1% videos) and small files only (2-20 KB), each copied afresh by each variant in
turn, rounds alternating who goes first. CPU is user + system time of the mastosync process
from rusage (the process's own: wait4 of the child), divided by the objects copied. Prints
figures only.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.compare import Bench, make_instance, seed_db, write_objects  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--baseline", type=Path)
    args = parser.parse_args()
    args.concurrency, args.pairs = 32, 1
    bench = Bench(args)
    try:
        print(f"load average {os.getloadavg()[0]:.2f}; {os.cpu_count()} cores")
        for name, small in (("mix", False), ("small files", True)):
            rows, objects = make_instance(args.objects, seed=1 if not small else 9, small_only=small)
            bucket = "mix" if not small else "small"
            bench.src.create_bucket(bucket)
            write_objects(bench.src, bucket, objects)
            db = asyncio.run(seed_db(bench.pg, rows))
            variants = {"uvloop": ({}, ROOT), "asyncio": ({"MASTOSYNC_UVLOOP": "0"}, ROOT)}
            if args.baseline:
                variants["baseline"] = ({}, args.baseline)
            cpu: dict[str, list[float]] = {v: [] for v in variants}
            order = list(variants)
            for round_ in range(args.rounds):
                for variant in order[round_ % len(order):] + order[:round_ % len(order)]:
                    env, root = variants[variant]
                    os.environ.update(env)
                    try:
                        dst = bench.fresh_bucket()
                        _, seconds, _ = bench.mastosync(db, bucket, dst, 32, root=root)
                    finally:
                        for key in env:
                            os.environ.pop(key, None)
                    bench.drop_bucket(dst)
                    cpu[variant].append(seconds / len(objects) * 1000)
            print(f"{name} ({len(objects)} objects, {sum(objects.values()) / 1e6:.0f} MB): " + "; ".join(
                f"{v} {statistics.median(c):.2f} ms/object ({min(c):.2f}-{max(c):.2f})" for v, c in cpu.items()))
    finally:
        bench.stop()


if __name__ == "__main__":
    main()
