"""`audit`, `fix` and `verify --checksum` on a bucket an earlier tool migrated badly."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from mastosync.storage.base import ObjectAttrs
from tests.conftest import MastodonDb, new_bucket, run_cli, write_config
from tests.services import instance
from tests.services.faultproxy import FaultProxy
from tests.services.s3 import S3Server

MASTODON_CC = "public, max-age=315576000, immutable"
# As root, a folder destination needs its owner said (even "root").
ROOT_OWNER = {"owner": "root"} if os.geteuid() == 0 else {}


async def badly_migrated(tmp_path: Path, db: MastodonDb,
                         s3: S3Server) -> tuple[instance.Instance, str, str, dict[str, Any]]:
    """What `rclone copy` of the whole bucket leaves: orphans copied (and more under cache/ and
    another folder), headers lost on some objects, ACLs lost on others, a few files missing,
    one of another size."""
    inst = instance.build(db.shape, video_size=100_000)
    src, dst = new_bucket(s3, "src"), new_bucket(s3, "dst")
    await instance.seed(inst, db, s3, src)
    expected = sorted(inst.expected(present=True).items())
    missing = {expected[1][0], expected[7][0]}
    wrong_headers = {k for k, _ in expected[10:14]}
    wrong_acl = {k for k, o in expected if o.private and k not in missing}  # kept private by Mastodon, made public
    wrong_acl |= {k for k, o in expected[20:23] if not o.private}  # public ones made private
    resized = next(k for k, o in expected[30:] if o.size > 100 and k not in wrong_acl)
    for key, obj in expected:
        if key in missing:
            continue
        data = obj.data[:50] if key == resized else obj.data
        headers = ("binary/octet-stream", None) if key in wrong_headers else (obj.content_type, obj.cache_control)
        acl = ("public-read" if obj.private else "private") if key in wrong_acl else (
            "private" if obj.private else "public-read")
        s3.put(dst, key, data, headers[0], headers[1], acl=acl)
    orphans = [*inst.orphans, "cache/accounts/avatars/999/999/999/original/gone.png", "backups-old/dump.zip"]
    for key in orphans:
        s3.put(dst, key, b"orphan " + key.encode(), "image/png")
    return inst, src, dst, {"missing": missing, "wrong_headers": wrong_headers, "wrong_acl": wrong_acl,
                            "resized": resized, "orphans": set(orphans)}


def findings(stdout: str, status: str) -> set[str]:
    return {e["key"] for e in map(json.loads, stdout.splitlines()) if e["status"] == status}


async def test_audit_fix_and_audit_again(tmp_path: Path, mastodon_db: MastodonDb, moto: S3Server) -> None:
    inst, src, dst, bad = await badly_migrated(tmp_path, mastodon_db, moto)
    proxy = FaultProxy(moto.port).start()
    try:
        config = write_config(tmp_path / "config.toml", db=mastodon_db, source=(moto, src), destination=(moto, dst),
                              destination_endpoint=proxy.endpoint, extra={"destination": {"acl": "public-read"}})
        # Just written, every object is younger than the default --min-age: none is judged an orphan.
        fresh = run_cli("audit", "--json", config=config)
        assert fresh.returncode == 1, fresh.stderr
        assert f"not judged: {len(moto.keys(dst))} objects written less than 60 minutes" in fresh.stderr
        assert f"orphans: 0 of {len(moto.keys(dst))} keys listed" in fresh.stderr
        audit = run_cli("audit", "--headers", "--json", "--min-age", "0", config=config)
        assert audit.returncode == 1, audit.stderr  # the destination lacks what the source has
        # Absent: what the earlier copy lost (the source has it: a gap). Missing: what the old
        # bucket never had either (as in run and verify: reported, not an error).
        assert findings(audit.stdout, "absent") == bad["missing"]
        assert findings(audit.stdout, "missing") == set(inst.expected(present=False))
        assert findings(audit.stdout, "size-mismatch") == {bad["resized"]}
        assert findings(audit.stdout, "wrong-headers") == bad["wrong_headers"]
        assert findings(audit.stdout, "wrong-acl") == bad["wrong_acl"]
        listed = re.search(r"listed in (\S+\.jsonl)", audit.stderr)
        assert listed, audit.stderr
        orphans = {json.loads(line)["key"] for line in Path(listed.group(1)).read_text().splitlines()}
        assert orphans == bad["orphans"]
        assert "mastosync never deletes them" in audit.stderr and "rclone delete" in audit.stderr
        assert proxy.count("PutObject", "CopyObject", "PutObjectAcl", "DeleteObject") == 0  # read-only

        proxy.reset_counters()
        preview = run_cli("fix", "--acl", "--headers", "--dry-run", config=config)
        assert preview.returncode == 1 and proxy.count("CopyObject", "PutObjectAcl") == 0, preview.stderr
        would = len(bad["wrong_headers"] | bad["wrong_acl"])
        assert f"fix --dry-run: would fix {would} objects; nothing was changed" in preview.stdout

        proxy.reset_counters()
        fixed = run_cli("fix", "--acl", "--headers", config=config)
        assert fixed.returncode == 1, fixed.stdout + fixed.stderr  # still missing two: fix does not copy
        touched = {path.split("/", 2)[2] for path in proxy.counters.acl} - {".mastosync-write-check"}
        assert touched == bad["wrong_headers"] | bad["wrong_acl"]  # exactly those, none already right
        assert proxy.count("CopyObject") == len(bad["wrong_headers"])

        again = run_cli("audit", "--headers", "--json", "--min-age", "0", config=config)
        assert findings(again.stdout, "wrong-headers") == set() and findings(again.stdout, "wrong-acl") == set()
        for key in bad["wrong_headers"]:
            obj = inst.expected()[key]
            _, resp = moto.get(dst, key)
            assert resp["ContentType"] == instance.SNIFFED.get(obj.content_type, obj.content_type), key
            assert resp["CacheControl"] == MASTODON_CC, key
        for key in bad["wrong_acl"]:
            assert moto.public_read(dst, key) == (not inst.expected()[key].private), key
    finally:
        proxy.stop()


async def test_verify_checksum_catches_same_size_other_bytes(tmp_path: Path, mastodon_db: MastodonDb,
                                                            moto: S3Server) -> None:
    inst = instance.build(mastodon_db.shape, video_size=100_000)
    src, dst = new_bucket(moto, "src"), new_bucket(moto, "dst")
    await instance.seed(inst, mastodon_db, moto, src)
    config = write_config(tmp_path / "config.toml", db=mastodon_db, source=(moto, src), destination=(moto, dst),
                          destination_endpoint=moto.endpoint.replace("127.0.0.1", "localhost"))
    assert run_cli("run", "--all", config=config).returncode == 0
    key, obj = next((k, o) for k, o in sorted(inst.expected().items()) if o.size > 100)
    moto.put(dst, key, bytes(reversed(obj.data)), obj.content_type)  # the same size, other bytes
    plain = run_cli("verify", "--all", config=config)
    assert plain.returncode == 0  # sizes alone cannot tell
    checked = run_cli("verify", "--all", "--checksum", config=config)
    assert checked.returncode == 1 and key in checked.stdout and "other content" in checked.stdout
    assert "by equal MD5 ETags" in checked.stdout


async def test_fix_over_5_gib_copies_in_parts(moto: S3Server, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Headers of an object over CopyObject's limit are set by a multipart copy of itself
    (limits lowered to test it small): no byte through mastosync, the bytes intact."""
    import os

    import mastosync.storage.s3.bucket as s3
    from mastosync.config.settings import DestinationSettings

    monkeypatch.setattr(s3, "MAX_COPY_OBJECT", 6 * 2**20)
    monkeypatch.setattr(s3, "COPY_PART_MIN", 5 * 2**20)
    bucket = new_bucket(moto, "big")
    data = os.urandom(12 * 2**20)
    moto.put(bucket, "v.mp4", data, "binary/octet-stream", None, acl="private")
    proxy = FaultProxy(moto.port).start()
    try:
        settings = DestinationSettings(bucket=bucket, endpoint=proxy.endpoint, access_key_id=moto.access_key,
                                       secret_access_key=moto.secret_key)
        async with s3.Bucket(settings, 4) as b:
            # Written as the destination's acl says (public-read), not private.
            await b.set_attrs("v.mp4", ObjectAttrs("video/mp4", MASTODON_CC, private=False), len(data))
        assert proxy.count("UploadPartCopy") == 3 and proxy.count("GetObject", "UploadPart", "PutObject") == 0
    finally:
        proxy.stop()
    body, resp = moto.get(bucket, "v.mp4")
    assert body == data and (resp["ContentType"], resp["CacheControl"]) == ("video/mp4", MASTODON_CC)
    assert moto.public_read(bucket, "v.mp4") and moto.open_uploads(bucket) == []


async def test_audit_and_fix_a_folder(tmp_path: Path, mastodon_db: MastodonDb) -> None:
    """Local storage: a suspended account's file left readable by all, an orphan, a missing file."""
    import stat

    inst = instance.build(mastodon_db.shape, video_size=1000)
    await instance.seed(inst, mastodon_db, None, "")
    system = tmp_path / "system"
    instance.seed_folder(inst, system)
    instance.seed_folder(inst, tmp_path / "old")  # the source, where the lost file still is
    hidden = next(k for k, o in sorted(inst.expected().items()) if o.private and o.type == "media_attachments")
    (system / hidden).chmod(0o644)
    lost = next(k for k, o in sorted(inst.expected().items()) if not o.private and o.type == "accounts")
    (system / lost).unlink()
    (system / "stray.txt").write_text("x")
    config = tmp_path / "config.toml"
    from tests.conftest import to_toml

    config.write_text(to_toml({
        "database": {"host": mastodon_db.server.host, "port": mastodon_db.server.port, "name": mastodon_db.name,
                     "user": mastodon_db.user, "password": mastodon_db.password},
        "source": {"kind": "filesystem", "root": str(tmp_path / "old")},
        "destination": {"kind": "filesystem", "root": str(system), **ROOT_OWNER},
        "sync": {"state_dir": str(tmp_path / "state")}}))
    audit = run_cli("audit", "--headers", "--json", "--min-age", "0", config=config)
    assert audit.returncode == 1, audit.stderr
    assert findings(audit.stdout, "wrong-acl") == {hidden}
    assert findings(audit.stdout, "absent") == {lost}
    assert findings(audit.stdout, "missing") == set(inst.expected(present=False))
    listed = Path(re.search(r"listed in (\S+\.jsonl)", audit.stderr).group(1))  # type: ignore[union-attr]
    assert {json.loads(line)["key"] for line in listed.read_text().splitlines()} == {*inst.orphans, "stray.txt"}
    fixed = run_cli("fix", "--acl", config=config)
    assert fixed.returncode == 1 and stat.S_IMODE((system / hidden).stat().st_mode) == 0o600


async def test_audit_and_fix_the_source_side(tmp_path: Path, mastodon_db: MastodonDb, moto: S3Server) -> None:
    """`--side source` on a bucket and on a folder: read, judged, fixed in place; "missing"
    there (the old bucket never had it) is reported, not an error."""
    from tests.conftest import to_toml

    inst = instance.build(mastodon_db.shape, video_size=1000)
    src = new_bucket(moto, "src")
    await instance.seed(inst, mastodon_db, moto, src)
    wrong = next(k for k, o in sorted(inst.expected().items()) if not o.private)
    moto.put(src, wrong, inst.expected()[wrong].data, "binary/octet-stream", None, acl="private")
    bucket_config = write_config(tmp_path / "bucket.toml", db=mastodon_db, source=(moto, src),
                                 destination=(moto, new_bucket(moto, "dst")), extra={"source": {"key_prefix": ""}})
    audit = run_cli("audit", "--side", "source", "--headers", "--json", "--min-age", "0", config=bucket_config)
    assert audit.returncode == 0, audit.stderr
    assert findings(audit.stdout, "missing") == set(inst.expected(present=False))
    assert wrong in findings(audit.stdout, "wrong-acl") and wrong in findings(audit.stdout, "wrong-headers")
    fixed = run_cli("fix", "--side", "source", "--acl", "--headers", config=bucket_config)
    assert fixed.returncode == 0, fixed.stderr + fixed.stdout
    assert moto.public_read(src, wrong) and moto.get(src, wrong)[1]["ContentType"] != "binary/octet-stream"

    old = tmp_path / "old"
    instance.seed_folder(inst, old)
    folder_config = tmp_path / "folder.toml"
    folder_config.write_text(to_toml({
        "database": {"host": mastodon_db.server.host, "port": mastodon_db.server.port, "name": mastodon_db.name,
                     "user": mastodon_db.user, "password": mastodon_db.password},
        "source": {"kind": "filesystem", "root": str(old)},
        "destination": {"kind": "filesystem", "root": str(tmp_path / "new"), **ROOT_OWNER},
        "sync": {"state_dir": str(tmp_path / "state")}}))
    (tmp_path / "new").mkdir()
    for command in (["audit", "--headers"], ["fix", "--acl"]):
        result = run_cli(*command, "--side", "source", config=folder_config)
        assert result.returncode == 0, result.stdout + result.stderr
        assert "Traceback" not in result.stderr


async def test_fix_keeps_what_the_object_has(tmp_path: Path, mastodon_db: MastodonDb, moto: S3Server) -> None:
    """CopyObject onto itself resets storage class, encryption, tags and redirect unless sent
    again: fix --headers keeps them, read back; an SSE-C object is skipped with a line; a
    versioned bucket is said once."""
    from tests.test_cutover_flow import media_key

    src, dst = new_bucket(moto, "src"), new_bucket(moto, "dst")
    moto.client.put_bucket_versioning(Bucket=dst, VersioningConfiguration={"Status": "Enabled"})
    await mastodon_db.insert("media_attachments", [
        {"id": i, "file_file_name": f"p{i}.jpg", "file_content_type": "image/jpeg", "file_file_size": 10}
        for i in (1, 2, 3)])
    data = b"\xff\xd8\xff\xe0 jpeg"
    data = data + b"x" * (10 - len(data))
    for i, extra in ((1, {"StorageClass": "STANDARD_IA", "Tagging": "kept=yes",
                          "WebsiteRedirectLocation": "/elsewhere"}),
                     (2, {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": "arn:aws:kms:us-east-1:1:key/abc"}),
                     (3, {})):
        for style in ("original", "small"):
            moto.client.put_object(Bucket=dst, Key=media_key(i, style), Body=data, ContentType="binary/octet-stream",
                                   ACL="public-read", **extra)
            moto.put(src, media_key(i, style), data, "image/jpeg")
    config = write_config(tmp_path / "config.toml", db=mastodon_db, source=(moto, src), destination=(moto, dst),
                          extra={"destination": {"acl": "public-read"}})
    # SSE-C first: moto neither demands the key nor says an object has one, so a proxy gives
    # every HEAD answer the header a provider sends for such an object. Nothing is rewritten.
    proxy = FaultProxy(moto.port).start()
    try:
        proxy.behave(response_headers={"x-amz-server-side-encryption-customer-algorithm": "AES256"})
        sse_c = write_config(tmp_path / "sse-c.toml", db=mastodon_db, source=(moto, src), destination=(moto, dst),
                             destination_endpoint=proxy.endpoint, extra={"destination": {"acl": "public-read"}})
        skipped = run_cli("fix", "--headers", "--type", "media_attachments", config=sse_c)
        assert skipped.returncode == 0, skipped.stdout + skipped.stderr
        assert "skipped: 6 objects encrypted with a customer key (SSE-C)" in skipped.stdout
        assert proxy.count("CopyObject") == 0
    finally:
        proxy.stop()
    fixed = run_cli("fix", "--headers", "--type", "media_attachments", config=config)
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr
    assert "keeps versions" in fixed.stdout
    for style in ("original", "small"):
        one = moto.client.head_object(Bucket=dst, Key=media_key(1, style))
        assert one["ContentType"] == "image/jpeg" and one["StorageClass"] == "STANDARD_IA"
        assert one["WebsiteRedirectLocation"] == "/elsewhere"
        tags = moto.client.get_object_tagging(Bucket=dst, Key=media_key(1, style))["TagSet"]
        assert tags == [{"Key": "kept", "Value": "yes"}]
        two = moto.client.head_object(Bucket=dst, Key=media_key(2, style))
        assert two["ContentType"] == "image/jpeg" and two["ServerSideEncryption"] == "aws:kms"
        assert two["SSEKMSKeyId"].endswith("key/abc")
        assert moto.client.head_object(Bucket=dst, Key=media_key(3, style))["ContentType"] == "image/jpeg"
