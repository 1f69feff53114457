"""Folders as Mastodon keeps them, and settings that name where they came from (issue 29):
a folder destination under umask 077, as root with and without an owner, inside the source;
one bucket under two spellings of its endpoint; a value from the environment named by its
variable. Through the CLI, against real folders, PostgreSQL and moto."""

from __future__ import annotations

import os
import pwd
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, MastodonDb, new_bucket, run_cli, write_config
from tests.services.s3 import S3Server
from tests.test_cutover_flow import db_execute, media_key, seed_media

IS_ROOT = os.geteuid() == 0


def run_with_umask(umask: int, *args: str, config: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MASTOSYNC_")}
    return subprocess.run([sys.executable, "-m", "mastosync", *args, "--config", str(config)], capture_output=True,
                          text=True, timeout=120, cwd=ROOT, env=env, preexec_fn=lambda: os.umask(umask))


async def test_a_folder_destination_is_what_mastodon_keeps_whatever_the_umask(
        tmp_path: Path, mastodon_db: MastodonDb, moto: S3Server) -> None:
    src = new_bucket(moto, "src")
    await db_execute(mastodon_db, "INSERT INTO accounts (id, username, suspended_at) VALUES (1, 'a', NULL), "
                     "(2, 'b', now())")
    objects = await seed_media(mastodon_db, moto, src, range(1, 5), account_of=lambda i: 1 + i % 2)
    system = tmp_path / "system"
    system.mkdir()
    owner = {"owner": "nobody"} if IS_ROOT else {}
    config = write_config(tmp_path / "config.toml", db=mastodon_db, source=(moto, src),
                          extra={"destination": {"kind": "filesystem", "root": str(system), **owner}})
    result = run_with_umask(0o077, "run", config=config)
    assert result.returncode == 0, result.stdout + result.stderr
    for folder in (p for p in system.rglob("*") if p.is_dir()):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o755, folder  # nginx can enter it
    for key in objects:
        path = system / key
        hidden = int(key.split("/")[4]) % 2 == 1  # account 2: suspended
        assert stat.S_IMODE(path.stat().st_mode) == (0o600 if hidden else 0o644), key
        if IS_ROOT:
            assert path.stat().st_uid == pwd.getpwnam("nobody").pw_uid and path.parent.stat().st_uid != 0


@pytest.mark.skipif(not IS_ROOT, reason="refusing root without destination.owner needs the tests to run as root")
async def test_root_without_an_owner_is_refused(tmp_path: Path, mastodon_db: MastodonDb, moto: S3Server) -> None:
    src = new_bucket(moto, "src")
    await seed_media(mastodon_db, moto, src, range(1, 2))
    system = tmp_path / "system"
    system.mkdir()
    config = write_config(tmp_path / "config.toml", db=mastodon_db, source=(moto, src),
                          extra={"destination": {"kind": "filesystem", "root": str(system)}})
    result = run_cli("run", config=config)
    assert result.returncode == 2, result.stdout + result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert "destination.owner is not set and mastosync runs as root" in line and 'owner = "mastodon"' in line
    assert list(system.iterdir()) == []  # nothing written


def test_a_destination_inside_the_source_folder_is_refused(tmp_path: Path) -> None:
    source = tmp_path / "public" / "system"
    (source / "backup").mkdir(parents=True)
    (tmp_path / "link").symlink_to(source)
    for destination in (source / "backup", tmp_path / "link"):
        config = write_config(tmp_path / "config.toml",
                              extra={"source": {"kind": "filesystem", "root": str(source)},
                                     "destination": {"kind": "filesystem", "root": str(destination)}})
        result = run_cli("run", config=config)
        assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert "destination" in result.stderr and ("inside the source" in result.stderr
                                                   or "same folder" in result.stderr)


async def test_one_bucket_under_two_spellings_of_its_endpoint(tmp_path: Path, mastodon_db: MastodonDb,
                                                              moto: S3Server) -> None:
    bucket = new_bucket(moto, "one")
    await seed_media(mastodon_db, moto, bucket, range(1, 3))
    config = write_config(tmp_path / "config.toml", db=mastodon_db, source=(moto, bucket), destination=(moto, bucket),
                          destination_endpoint=moto.endpoint.replace("127.0.0.1", "localhost"))
    result = run_cli("run", config=config)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "is the source's bucket" in result.stderr and "under another address" in result.stderr
    assert moto.open_uploads(bucket) == []  # the probe left nothing behind
    other = new_bucket(moto, "other")  # the same name check does not stop two real buckets
    config = write_config(tmp_path / "config.toml", db=mastodon_db, source=(moto, bucket), destination=(moto, other),
                          destination_endpoint=moto.endpoint.replace("127.0.0.1", "localhost"))
    assert run_cli("run", config=config).returncode == 0
    assert media_key(1) in moto.keys(other)


def test_a_value_from_the_environment_is_named_by_its_variable(tmp_path: Path) -> None:
    config = write_config(tmp_path / "config.toml",
                          extra={"source": {"kind": "filesystem", "root": str(tmp_path)},
                                 "destination": {"bucket": "new"}})
    result = run_cli("dry-run", config=config, env={"MASTOSYNC_SOURCE_SECRET_ACCESS_KEY": "s3cr3t-from-env"})
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert "MASTOSYNC_SOURCE_SECRET_ACCESS_KEY (the environment's source.secret_access_key)" in line, line
    assert "s3cr3t" not in line
    typo = run_cli("dry-run", config=config, env={"MASTOSYNC_SYNC_CONCURRENCY": "many"})
    assert "MASTOSYNC_SYNC_CONCURRENCY (the environment's sync.concurrency)" in typo.stderr


async def test_a_bucket_without_per_object_acls(tmp_path: Path, mastodon_db: MastodonDb, moto: S3Server) -> None:
    """acl = "": the run says once that hidden media cannot be made private there; a bucket that
    refuses ACL requests ("bucket owner enforced") is said once by audit and fix, not per object."""
    from tests.services.faultproxy import FaultProxy

    src, dst = new_bucket(moto, "src"), new_bucket(moto, "dst")
    await db_execute(mastodon_db, "INSERT INTO accounts (id, username, suspended_at) VALUES (1, 'a', now())")
    await seed_media(mastodon_db, moto, src, range(1, 4), account_of=lambda i: 1 if i == 1 else 2)
    config = write_config(tmp_path / "config.toml", db=mastodon_db, source=(moto, src), destination=(moto, dst),
                          extra={"destination": {"acl": ""}})
    result = run_cli("run", config=config)
    assert result.returncode == 0, result.stderr
    assert "not private: 2 objects Mastodon keeps private" in result.stdout and "kept private" not in result.stdout
    proxy = FaultProxy(moto.port).start()
    try:
        proxy.set_faults(error=1.0, error_answer=(400, "AccessControlListNotSupported"),
                         only_ops=("PutObjectAcl",))
        enforced = write_config(tmp_path / "enforced.toml", db=mastodon_db, source=(moto, src),
                                destination=(moto, dst), destination_endpoint=proxy.endpoint,
                                extra={"destination": {"acl": "public-read"}})
        # Refused when set: found by fix, said once.
        fixed = run_cli("fix", "--acl", "--type", "media_attachments", config=enforced)
        assert fixed.returncode == 0, fixed.stdout + fixed.stderr
        assert fixed.stdout.count("keeps no per-object ACL") == 1, fixed.stdout
        # Told by the bucket itself (Object Ownership): audit judges no ACL, so reports none wrong.
        moto.client.put_bucket_ownership_controls(
            Bucket=dst, OwnershipControls={"Rules": [{"ObjectOwnership": "BucketOwnerEnforced"}]})
        audited = run_cli("audit", "--headers", "--min-age", "0", "--json", "--type", "media_attachments",
                          config=enforced)
        assert audited.returncode == 0, audited.stdout + audited.stderr
        assert "BucketOwnerEnforced" in audited.stderr and '"wrong-acl"' not in audited.stdout
    finally:
        proxy.stop()
