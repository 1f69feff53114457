"""The cut-over, through the CLI against real servers: the catch-up, visibility that follows
the database, a wrong source setting, same size other bytes, a destination newer than the
source, failed records deleted later (issue 25)."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import MastodonDb, new_bucket, run_cli, write_config
from tests.services.faultproxy import FaultProxy
from tests.services.instance import body
from tests.services.s3 import S3Server


def media_key(i: int, style: str = "original", name: str | None = None) -> str:
    return f"media_attachments/files/000/{i // 1000:03d}/{i % 1000:03d}/{style}/{name or f'p{i}.jpg'}"


async def seed_media(db: MastodonDb, s3: S3Server, bucket: str, ids: range,
                     account_of: Callable[[int], int] = lambda i: 1, prefix: str = "",
                     size: Callable[[int], int] = lambda i: 2000 + 37 * i) -> dict[str, bytes]:
    """JPEG media (original + small) for `ids`, belonging to accounts by `account_of`."""
    objects: dict[str, bytes] = {}
    rows = []
    for i in ids:
        rows.append({"id": i, "file_file_name": f"p{i}.jpg", "file_content_type": "image/jpeg",
                     "file_file_size": size(i), "account_id": account_of(i)})
        for style, n in (("original", size(i)), ("small", 1500)):
            key = media_key(i, style)
            objects[key] = body(key, n, "image/jpeg")
            s3.put(bucket, f"{prefix}/{key}" if prefix else key, objects[key], "image/jpeg")
    await db.insert("media_attachments", rows)
    return objects


async def test_a_failed_record_deleted_later_is_done(tmp_path: Path, mastodon_db: MastodonDb,
                                                     moto: S3Server) -> None:
    src, dst = new_bucket(moto, "src"), new_bucket(moto, "dst")
    objects = await seed_media(mastodon_db, moto, src, range(1, 4))
    proxy = FaultProxy(moto.port).start()
    try:
        proxy.set_faults(error=1.0, error_answer=(403, "AccessDenied"), only_ops=("GetObject",))
        config = write_config(tmp_path / "config.toml", db=mastodon_db, source=(moto, src),
                              destination=(moto, dst), source_endpoint=proxy.endpoint)
        failed = run_cli("run", "--type", "media_attachments", config=config)
        assert failed.returncode == 1, failed.stderr + failed.stdout
        conn = await mastodon_db.connect()
        try:
            await conn.execute("DELETE FROM media_attachments WHERE id = 2")
        finally:
            await conn.close()
        proxy.set_faults()
        again = run_cli("run", "--type", "media_attachments", config=config)
        assert again.returncode == 0, again.stderr + again.stdout
        assert moto.keys(dst) == {k for k in objects if "/002/" not in k}
        state = json.loads(next((tmp_path / "state").glob("resume-*.json")).read_text())
        assert state["types"]["media_attachments"] == {**state["types"]["media_attachments"], "complete": True,
                                                       "failed_ids": []}
        status = run_cli("status", config=config)
        assert status.returncode == 0, status.stdout
    finally:
        proxy.stop()


async def db_execute(db: MastodonDb, sql: str, *args: Any) -> None:
    conn = await db.connect()
    try:
        await conn.execute(sql, *args)
    finally:
        await conn.close()


async def test_catch_up_after_a_resumed_run_misses_nothing(tmp_path: Path, mastodon_db: MastodonDb,
                                                           rclone: S3Server) -> None:
    """Interrupted at half, a copied record refreshed meanwhile, resumed to completion: the
    catch-up copies the refreshed file. A --limit trial and a --since in the future are no baseline."""
    import signal

    from tests.reliability.helpers import config_behind_proxy, fault_proxy, start_run, wait_stored

    src, dst = new_bucket(rclone, "src"), new_bucket(rclone, "dst")
    objects = await seed_media(mastodon_db, rclone, src, range(1, 201))
    with fault_proxy(rclone, latency=0.02) as proxy:
        config = config_behind_proxy(tmp_path, mastodon_db, rclone, src, dst, proxy, concurrency=4,
                                     progress_interval=0.5)
        trial = run_cli("run", "--limit", "5", config=config)
        assert trial.returncode == 0, trial.stderr
        refused = run_cli("run", "--since", "last", config=config)
        assert refused.returncode == 2 and "--limit run does not count" in refused.stderr
        proc = start_run(config)
        wait_stored(proxy, len(objects) // 2, proc)
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=60)
        assert proc.returncode == 130
        # Record 3 was copied before the stop; it gets a new file now (tootctl media refresh).
        assert media_key(3) in rclone.keys(dst)
        new_key = media_key(3, name="refreshed.jpg")
        rclone.put(src, new_key, b"new bytes", "image/jpeg")
        rclone.put(src, media_key(3, "small", "refreshed.jpg"), b"small", "image/jpeg")
        await db_execute(mastodon_db, "UPDATE media_attachments SET file_file_name = 'refreshed.jpg', "
                         "file_updated_at = now() AT TIME ZONE 'UTC', updated_at = now() AT TIME ZONE 'UTC' "
                         "WHERE id = 3")
        resumed = run_cli("run", config=config)
        assert resumed.returncode == 0 and "resuming" in resumed.stdout, resumed.stderr
        assert new_key not in rclone.keys(dst)  # the resumed run went on after its mark
        future = run_cli("run", "--since", "2099-01-01", config=config)
        assert future.returncode == 0, future.stderr
        catch_up = run_cli("run", "--since", "last", config=config)
        assert catch_up.returncode == 0, catch_up.stderr
        assert re.search(r"--since last: \S+ \S+ UTC: the start of the completed migration run", catch_up.stdout)
        assert rclone.get(dst, new_key)[0] == b"new bytes"
        verified = run_cli("verify", "--since", "last", config=config)
        assert verified.returncode == 0, verified.stdout + verified.stderr


async def test_visibility_follows_suspension_between_runs(tmp_path: Path, mastodon_db: MastodonDb,
                                                          moto: S3Server) -> None:
    """Account 1 is suspended and account 2 unsuspended after the bulk copy: the catch-up sets
    their media's ACLs again (read back), and verify checks what Mastodon hides."""
    src, dst = new_bucket(moto, "src"), new_bucket(moto, "dst")
    await db_execute(mastodon_db, "INSERT INTO accounts (id, username, suspended_at, updated_at) VALUES "
                     "(1, 'alice', NULL, now()), (2, 'bob', now(), now()), (3, 'carol', NULL, now())")
    objects = await seed_media(mastodon_db, moto, src, range(1, 13), account_of=lambda i: 1 + i % 3)
    owner = {key: 1 + int(key.split("/")[4]) % 3 for key in objects}
    config = write_config(tmp_path / "config.toml", db=mastodon_db, source=(moto, src), destination=(moto, dst),
                          extra={"destination": {"acl": "public-read"}})
    bulk = run_cli("run", "--all", config=config)
    assert bulk.returncode == 0, bulk.stderr
    assert all(moto.public_read(dst, k) == (owner[k] != 2) for k in objects)
    assert f"kept private: {sum(owner[k] == 2 for k in objects)} objects" in bulk.stdout
    # SuspendAccountService touches the account row only; the media rows stay as they were.
    await db_execute(mastodon_db, "UPDATE accounts SET suspended_at = now(), updated_at = now() WHERE id = 1")
    await db_execute(mastodon_db, "UPDATE accounts SET suspended_at = NULL, updated_at = now() WHERE id = 2")
    stale = run_cli("verify", "--all", config=config)
    assert stale.returncode == 1, stale.stdout
    assert "public at the destination, but Mastodon keeps it private" in stale.stdout
    catch_up = run_cli("run", "--all", "--since", "last", config=config)
    assert catch_up.returncode == 0, catch_up.stderr
    n = sum(owner[k] == 1 for k in objects)
    assert f"visibility: {n} made private, {n} made public again" in catch_up.stdout
    for key in objects:
        assert moto.public_read(dst, key) == (owner[key] != 1), key
    again = run_cli("run", "--all", config=config)  # nothing changed since: nothing to re-apply
    assert again.returncode == 0 and "visibility:" not in again.stdout, again.stdout
    assert f"kept private: {n} objects" in again.stdout  # every hidden object present, not only those copied now
    verified = run_cli("verify", "--all", config=config)
    assert verified.returncode == 0, verified.stdout
    assert f"hidden media checked: {n} objects" in verified.stdout


@pytest.mark.parametrize("mistake", ["key_prefix", "root"])
async def test_a_wrong_source_setting_is_not_a_success(tmp_path: Path, mastodon_db: MastodonDb, moto: S3Server,
                                                       mistake: str) -> None:
    dst = new_bucket(moto, "dst")
    if mistake == "key_prefix":
        src = new_bucket(moto, "src")
        await seed_media(mastodon_db, moto, src, range(1, 31))
        source = {"key_prefix": "mastodon"}  # the bucket has no prefix
        config = write_config(tmp_path / "config.toml", db=mastodon_db, source=(moto, src),
                              destination=(moto, dst), extra={"source": source})
    else:
        system = tmp_path / "live" / "public" / "system"
        rows = []
        for i in range(1, 31):
            rows.append({"id": i, "file_file_name": f"p{i}.jpg", "file_content_type": "image/jpeg",
                         "file_file_size": 100})
            for style in ("original", "small"):
                path = system / media_key(i, style)
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(b"x" * 100)
        await mastodon_db.insert("media_attachments", rows)
        (tmp_path / "live" / "public" / "robots.txt").write_text("User-agent: *\n")
        config = write_config(tmp_path / "config.toml", db=mastodon_db, destination=(moto, dst),
                              extra={"source": {"kind": "filesystem", "root": str(tmp_path / "live" / "public")}})
    for command in ("run", "verify"):
        result = run_cli(command, "--all", config=config)
        assert result.returncode == 2, result.stdout + result.stderr
        (line,) = [x for x in result.stderr.splitlines() if x.startswith("mastosync: error")]
        assert f"source.{mistake}" in line and re.search(r"expected for example (mastodon/)?media_attachments/", line)
        assert ("media_attachments/files/" if mistake == "key_prefix" else "system/media_attachments/") in line
        assert "S3_BUCKET=" not in result.stdout  # no cut-over settings for an empty source
    status = run_cli("status", config=config)
    assert status.returncode == 1, status.stdout
    # The files really gone: said so, the run goes on and reports them missing.
    accepted = run_cli("run", "--all", "--accept-missing", config=config)
    assert accepted.returncode == 0 and "missing" in accepted.stdout, accepted.stderr


async def test_same_size_other_bytes_and_newer_at_the_destination(tmp_path: Path, mastodon_db: MastodonDb,
                                                                  moto: S3Server) -> None:
    import time

    src, dst = new_bucket(moto, "src"), new_bucket(moto, "dst")
    objects = await seed_media(mastodon_db, moto, src, range(1, 5))
    config = write_config(tmp_path / "config.toml", db=mastodon_db, source=(moto, src), destination=(moto, dst))
    assert run_cli("run", config=config).returncode == 0
    time.sleep(1.1)  # Last-Modified has whole seconds
    # The source's object replaced by other bytes of the same size (newer at the source) …
    changed = media_key(1)
    other = bytes(reversed(objects[changed]))
    moto.put(src, changed, other, "image/jpeg")
    # … and one that Mastodon rewrote at the destination after the switch (another size, newer there).
    rewritten = media_key(2)
    moto.put(dst, rewritten, b"processed by Mastodon", "image/jpeg")
    plain = run_cli("verify", config=config)
    assert "compared: sizes only" in plain.stdout
    skipped = run_cli("run", config=config)
    assert skipped.returncode == 0, skipped.stderr
    assert moto.get(dst, changed)[0] == objects[changed]  # same size: a plain run skips it
    assert moto.get(dst, rewritten)[0] == b"processed by Mastodon"
    assert "newer at the destination, kept: 1 objects" in skipped.stdout
    assert run_cli("verify", "--checksum", config=config).returncode == 1
    repaired = run_cli("run", "--checksum", config=config)
    assert repaired.returncode == 0, repaired.stderr
    assert moto.get(dst, changed)[0] == other
    assert moto.get(dst, rewritten)[0] == b"processed by Mastodon"
    found = re.search(r"report: (\S+)", repaired.stdout)
    assert found, repaired.stdout
    report = [json.loads(x) for x in Path(found[1]).read_text().splitlines()]
    assert [(r["status"], r["destination_key"]) for r in report] == [("kept", rewritten)]


async def test_objects_written_only_at_the_destination_after_the_switch(
        tmp_path: Path, mastodon_db: MastodonDb, moto: S3Server) -> None:
    """After the switch Mastodon writes new media to the new bucket: the catch-up finds them
    there and not at the source; they are neither missing nor a sign of a wrong setting."""
    src, dst = new_bucket(moto, "src"), new_bucket(moto, "dst")
    await seed_media(mastodon_db, moto, src, range(1, 3))
    config = write_config(tmp_path / "config.toml", db=mastodon_db, source=(moto, src), destination=(moto, dst))
    assert run_cli("run", config=config).returncode == 0
    later = {}
    rows = []
    for i in range(100, 170):
        rows.append({"id": i, "file_file_name": f"p{i}.jpg", "file_content_type": "image/jpeg",
                     "file_file_size": 10, "file_updated_at": datetime.now(UTC).replace(tzinfo=None)})
        for style in ("original", "small"):
            later[media_key(i, style)] = b"0123456789"
            moto.put(dst, media_key(i, style), b"0123456789", "image/jpeg")
    await mastodon_db.insert("media_attachments", rows)
    catch_up = run_cli("run", "--since", "last", config=config)
    assert catch_up.returncode == 0, catch_up.stderr + catch_up.stdout
    verified = run_cli("verify", config=config)
    assert verified.returncode == 0, verified.stdout + verified.stderr
