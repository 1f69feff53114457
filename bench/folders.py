"""mastosync against rclone from a folder into a bucket: local disk, and the same over SFTP.

    .venv/bin/python bench/folders.py [--objects 3000] [--concurrency 32] [--pairs 2]

The instance of bench/compare.py (media originals log-normal around 100 KB, 1% videos of
5-40 MB, each with its small style) is written as Mastodon's local storage keeps it, a
public/system folder on disk (/var/tmp); the destination is `rclone serve s3` (in memory,
standing in for a provider). Each pair runs, on fresh buckets and with who goes first
alternating, `mastosync run --all` and `rclone copy --files-from-raw` of the same keys at
the same concurrency: from the folder (kind = "filesystem", rclone's local backend), and
from the same folder through OpenSSH's sshd and sftp-server on loopback (kind = "sftp",
rclone's sftp backend). Prints wall time, objects/s, MB/s, CPU and peak RSS, and the
objects/s ratio. Figures only.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from compare import ROOT, Bench, Measure, make_instance, seed_db, timed, write_tree  # noqa: E402

from tests.conftest import MastodonDb, to_toml  # noqa: E402
from tests.services.s3 import rclone_binary  # noqa: E402
from tests.services.ssh import OpenSshServer  # noqa: E402


def mastosync(bench: Bench, db: MastodonDb, source: dict[str, Any], ssh: dict[str, Any] | None, bucket: str,
              concurrency: int) -> tuple[float, float, float]:
    config = bench.tmp / f"m-{bucket}.toml"
    sections = {
        "database": {"host": bench.pg.host, "port": bench.pg.port, "name": db.name, "user": db.user,
                     "password": db.password},
        "source": source,
        "destination": {"endpoint": bench.dst.endpoint, "bucket": bucket, "acl": "",
                        "access_key_id": bench.dst.access_key, "secret_access_key": bench.dst.secret_key},
        "sync": {"concurrency": concurrency, "state_dir": str(bench.tmp / "state" / bucket)},
    }
    if ssh:
        sections["ssh"] = ssh
    config.write_text(to_toml(sections))
    measured: tuple[float, float, float] = timed([sys.executable, "-m", "mastosync", "run", "--all", "--config",
                                                  str(config)])
    return measured


def rclone(bench: Bench, source: str, env_source: dict[str, str], keys: Path, bucket: str,
           concurrency: int) -> tuple[float, float, float]:
    env = bench.rclone_env(bench.src.endpoint, bench.dst.endpoint)
    env.update(env_source)
    argv = [rclone_binary(), "copy", source, f"dst:{bucket}", "--files-from-raw", str(keys), "--no-traverse",
            "--transfers", str(concurrency), "--checkers", str(concurrency), "--s3-no-check-bucket",
            "--s3-upload-cutoff", "16M", "--s3-chunk-size", "8M"]
    measured: tuple[float, float, float] = timed(argv, env=env)
    return measured


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--pairs", type=int, default=2)
    parser.add_argument("--only", choices=("filesystem", "sftp"), help="one of the two cases")
    # By default rclone's sftp backend checks each copy by running md5sum on the SSH host (one
    # SSH session per file): measured at under 10 objects/s here. Disabled, as an admin would.
    parser.add_argument("--rclone-sftp-hashcheck", action="store_true", help="leave rclone's remote md5sum on")
    args = parser.parse_args()
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(ROOT / "mastosync")], check=True)
    bench = Bench(args)
    sshd = OpenSshServer().start()
    system = Path(tempfile.mkdtemp(prefix="mastosync-bench-system-", dir="/var/tmp"))
    try:
        rows, objects = make_instance(args.objects)
        total = sum(objects.values())
        write_tree(system, objects)
        db = asyncio.run(seed_db(bench.pg, rows))
        keys = bench.tmp / "keys.txt"
        keys.write_text("\n".join(objects) + "\n")
        print(f"machine: {os.cpu_count()} cores, load {os.getloadavg()[0]:.2f}; instance: {len(objects)} objects, "
              f"{total / 1e6:.0f} MB in {system}; concurrency {args.concurrency}")
        ssh = {"host": sshd.host, "port": sshd.port, "user": sshd.user, "key_file": str(sshd.client_key),
               "known_hosts": str(sshd.known_hosts())}
        rclone_sftp = {"RCLONE_CONFIG_SFTP_TYPE": "sftp", "RCLONE_CONFIG_SFTP_HOST": sshd.host,
                       "RCLONE_CONFIG_SFTP_PORT": str(sshd.port), "RCLONE_CONFIG_SFTP_USER": sshd.user,
                       "RCLONE_CONFIG_SFTP_KEY_FILE": str(sshd.client_key),
                       "RCLONE_CONFIG_SFTP_KNOWN_HOSTS_FILE": str(sshd.known_hosts()),
                       **({} if args.rclone_sftp_hashcheck else {"RCLONE_CONFIG_SFTP_DISABLE_HASHCHECK": "true"})}
        cases = [
            ("filesystem", {"kind": "filesystem", "root": str(system)}, None, str(system), {}),
            ("sftp", {"kind": "sftp", "root": str(system)}, ssh, f"sftp:{system}", rclone_sftp),
        ]
        for name, source, ssh_section, rclone_source, rclone_env in cases:
            if args.only and name != args.only:
                continue
            print(f"\n== {name} → S3, alternating ==")
            ratios = []
            for pair in range(args.pairs):
                order = ["mastosync", "rclone"] if pair % 2 == 0 else ["rclone", "mastosync"]
                found: dict[str, Measure] = {}
                for tool in order:
                    bucket = bench.fresh_bucket()
                    if tool == "mastosync":
                        figures = mastosync(bench, db, source, ssh_section, bucket, args.concurrency)
                    else:
                        figures = rclone(bench, rclone_source, rclone_env, keys, bucket, args.concurrency)
                    found[tool] = Measure(tool, *figures, len(objects), total)
                    print(found[tool].line())
                    bench.drop_bucket(bucket)
                ratios.append(found["mastosync"].rate / found["rclone"].rate)
            median = statistics.median(ratios)
            print(f"objects/s ratio mastosync/rclone, {name} (median of {len(ratios)}): {median:.2f}")
    finally:
        sshd.stop()
        bench.stop()
        subprocess.run(["rm", "-rf", str(system)], check=False)


if __name__ == "__main__":
    main()
