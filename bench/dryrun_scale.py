"""Dry-run at scale: 1,000,000 media_attachments rows, records/s and peak RSS.

    .venv/bin/python bench/dryrun_scale.py [--rows N] [--rounds R] [--baseline DIR]

Starts a throwaway PostgreSQL, fills media_attachments with generate_series (snowflake
ids, a mix of images, videos and audio, a fifth of them remote), then times
`mastosync dry-run --all --json > /dev/null` and reports the child's peak RSS (VmHWM). With
--baseline DIR (a checkout of another version) that version runs too, rounds alternating.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.compare import wait_measured  # noqa: E402
from tests.conftest import DB_PASSWORD, DB_USER, MastodonDb, make_db, to_toml  # noqa: E402
from tests.services.postgres import PostgresServer  # noqa: E402

FILL = """
INSERT INTO media_attachments (id, remote_url, file_file_name, file_content_type, file_file_size,
                               file_updated_at, file_storage_schema_version, thumbnail_file_name)
SELECT 105105582134970663 + g::bigint * 65536,
       CASE WHEN g % 5 = 0 THEN 'https://remote.example/' || g ELSE '' END,
       md5(g::text)::varchar(16) || (ARRAY['.jpg', '.png', '.mp4', '.gif', '.mp3'])[g % 5 + 1],
       (ARRAY['image/jpeg', 'image/png', 'video/mp4', 'image/gif', 'audio/mpeg'])[g % 5 + 1],
       100000 + g % 100000, now(), 1,
       CASE WHEN g % 50 = 0 THEN md5(g::text)::varchar(16) || '.jpg' END
FROM generate_series(1, $1) AS g
"""


async def fill(pg: PostgresServer, rows: int) -> MastodonDb:
    db = await make_db(pg, "4.6")
    conn = await db.connect()
    try:
        await conn.execute(FILL, rows)
        await conn.execute("ANALYZE media_attachments")
    finally:
        await conn.close()
    return db


def dry_run(root: Path, config: Path) -> tuple[float, float, float]:
    """(wall seconds, peak RSS MB, CPU seconds) of `dry-run --all --json > /dev/null` from `root`."""
    with open(os.devnull, "w") as devnull:
        started = time.monotonic()
        proc = subprocess.Popen([sys.executable, "-m", "mastosync", "dry-run", "--all", "--json",
                                 "--config", str(config)], stdout=devnull, cwd=root)
        status, cpu, peak = wait_measured(proc.pid)
        elapsed = time.monotonic() - started
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"dry-run failed with {os.waitstatus_to_exitcode(status)}")
    return elapsed, peak, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--baseline", type=Path, help="a checkout of another mastosync, run beside this one")
    args = parser.parse_args()
    pg = PostgresServer().start()
    try:
        pg.psql(f"CREATE ROLE {DB_USER} LOGIN PASSWORD '{DB_PASSWORD}'")
        started = time.monotonic()
        db = asyncio.run(fill(pg, args.rows))
        print(f"filled {args.rows:,} rows in {time.monotonic() - started:.1f}s")
        config = Path(tempfile.mkdtemp()) / "config.toml"
        config.write_text(to_toml({
            "database": {"host": pg.host, "port": pg.port, "name": db.name, "user": db.user,
                         "password": db.password},
            "source": {"bucket": "old"}, "destination": {"bucket": "new"},
        }))
        variants = {"this": ROOT, **({"baseline": args.baseline} if args.baseline else {})}
        for round_ in range(args.rounds):
            names = list(variants)
            for name in names[round_ % len(names):] + names[:round_ % len(names)]:
                elapsed, peak, cpu = dry_run(variants[name], config)
                print(f"{name:<8} dry-run --all --json: {args.rows:,} records in {elapsed:.2f}s = "
                      f"{args.rows / elapsed:,.0f} records/s; peak RSS {peak:.0f} MB; CPU {cpu:.1f}s", flush=True)
    finally:
        pg.stop()


if __name__ == "__main__":
    main()
