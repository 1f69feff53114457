"""Each real-service fixture, proven by really using it."""

from __future__ import annotations

import asyncio

import asyncpg
import asyncssh
import pytest

from tests.conftest import MastodonDb, make_db, new_bucket
from tests.services.faultproxy import FaultProxy
from tests.services.latencyproxy import LatencyProxy
from tests.services.postgres import PostgresServer
from tests.services.s3 import S3Server
from tests.services.ssh import AsyncsshServer


async def test_postgres_runs_queries(mastodon_db: MastodonDb) -> None:
    conn = await mastodon_db.connect()
    try:
        assert await conn.fetchval("SELECT 6 * 7") == 42
        tables = {r["table_name"] for r in await conn.fetch(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'")}
        assert {"media_attachments", "accounts", "custom_emojis", "preview_cards"} <= tables
    finally:
        await conn.close()


@pytest.mark.parametrize("shape,has_column", [("4.6", True), ("4.2", False)])
async def test_schema_shapes(postgres: PostgresServer, shape: str, has_column: bool) -> None:
    db = await make_db(postgres, shape)
    conn = await db.connect()
    try:
        found = await conn.fetchval(
            "SELECT count(*) FROM information_schema.columns WHERE table_name = 'media_attachments'"
            " AND column_name = 'thumbnail_storage_schema_version'")
        assert bool(found) is has_column
    finally:
        await conn.close()


async def test_postgres_rejects_wrong_password(mastodon_db: MastodonDb) -> None:
    with pytest.raises(asyncpg.InvalidPasswordError):
        await asyncpg.connect(mastodon_db.server.dsn(mastodon_db.name, mastodon_db.user, "wrong"))


def test_s3_round_trip(s3: S3Server) -> None:
    bucket = new_bucket(s3, "roundtrip")
    body = bytes(range(256)) * 100
    s3.put(bucket, "dir/file name+é.png", body, "image/gif", acl="public-read")
    got, resp = s3.get(bucket, "dir/file name+é.png")
    assert got == body
    assert resp["ContentType"] == "image/gif"
    assert resp["CacheControl"] == "public, max-age=315576000, immutable"
    assert s3.keys(bucket) == {"dir/file name+é.png"}
    if s3.supports_acl:
        assert s3.public_read(bucket, "dir/file name+é.png")


def test_fault_proxy_injects_and_counts(moto: S3Server) -> None:
    import boto3
    from botocore.config import Config

    bucket = new_bucket(moto, "proxy")
    moto.put(bucket, "k", b"x" * 1000)
    proxy = FaultProxy(moto.port, seed=7).start()
    try:
        client = boto3.client(
            "s3", endpoint_url=proxy.endpoint, aws_access_key_id=moto.access_key,
            aws_secret_access_key=moto.secret_key, region_name="us-east-1",
            config=Config(retries={"total_max_attempts": 1}, s3={"addressing_style": "path"}))
        assert client.get_object(Bucket=bucket, Key="k")["Body"].read() == b"x" * 1000
        assert proxy.count("GetObject") == 1
        proxy.set_faults(slowdown=1.0)
        with pytest.raises(client.exceptions.ClientError, match="SlowDown"):
            client.get_object(Bucket=bucket, Key="k")
        proxy.set_faults(truncate=1.0)
        with pytest.raises(Exception):  # noqa: B017 - botocore raises its own error type for a short body
            client.get_object(Bucket=bucket, Key="k")["Body"].read()
        proxy.set_faults()
        proxy.set_down(True)
        with pytest.raises(Exception):  # noqa: B017 - connection refused
            client.head_object(Bucket=bucket, Key="k")
        proxy.set_down(False)
        assert client.head_object(Bucket=bucket, Key="k")["ContentLength"] == 1000
        assert proxy.counters.faults["slowdown"] == 1
        assert proxy.counters.faults["truncate"] == 1
    finally:
        proxy.stop()


def test_latency_proxy_delays_each_request_and_counts(moto: S3Server) -> None:
    import time

    import boto3
    from botocore.config import Config

    bucket = new_bucket(moto, "latency")
    body = bytes(range(256)) * 4096  # 1 MiB: a body in many chunks is delayed once, in order
    proxy = LatencyProxy(moto.port, latency=0.2).start()
    try:
        client = boto3.client(
            "s3", endpoint_url=proxy.endpoint, aws_access_key_id=moto.access_key,
            aws_secret_access_key=moto.secret_key, region_name="us-east-1",
            config=Config(retries={"total_max_attempts": 1}, s3={"addressing_style": "path"},
                          request_checksum_calculation="when_required"))
        client.put_object(Bucket=bucket, Key="big", Body=body)
        client.put_object(Bucket=bucket, Key="small", Body=b"x")
        started = time.monotonic()
        for _ in range(3):  # one keep-alive connection, one request after the other
            assert client.get_object(Bucket=bucket, Key="big")["Body"].read() == body
        elapsed = time.monotonic() - started
        assert client.head_object(Bucket=bucket, Key="small")["ContentLength"] == 1
    finally:
        proxy.stop()
    assert elapsed >= 0.6, elapsed  # 0.2 s added to each (a sleep is never shorter; a busy machine only adds)
    assert proxy.counts.operations == {"PutObject": 2, "GetObject": 3, "HeadObject": 1}
    assert [op for _, op in proxy.counts.timeline] == ["PutObject"] * 2 + ["GetObject"] * 3 + ["HeadObject"]


async def test_ssh_server_forwards_to_postgres(ssh_server: AsyncsshServer, mastodon_db: MastodonDb) -> None:
    async with asyncssh.connect(
        ssh_server.host, ssh_server.port, username=ssh_server.user,
        client_keys=[str(ssh_server.client_key)], known_hosts=str(ssh_server.known_hosts()),
    ) as conn:
        listener = await conn.forward_local_port("127.0.0.1", 0, mastodon_db.server.host,
                                                 mastodon_db.server.port)
        pg = await asyncpg.connect(host="127.0.0.1", port=listener.get_port(), user=mastodon_db.user,
                                   password=mastodon_db.password, database=mastodon_db.name)
        try:
            assert await pg.fetchval("SELECT current_database()") == mastodon_db.name
        finally:
            await pg.close()
            listener.close()
            await asyncio.sleep(0)
