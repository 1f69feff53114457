"""`make demo`: a complete migration between two local S3 servers, start to finish.

Starts a throwaway PostgreSQL, a source S3 server (rclone serve s3) and a destination
(moto, which keeps ACLs), seeds a small Mastodon-shaped instance, writes a config, and
runs `mastosync dry-run --limit 5`, `mastosync run --all` and `mastosync verify --all`
exactly as an admin would. Every server is stopped at the end, also on Ctrl-C or failure.

`make demo-disk` (`--disk`): the source is Mastodon's local storage instead, a
`public/system` folder, moved into the bucket with the headers Mastodon's upload sends.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.conftest import DB_PASSWORD, DB_USER, MastodonDb, make_db, to_toml  # noqa: E402
from tests.services import instance  # noqa: E402
from tests.services.postgres import PostgresServer  # noqa: E402
from tests.services.s3 import MotoServer, RcloneServer  # noqa: E402

DEMO_DIR = ROOT / "demo"


def say(text: str) -> None:
    print(f"\n\033[1m==> {text}\033[0m" if sys.stdout.isatty() else f"\n==> {text}", flush=True)


def mastosync(*args: str) -> int:
    command = [sys.executable, "-m", "mastosync", *args[:1], "--config", str(DEMO_DIR / "config.toml"), *args[1:]]
    print("$ mastosync " + " ".join(args), flush=True)
    return subprocess.call(command, cwd=ROOT)


async def seed(pg: PostgresServer, source: RcloneServer | Path) -> tuple[MastodonDb, instance.Instance]:
    pg.psql(f"CREATE ROLE {DB_USER} LOGIN PASSWORD '{DB_PASSWORD}'")
    db = await make_db(pg, "4.6")
    inst = instance.build("4.6", video_size=20 * 1024 * 1024)
    instance.add_bulk(inst, media=120, accounts=40, emojis=15, cards=20)
    if isinstance(source, Path):
        await instance.seed(inst, db, None, "")
        instance.seed_folder(inst, source)
        return db, inst
    source.create_bucket("mastodon-old")
    await instance.seed(inst, db, source, "mastodon-old")
    return db, inst


def main(disk: bool) -> int:
    servers: list[Any] = []
    try:
        shutil.rmtree(DEMO_DIR, ignore_errors=True)
        DEMO_DIR.mkdir()
        say(f"starting PostgreSQL and {'an S3 server' if disk else 'two S3 servers'} on loopback")
        pg = PostgresServer().start()
        servers.append(pg)
        source: RcloneServer | Path = DEMO_DIR / "public" / "system"
        if not disk:
            source = RcloneServer().start()
            servers.append(source)
        destination = MotoServer().start()
        servers.append(destination)
        destination.create_bucket("mastodon-new")
        db, inst = asyncio.run(seed(pg, source))
        present = sum(1 for o in inst.objects if o.present)
        print(f"seeded {sum(len(r) for r in inst.rows.values())} records referencing {len(inst.objects)} objects "
              f"({present} in the source {'folder' if disk else 'bucket'}, {len(inst.objects) - present} "
              f"deliberately missing, {len(inst.orphans)} orphans the database does not reference)")

        (DEMO_DIR / "config.toml").write_text(to_toml({
            "database": {"host": pg.host, "port": pg.port, "name": db.name, "user": db.user, "password": db.password},
            "source": {"kind": "filesystem", "root": "public/system"} if isinstance(source, Path) else {
                "endpoint": source.endpoint, "region": "us-east-1", "bucket": "mastodon-old",
                "access_key_id": source.access_key, "secret_access_key": source.secret_key},
            "destination": {"endpoint": destination.endpoint, "region": "us-east-1", "bucket": "mastodon-new",
                            "access_key_id": destination.access_key, "secret_access_key": destination.secret_key,
                            "acl": "public-read"},
            "sync": {"concurrency": 16, "state_dir": str(DEMO_DIR / "state"), "progress_interval": 1},
        }))
        print(f"config written to {DEMO_DIR / 'config.toml'}")

        say("what would be copied (first 5 records of each type)")
        if mastosync("dry-run", "--limit", "5") != 0:
            return 1
        say("copying everything the database references")
        code = mastosync("run", "--all")
        if code != 0:
            print(f"mastosync run exited with {code}")
            return code
        say("proving the destination is complete")
        code = mastosync("verify", "--all")
        copied = destination.keys("mastodon-new")
        say(f"destination holds {len(copied)} objects; orphans copied: "
            f"{len(copied & set(inst.orphans))}; reports are in {DEMO_DIR / 'state'}")
        if code == 0:
            print("demo: verified destination complete")
        return code
    except KeyboardInterrupt:
        print("\ndemo interrupted")
        return 130
    finally:
        for server in reversed(servers):
            server.stop()
        ports = " ".join(str(server.port) for server in servers)
        print(f"demo: stopped {len(servers)} servers (ports {ports})", flush=True)


if __name__ == "__main__":
    os.environ.pop("MASTOSYNC_CONFIG", None)
    sys.exit(main(disk="--disk" in sys.argv[1:]))
