"""The cut-over, through the CLI against real servers: the catch-up, visibility that follows
the database, a wrong source setting, same size other bytes, a destination newer than the
source, failed records deleted later (issue 25)."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import MastodonDb, new_bucket, run_cli, write_config
from tests.services.faultproxy import FaultProxy
from tests.services.instance import body
from tests.services.s3 import S3Server


def media_key(i: int, style: str = "original", name: str | None = None) -> str:
    return f"media_attachments/files/000/{i // 1000:03d}/{i % 1000:03d}/{style}/{name or f'p{i}.jpg'}"


async def seed_media(db: MastodonDb, s3: S3Server, bucket: str, ids: range, account_of=lambda i: 1,
                     prefix: str = "", size=lambda i: 2000 + 37 * i) -> dict[str, bytes]:
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
