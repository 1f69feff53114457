"""`mastosync check` through the CLI against real servers: a good configuration, and each broken
one (wrong password, wrong prefix, read-only destination, missing grant, a skewed clock)."""

from __future__ import annotations

import json
import re
import uuid
from pathlib import Path
from typing import Any

from tests.conftest import MastodonDb, new_bucket, run_cli, write_config
from tests.services.faultproxy import FaultProxy
from tests.services.postgres import PostgresServer
from tests.services.s3 import S3Server
from tests.test_cutover_flow import seed_media


def rows(stdout: str) -> dict[str, dict[str, Any]]:
    return {r["name"]: r for r in json.loads(stdout)["checks"]}


async def test_check_a_good_configuration(tmp_path: Path, mastodon_db: MastodonDb, moto: S3Server) -> None:
    src, dst = new_bucket(moto, "src"), new_bucket(moto, "dst")
    await seed_media(mastodon_db, moto, src, range(1, 8))
    config = write_config(tmp_path / "config.toml", db=mastodon_db, source=(moto, src), destination=(moto, dst))
    result = run_cli("check", config=config)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "✗" not in result.stdout
    for line in ("✓ database", "Mastodon 4.6 (newest migration 20260611150940)", "✓ grants",
                 "10 of 10 sampled objects present", "✓ destination", "multipart uploads allowed",
                 "ACL 'public-read' accepted", "✓ clock (destination)", "14 objects", "at the read speed of"):
        assert line in result.stdout, line
    assert moto.keys(dst) == set() and moto.open_uploads(dst) == []  # nothing left behind
    as_json = run_cli("check", "--json", config=config)
    assert as_json.returncode == 0 and json.loads(as_json.stdout)["ok"] is True


async def test_check_finds_each_broken_setting(tmp_path: Path, postgres: PostgresServer, mastodon_db: MastodonDb,
                                               moto: S3Server) -> None:
    src, dst = new_bucket(moto, "src"), new_bucket(moto, "dst")
    await seed_media(mastodon_db, moto, src, range(1, 4))
    proxy = FaultProxy(moto.port).start()
    try:
        def broken(**extra: dict[str, Any]) -> dict[str, dict[str, Any]]:
            config = write_config(tmp_path / f"{uuid.uuid4().hex}.toml", db=mastodon_db, source=(moto, src),
                                  destination=(moto, dst), destination_endpoint=proxy.endpoint, extra=extra)
            result = run_cli("check", "--json", config=config)
            assert result.returncode == 1, result.stdout + result.stderr
            return rows(result.stdout)

        wrong_password = broken(database={"password": "not-the-password"})
        assert wrong_password["database"]["ok"] is False
        assert "password authentication failed" in wrong_password["database"]["detail"]
        assert wrong_password["destination"]["ok"] is True  # the other checks still ran

        wrong_prefix = broken(source={"key_prefix": "mastodon"})["source"]
        assert wrong_prefix["ok"] is False and "none of the 6 sampled objects" in wrong_prefix["detail"]
        assert "media_attachments/files/000/000/001/" in wrong_prefix["detail"]  # what the source holds
        assert "source.key_prefix" in wrong_prefix["fix"]

        proxy.set_faults(error=1.0, error_answer=(403, "AccessDenied"), only_ops=("CreateMultipartUpload",))
        read_only = broken()["destination"]
        assert read_only["ok"] is False and "access denied" in read_only["detail"]
        proxy.set_faults()

        role = f"ro_{uuid.uuid4().hex[:6]}"
        postgres.psql(f"CREATE ROLE {role} LOGIN PASSWORD 'ro-pw'")
        postgres.psql(f"GRANT SELECT ON ALL TABLES IN SCHEMA public TO {role}; REVOKE SELECT ON backups FROM {role}",
                      database=mastodon_db.name)
        grants = broken(database={"user": role, "password": "ro-pw"})["grants"]
        assert grants["ok"] is False and grants["fix"] == f"GRANT SELECT ON backups TO {role};"

        proxy.behave(clock_offset=3600)  # a server whose clock is an hour ahead
        skewed = broken()["clock (destination)"]
        assert skewed["ok"] is False and re.search(r"\+3(599|600)s", skewed["detail"])
        assert "timedatectl" in skewed["fix"]
    finally:
        proxy.stop()


async def test_check_a_folder_destination_has_room(tmp_path: Path, mastodon_db: MastodonDb, moto: S3Server) -> None:
    import os

    src = new_bucket(moto, "src")
    await seed_media(mastodon_db, moto, src, range(1, 3))
    (tmp_path / "system").mkdir()
    owner = {"owner": "root"} if os.geteuid() == 0 else {}
    config = write_config(tmp_path / "config.toml", db=mastodon_db, source=(moto, src),
                          extra={"destination": {"kind": "filesystem", "root": str(tmp_path / "system"), **owner}})
    result = run_cli("check", "--json", config=config)
    assert result.returncode == 0, result.stdout + result.stderr
    space = rows(result.stdout)["free space"]
    assert space["ok"] is True and "free" in space["detail"] and "expected" in space["detail"]
