"""`mastosync run` and `verify` end to end, through the CLI as a user runs them, on both S3 servers."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import MastodonDb, new_bucket, run_cli, write_config
from tests.reliability.helpers import summary_row
from tests.services import instance
from tests.services.faultproxy import FaultProxy
from tests.services.postgres import PostgresServer
from tests.services.s3 import S3Server

CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")  # anything but tab and newline


@pytest.fixture
def proxy(s3: S3Server) -> Iterator[FaultProxy]:
    p = FaultProxy(s3.port).start()
    yield p
    p.stop()


def read_report(stdout: str) -> list[dict[str, Any]]:
    match = re.search(r"report: (\S+\.jsonl)", stdout)
    assert match, stdout
    return [json.loads(line) for line in Path(match.group(1)).read_text().splitlines()]


async def setup(tmp_path: Path, db: MastodonDb, s3: S3Server, proxy: FaultProxy, video: int = 6 * 2**20,
                extra: dict[str, Any] | None = None,
                source_prefix: str = "") -> tuple[instance.Instance, str, str, Path]:
    inst = instance.build(db.shape, video_size=video)
    src, dst = new_bucket(s3, "src"), new_bucket(s3, "dst")
    await instance.seed(inst, db, s3, src, prefix=source_prefix)
    # The destination goes through the counting proxy: a different endpoint, so bytes are
    # streamed (not server-side copied) and every request is counted.
    config = write_config(tmp_path / "config.toml", db=db, source=(s3, src), destination=(s3, dst),
                          destination_endpoint=proxy.endpoint,
                          extra={"destination": {"acl": "public-read"},
                                 # The 6 MiB video in two parts: the multipart path, with small bodies.
                                 "sync": {"progress_interval": 0.5, "multipart_threshold": "5MiB", "part_size": "5MiB"},
                                 **(extra or {})})
    return inst, src, dst, config


async def test_run_copies_exactly_what_the_database_references(
        tmp_path: Path, mastodon_db: MastodonDb, s3: S3Server, proxy: FaultProxy) -> None:
    inst, src, dst, config = await setup(tmp_path, mastodon_db, s3, proxy)
    result = run_cli("run", "--all", "--concurrency", "8", config=config)
    assert result.returncode == 0, result.stderr + result.stdout
    expected = inst.expected(present=True)
    assert s3.keys(dst) == set(expected)  # no orphan, nothing missing
    acl_sent = {path.removeprefix(f"/{dst}/"): acl for path, acl in proxy.counters.acl.items()}
    for key, obj in expected.items():
        data, resp = s3.get(dst, key)
        assert data == obj.data, key
        assert resp["ContentType"] == obj.content_type, key
        assert resp["CacheControl"] == obj.cache_control, key
        # Backups, imports and the media Mastodon made private never go out public.
        assert acl_sent[key] == ("private" if obj.private else "public-read"), key
        if s3.supports_acl:
            assert s3.public_read(dst, key) == (not obj.private), key
    report = read_report(result.stdout)
    assert {r["destination_key"] for r in report} == set(inst.expected(present=False))
    assert all(r["status"] == "missing" for r in report)
    assert s3.open_uploads(dst) == []
    assert not CONTROL.search(result.stdout + result.stderr), "control characters in non-terminal output"
    assert "progress:" in result.stdout  # plain progress lines, not a live display
    copied = sum(1 for o in expected.values())
    assert summary_row(result.stdout)["copied"] == str(copied)  # the summary's total row
    private = sum(o.private for o in expected.values())
    assert f"kept private: {private} objects" in result.stdout
    assert summary_row(result.stdout, "imports")["duration"] == "-"  # no such table on 4.6: never started
    assert summary_row(result.stdout, "media_attachments")["duration"] != "-"
    assert "MiB/s" in summary_row(result.stdout) or "MiB/s" in result.stdout
    assert f"database: Mastodon {mastodon_db.shape} (newest migration" in result.stdout

    # A second run over the synced destination moves no data.
    proxy.reset_counters()
    again = run_cli("run", "--all", config=config)
    assert again.returncode == 0, again.stderr
    assert proxy.count("PutObject", "UploadPart", "CopyObject") == 0
    assert proxy.count("ListObjects") > 0  # it did check, by listing key ranges …
    assert proxy.count("HeadObject") == 0  # … instead of one HEAD per object

    verified = run_cli("verify", "--all", config=config)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    # Complete: what to change in Mastodon comes next.
    assert f"S3_BUCKET={dst}" in verified.stdout and "location /system/ {" in verified.stdout


async def test_older_database_with_imports(tmp_path: Path, postgres: PostgresServer, moto: S3Server) -> None:
    """A Mastodon 4.2 database: the imports table is there, its files are copied, private."""
    from tests.conftest import make_db

    db = await make_db(postgres, "4.2")
    proxy = FaultProxy(moto.port).start()
    try:
        inst, src, dst, config = await setup(tmp_path, db, moto, proxy, video=100_000)
        result = run_cli("run", "--all", config=config)
        assert result.returncode == 0, result.stderr + result.stdout
        expected = inst.expected(present=True)
        assert "imports" in {o.type for o in expected.values()}
        assert moto.keys(dst) == set(expected)
        for key, obj in expected.items():
            assert moto.public_read(dst, key) == (not obj.private), key
        verified = run_cli("verify", "--type", "imports", config=config)
        assert verified.returncode == 0 and "imports" in verified.stdout, verified.stdout + verified.stderr
    finally:
        proxy.stop()


async def test_key_prefix_with_a_trailing_slash(tmp_path: Path, mastodon_db: MastodonDb, moto: S3Server) -> None:
    """S3_KEY_PREFIX=mastodon/ stores keys as mastodon//accounts/…; run, rerun and verify find them.

    On moto only: rclone serve s3 keeps objects as files, and a path cannot hold an
    empty segment, so it cannot store such keys at all.
    """
    proxy = FaultProxy(moto.port).start()
    try:
        inst, src, dst, config = await setup(tmp_path, mastodon_db, moto, proxy, video=100_000,
                                             source_prefix="mastodon/",
                                             extra={"source": {"key_prefix": "mastodon/"},
                                                    "destination": {"key_prefix": "new"}})
        result = run_cli("run", "--all", config=config)
        assert result.returncode == 0, result.stderr + result.stdout
        expected = inst.expected(present=True)
        assert moto.keys(src) >= {"mastodon//" + k for k in expected}
        assert moto.keys(dst) == {"new/" + k for k in expected}
        report = read_report(result.stdout)
        assert {r["source_key"] for r in report} == {"mastodon//" + k for k in inst.expected(present=False)}
        proxy.reset_counters()
        again = run_cli("run", "--all", config=config)
        assert again.returncode == 0 and proxy.count("PutObject", "UploadPart") == 0, again.stdout
        assert run_cli("verify", "--all", config=config).returncode == 0
    finally:
        proxy.stop()


async def test_verify_finds_deleted_and_truncated_objects(
        tmp_path: Path, mastodon_db: MastodonDb, s3: S3Server, proxy: FaultProxy) -> None:
    inst, src, dst, config = await setup(tmp_path, mastodon_db, s3, proxy, video=100_000)
    assert run_cli("run", config=config).returncode == 0
    present = sorted(inst.expected(present=True))
    deleted, truncated = present[0], present[1]
    s3.client.delete_object(Bucket=dst, Key=deleted)
    s3.put(dst, truncated, inst.expected()[truncated].data[:10])
    result = run_cli("verify", "--all", "--json", config=config)
    assert result.returncode == 1
    findings = [json.loads(line) for line in result.stdout.splitlines()]
    by_status: dict[str, set[str]] = {}
    for f in findings:
        by_status.setdefault(f["status"], set()).add(f["destination_key"])
    assert by_status["absent"] == {deleted}
    assert by_status["different"] == {truncated}
    assert by_status["missing"] == set(inst.expected(present=False))
    assert "incomplete" in result.stderr


async def test_selection_options(tmp_path: Path, mastodon_db: MastodonDb, s3: S3Server, proxy: FaultProxy) -> None:
    inst, src, dst, config = await setup(tmp_path, mastodon_db, s3, proxy, video=100_000)
    present = inst.expected(present=True)

    assert run_cli("run", "--type", "custom_emojis", "--type", "preview_cards", config=config).returncode == 0
    assert s3.keys(dst) == {k for k, o in present.items() if o.type in ("custom_emojis", "preview_cards")}

    assert run_cli("run", "--type", "media_attachments", "--limit", "2", "--restart", config=config).returncode == 0
    media_first_two = {k for k, o in present.items() if o.type == "media_attachments" and o.id in (1, 2)}
    assert {k for k in s3.keys(dst) if k.split("/")[0] in ("media_attachments", "cache")
            and "media_attachments" in k} == media_first_two

    dst2 = new_bucket(s3, "since")
    config2 = write_config(tmp_path / "since.toml", db=mastodon_db, source=(s3, src), destination=(s3, dst2),
                           destination_endpoint=proxy.endpoint)
    assert run_cli("run", "--since", "2026-05-01T00:00:00Z", config=config2).returncode == 0
    assert s3.keys(dst2) == {k for k, o in present.items() if o.updated_at >= datetime(2026, 5, 1)}

    dst3 = new_bucket(s3, "local")
    config3 = write_config(tmp_path / "local.toml", db=mastodon_db, source=(s3, src), destination=(s3, dst3),
                           destination_endpoint=proxy.endpoint, extra={"sync": {"include_remote": False}})
    assert run_cli("run", config=config3).returncode == 0
    assert s3.keys(dst3) == {k for k, o in present.items() if o.local}


async def test_unreachable_services_fail_up_front(tmp_path: Path, mastodon_db: MastodonDb,
                                                  rclone: S3Server) -> None:
    from tests.services.process import free_port

    src, dst = new_bucket(rclone, "src"), new_bucket(rclone, "dst")
    config = write_config(tmp_path / "c.toml", db=mastodon_db, source=(rclone, src), destination=(rclone, dst))
    cases = {
        "bucket does not exist": ({"MASTOSYNC_DESTINATION_BUCKET": "no-such-bucket-here"},
                                  "the bucket does not exist"),
        "wrong credentials": ({"MASTOSYNC_SOURCE_SECRET_ACCESS_KEY": "wrong-secret-xyz"}, "access denied"),
        "endpoint unreachable": ({"MASTOSYNC_DESTINATION_ENDPOINT": f"http://127.0.0.1:{free_port()}"},
                                 "cannot connect to the endpoint"),
        "database password": ({"MASTOSYNC_DATABASE_PASSWORD": "nope-pw-123"}, "password authentication failed"),
        "database unreachable": ({"MASTOSYNC_DATABASE_PORT": str(free_port())}, "cannot connect"),
    }
    secrets = ("wrong-secret-xyz", "nope-pw-123", rclone.secret_key, mastodon_db.password)
    for name, (env, message) in cases.items():
        result = run_cli("run", config=config, env=env, timeout=120)
        assert result.returncode == 2, (name, result.stderr)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in result.stderr, (name, result.stderr)
        assert message in lines[0], (name, lines[0])
        for secret in secrets:
            assert secret not in result.stderr + result.stdout, name
    assert rclone.keys(dst) == set()  # nothing was copied before the failure was found


async def test_since_last_catches_up_after_the_cut_over(tmp_path: Path, mastodon_db: MastodonDb,
                                                         moto: S3Server) -> None:
    """The bulk run records its start; `run --since last` copies what was written after it."""
    from datetime import UTC

    p = FaultProxy(moto.port).start()
    try:
        inst, src, dst, config = await setup(tmp_path, mastodon_db, moto, p, video=100_000)
        refused = run_cli("run", "--since", "last", config=config)
        assert refused.returncode == 2 and len(refused.stderr.strip().splitlines()) == 1
        assert "no completed run" in refused.stderr
        bulk = run_cli("run", "--all", config=config)
        assert bulk.returncode == 0, bulk.stderr
        started = re.search(r"started (\S+ \S+) UTC \(after switching Mastodon over", bulk.stdout)
        assert started, bulk.stdout
        # Written after the bulk run started: a new post's media (a row timestamped now).
        now = datetime.now(UTC).replace(tzinfo=None)
        key = "media_attachments/files/999/000/000/000/000/001/original/new.png"
        await mastodon_db.insert("media_attachments", [{
            "id": 999000000000000001, "file_file_name": "new.png", "file_content_type": "image/png",
            "file_file_size": 10, "file_updated_at": now, "file_storage_schema_version": 1, "updated_at": now}])
        moto.put(src, key, b"0123456789", "image/png")
        moto.put(src, key.replace("original", "small"), b"01234", "image/png")
        p.reset_counters()
        catch_up = run_cli("run", "--since", "last", config=config)
        assert catch_up.returncode == 0, catch_up.stderr
        assert p.count("PutObject") == 2  # only the new post's two objects
        assert moto.get(dst, key)[0] == b"0123456789"
        history = [json.loads(line) for line in (tmp_path / "state" / "runs.jsonl").read_text().splitlines()]
        assert [h["complete"] for h in history] == [True, True]
        # "last" is the bulk run's start on the database's clock, less sync.since_margin (5m), and said.
        since = datetime.fromisoformat(history[0]["baseline"]) - timedelta(minutes=5)
        assert history[1]["since"] == since.isoformat()
        assert f"--since last: {since:%Y-%m-%d %H:%M:%S} UTC" in catch_up.stdout
    finally:
        p.stop()


async def test_json_summary_and_event_log(tmp_path: Path, mastodon_db: MastodonDb, moto: S3Server) -> None:
    """`run --json` prints only the summary on stdout; --log-file has every event, one JSON per line."""
    p = FaultProxy(moto.port).start()
    try:
        inst, src, dst, config = await setup(tmp_path, mastodon_db, moto, p, video=100_000,
                                             extra={"sync": {"progress_interval": 0.1}})
        p.set_faults(internal=0.2, only_ops=("PutObject",))  # some retries to log
        log = tmp_path / "logs" / "run.jsonl"
        result = run_cli("run", "--json", "--log-file", str(log), config=config)
    finally:
        p.stop()
    assert result.returncode == 0, result.stderr
    (line,) = result.stdout.splitlines()  # nothing else on stdout
    summary = json.loads(line)
    present, missing = inst.expected(present=True), inst.expected(present=False)
    assert summary["total"]["copied"] == len(present) and summary["total"]["missing"] == len(missing)
    assert summary["complete"] is True and Path(summary["report"]).is_absolute()
    assert summary["types"]["backups"]["private"] == 1
    assert "progress:" in result.stderr  # the progress lines went to stderr
    events = [json.loads(x) for x in log.read_text().splitlines()]
    kinds = [e["event"] for e in events]
    assert kinds[0] == "start" and kinds[-1] == "summary" and "progress" in kinds and "retry" in kinds
    assert {e["destination_key"] for e in events if e["event"] == "object"} == set(missing)
    assert events[-1]["total"] == summary["total"]


async def test_progress_tracks_objects_and_bytes_copied(tmp_path: Path, mastodon_db: MastodonDb,
                                                        moto: S3Server) -> None:
    """A run made to last a few seconds: at every progress tick the fraction is objects and
    bytes done against totals known from the database before the first copy, it only grows,
    and at the end the totals are exact (the bytes' estimate corrected by real sizes)."""
    p = FaultProxy(moto.port).start()
    try:
        inst, src, dst, config = await setup(tmp_path, mastodon_db, moto, p, video=6 * 2**20,
                                             extra={"sync": {"progress_interval": 0.2, "concurrency": 2}})
        p.set_faults(latency=0.05)
        log = tmp_path / "run.jsonl"
        result = run_cli("run", "--log-file", str(log), config=config)
    finally:
        p.stop()
    assert result.returncode == 0, result.stderr
    events = [json.loads(x) for x in log.read_text().splitlines()]
    ticks = [e for e in events if e["event"] == "progress"]
    final = events[-1]["total"]
    objects = len(inst.objects)
    assert len(ticks) >= 5, len(ticks)
    assert all(t["objects_total"] == objects for t in ticks)  # known before the first copy
    fractions = [t["fraction"] for t in ticks]
    assert fractions == sorted(fractions) and 0 <= fractions[0] < fractions[-1] <= 1
    for t in ticks:  # half objects done, half bytes done of the (corrected) expected bytes
        expected = (t["objects"] / t["objects_total"] + t["bytes_done"] / t["bytes_expected"]) / 2
        assert abs(t["fraction"] - expected) < 1e-3
    present = sum(o.size for o in inst.expected(present=True).values())
    assert final["objects"] == objects and final["fraction"] == 1.0
    assert final["bytes_done"] == final["bytes_expected"] == present
    assert "ETA" in result.stdout and "MiB/s" in result.stdout


async def test_same_endpoint_copies_server_side_with_the_storage_class(tmp_path: Path, mastodon_db: MastodonDb,
                                                                        moto: S3Server) -> None:
    """Both buckets on one endpoint and account: the configuration alone makes it CopyObject
    (no byte through mastosync), with the destination's storage class and the ACL rules."""
    inst = instance.build(mastodon_db.shape, video_size=100_000)
    src, dst = new_bucket(moto, "src"), new_bucket(moto, "dst")
    await instance.seed(inst, mastodon_db, moto, src)
    proxy = FaultProxy(moto.port).start()
    try:
        config = write_config(tmp_path / "config.toml", db=mastodon_db, source=(moto, src), destination=(moto, dst),
                              source_endpoint=proxy.endpoint, destination_endpoint=proxy.endpoint,
                              extra={"destination": {"storage_class": "STANDARD_IA"}})
        result = run_cli("run", "--all", config=config)
        assert result.returncode == 0, result.stdout + result.stderr
        expected = inst.expected(present=True)
        assert proxy.count("CopyObject") >= len(expected) and proxy.count("GetObject", "PutObject") == 0
        assert "content proven: " + str(len(expected)) + " by server-side copy" in result.stdout
    finally:
        proxy.stop()
    assert moto.keys(dst) == set(expected)
    for key, obj in expected.items():
        data, resp = moto.get(dst, key)
        assert data == obj.data and resp["ContentType"] == obj.content_type, key
        assert resp.get("StorageClass") == "STANDARD_IA", key
        assert moto.public_read(dst, key) == (not obj.private), key
