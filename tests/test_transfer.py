"""Copying single objects between real S3 servers (moto and rclone), with and without faults."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

from mastosync.config.settings import BucketSettings, DestinationSettings
from mastosync.config.units import MiB
from mastosync.engine.memory import MemoryBudget
from mastosync.engine.outcome import Status
from mastosync.engine.transfer import Copier
from mastosync.storage.retry import RetryPolicy
from mastosync.storage.s3 import Bucket
from tests.conftest import new_bucket, start_server
from tests.services.faultproxy import FaultProxy
from tests.services.instance import CC, body
from tests.services.s3 import SERVERS, S3Server

ODD_KEYS = ["a b/c d.png", "ünï/cödé 写真.jpg", "plus+sign.png", "at@sign.png", "it's.png", "(paren) [x].gif"]

@pytest.fixture(params=list(SERVERS))
def s3(request: pytest.FixtureRequest, s3_servers: dict[str, S3Server]) -> S3Server:
    """This storage suite runs against every S3 server the tests can start."""
    return start_server(request.param, s3_servers)



def bucket_settings(server: S3Server, bucket: str, endpoint: str | None = None, **extra: Any) -> dict[str, Any]:
    return {"bucket": bucket, "endpoint": endpoint or server.endpoint, "region": "us-east-1",
            "access_key_id": server.access_key, "secret_access_key": server.secret_key, **extra}


@asynccontextmanager
async def copier(server: S3Server, src: str, dst: str, endpoint: str | None = None, acl: str = "public-read",
                 retries: int = 8, server_side: bool = False, budget: int = 1024 * MiB,
                 concurrency: int = 16) -> AsyncIterator[Copier]:
    source = BucketSettings(**bucket_settings(server, src, endpoint))
    destination = DestinationSettings(**bucket_settings(server, dst, endpoint, acl=acl))
    async with Bucket(source, concurrency, timeout=20) as s, Bucket(destination, concurrency, timeout=20) as d:
        yield Copier(s, d, multipart_threshold=16 * MiB, part_size=8 * MiB,
                     policy=RetryPolicy(retries=retries, base=0.01, cap=0.2), budget=MemoryBudget(budget),
                     server_side=d if server_side else None)


def seed(server: S3Server, bucket: str, items: dict[str, tuple[int, str]]) -> dict[str, bytes]:
    data = {}
    for key, (size, content_type) in items.items():
        data[key] = body(key, size, content_type)
        server.put(bucket, key, data[key], content_type, acl="public-read")
    return data


async def test_copies_are_byte_identical_with_headers(s3: S3Server) -> None:
    src, dst = new_bucket(s3, "src"), new_bucket(s3, "dst")
    items = {"empty.bin": (0, "application/octet-stream"), "small.jpg": (1234, "image/jpeg"),
             # static GIF: GIF bytes under a .png key; the type must come from the source object
             "media_attachments/files/000/000/001/small/x.png": (5000, "image/gif"),
             "exact-threshold.bin": (16 * MiB, "application/octet-stream"),
             "video.mp4": (40 * MiB + 123, "video/mp4")}
    items.update({k: (777, "image/png") for k in ODD_KEYS})
    data = seed(s3, src, items)
    async with copier(s3, src, dst) as c:
        outcomes = await asyncio.gather(*(c.copy(k, k) for k in data))
    assert [o.status for o in outcomes] == [Status.COPIED] * len(data), [o.error for o in outcomes]
    assert sum(o.bytes for o in outcomes) == sum(len(v) for v in data.values())
    assert s3.keys(dst) == set(data)
    for key, expected in data.items():
        got, resp = s3.get(dst, key)
        assert got == expected, key
        assert resp["ContentType"] == items[key][1]
        assert resp["CacheControl"] == CC
        if s3.supports_acl:
            assert s3.public_read(dst, key)
    assert s3.open_uploads(dst) == []


async def test_missing_skipped_and_permanent(s3: S3Server) -> None:
    src, dst = new_bucket(s3, "src"), new_bucket(s3, "dst")
    seed(s3, src, {"here.png": (100, "image/png")})
    async with copier(s3, src, dst) as c:
        missing = await c.copy("not-here.png", "not-here.png")
        assert (missing.status, missing.attempts) == (Status.MISSING, 1)
        assert (await c.copy("here.png", "here.png")).status == Status.COPIED
        again = await c.copy("here.png", "here.png")
        assert (again.status, again.bytes) == (Status.SKIPPED, 0)
    # Another size at the destination, written before the source's (Last-Modified has whole
    # seconds): an earlier version's copy, so copied again …
    s3.put(dst, "here.png", b"different size")
    time.sleep(1.1)
    seed(s3, src, {"here.png": (100, "image/png")})
    async with copier(s3, src, dst) as c:
        assert (await c.copy("here.png", "here.png")).status == Status.COPIED
    assert s3.get(dst, "here.png")[0] == body("here.png", 100, "image/png")
    # … but written after it, by Mastodon at the destination after the switch: kept.
    time.sleep(1.1)
    s3.put(dst, "here.png", b"rewritten there")
    async with copier(s3, src, dst) as c:
        kept = await c.copy("here.png", "here.png")
    assert (kept.status, kept.note) == (Status.SKIPPED, "newer at the destination, kept")
    assert s3.get(dst, "here.png")[0] == b"rewritten there"
    async with copier(s3, src, "no-such-bucket-mastosync") as c:
        failed = await c.copy("here.png", "here.png")
    assert failed.status == Status.FAILED and failed.attempts == 1 and "NoSuchBucket" in (failed.error or "")


async def test_no_acl_header_when_acl_is_empty_and_no_expect(moto: S3Server) -> None:
    src, dst = new_bucket(moto, "src"), new_bucket(moto, "dst")
    seed(moto, src, {"a.png": (100, "image/png"), "big.bin": (17 * MiB, "application/octet-stream")})
    proxy = FaultProxy(moto.port).start()
    try:
        async with copier(moto, src, dst, endpoint=proxy.endpoint, acl="") as c:
            assert (await c.copy("a.png", "a.png")).status == Status.COPIED
            assert (await c.copy("big.bin", "big.bin")).status == Status.COPIED
        headers = proxy.counters.headers
        assert headers["PutObject x-amz-acl"] == 0 and headers["CreateMultipartUpload x-amz-acl"] == 0
        assert not any(h.endswith(" expect") for h in headers)
        assert headers["PutObject content-md5"] == 1  # the source ETag is a plain MD5
        assert headers["UploadPart content-md5"] == 3
        assert not moto.public_read(dst, "a.png")
        async with copier(moto, src, dst, endpoint=proxy.endpoint, acl="public-read") as c:
            await c.copy("a.png", "b.png")
        assert proxy.counters.headers["PutObject x-amz-acl"] == 1 and moto.public_read(dst, "b.png")
    finally:
        proxy.stop()


async def test_faults_never_store_a_bad_body(s3: S3Server) -> None:
    src, dst = new_bucket(s3, "src"), new_bucket(s3, "dst")
    items = {f"obj/{i:03d}.jpg": (2000 + i * 37, "image/jpeg") for i in range(120)}
    items["video.mp4"] = (24 * MiB, "video/mp4")
    data = seed(s3, src, items)
    proxy = FaultProxy(s3.port, seed=42).start()
    proxy.set_faults(slowdown=0.10, internal=0.03, reset=0.03, truncate=0.08, latency=0.005, latency_share=0.2)
    try:
        async with copier(s3, src, dst, endpoint=proxy.endpoint, retries=30) as c:
            outcomes = await asyncio.gather(*(c.copy(k, k) for k in data))
    finally:
        proxy.stop()
    assert [o.status for o in outcomes] == [Status.COPIED] * len(data), [o.error for o in outcomes if o.error]
    faults = proxy.counters.faults
    assert faults["slowdown"] > 5 and faults["reset"] >= 1 and faults["truncate"] >= 1, faults
    assert sum(o.retries for o in outcomes) > 0  # retries are visible in the outcomes
    for key, expected in data.items():
        assert s3.get(dst, key)[0] == expected, key
    assert s3.open_uploads(dst) == [] or not s3.can_abort_uploads  # s3rver cannot abort


async def test_gives_up_after_bounded_retries(moto: S3Server) -> None:
    src, dst = new_bucket(moto, "src"), new_bucket(moto, "dst")
    seed(moto, src, {"a.png": (100, "image/png")})
    proxy = FaultProxy(moto.port).start()
    proxy.set_faults(internal=1.0)
    try:
        async with copier(moto, src, dst, endpoint=proxy.endpoint, retries=3) as c:
            outcome = await c.copy("a.png", "a.png")
            assert outcome.status == Status.FAILED and outcome.attempts == 4
            assert "500" in (outcome.error or "") and "gave up after 4 attempts" in (outcome.error or "")
            # Throttling has a budget of its own (the provider is pacing us), but a bounded one:
            # in tries, and in time (none left here).
            proxy.set_faults(slowdown=1.0)
            c.policy = dataclasses.replace(c.policy, throttle_patience=0.0)
            throttled = await c.copy("a.png", "a.png")
            # Out of patience, it gives up, having been given more tries than an erroring object
            # (the throttle budget is larger), yet a bounded number.
            assert throttled.status == Status.FAILED and "gave up" in (throttled.error or "")
            assert outcome.attempts < throttled.attempts < 100
    finally:
        proxy.stop()


async def test_cancelled_multipart_is_aborted(s3: S3Server) -> None:
    src, dst = new_bucket(s3, "src"), new_bucket(s3, "dst")
    seed(s3, src, {"big.bin": (40 * MiB, "application/octet-stream")})
    proxy = FaultProxy(s3.port).start()
    proxy.set_faults(latency=0.3, only_methods=("PUT",))  # slow parts, so the cancel lands mid-upload
    try:
        async with copier(s3, src, dst, endpoint=proxy.endpoint) as c:
            task = asyncio.create_task(c.copy("big.bin", "big.bin"))
            while proxy.count("UploadPart") < 1:
                await asyncio.sleep(0.05)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        assert proxy.count("AbortMultipartUpload") == 1
    finally:
        proxy.stop()
    assert s3.open_uploads(dst) == [] or not s3.can_abort_uploads  # s3rver cannot abort
    assert "big.bin" not in s3.keys(dst)


async def test_server_side_copy_on_the_same_endpoint(moto: S3Server) -> None:
    src, dst = new_bucket(moto, "src"), new_bucket(moto, "dst")
    data = seed(moto, src, {"a.gif": (3000, "image/gif")})
    proxy = FaultProxy(moto.port).start()
    try:
        async with copier(moto, src, dst, endpoint=proxy.endpoint, server_side=True) as c:
            outcome = await c.copy("a.gif", "a.gif")
    finally:
        proxy.stop()
    assert outcome.status == Status.COPIED
    assert proxy.count("CopyObject") == 1 and proxy.count("GetObject") == 0
    got, resp = moto.get(dst, "a.gif")
    assert got == data["a.gif"] and resp["ContentType"] == "image/gif" and resp["CacheControl"] == CC
    assert moto.public_read(dst, "a.gif")


MEMORY_PROBE = r"""
import asyncio, json, resource, sys
sys.path.insert(0, sys.argv[1])
from tests.test_transfer import copier
from tests.services.s3 import MotoServer
server = MotoServer(); server.port = int(sys.argv[2]); server.endpoint = f"http://127.0.0.1:{server.port}"
async def main():
    async with copier(server, sys.argv[3], sys.argv[4], concurrency=8) as c:
        await c.source.head("big-0")  # warm up: imports, client, connection pool
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        outcomes = await asyncio.gather(*(c.copy(f"big-{i}", f"big-{i}") for i in range(8)))
        after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"before_kib": before, "after_kib": after, "statuses": [o.status for o in outcomes]}))
asyncio.run(main())
"""


def test_memory_stays_bounded_with_eight_large_copies(moto: S3Server) -> None:
    from pathlib import Path

    src, dst = new_bucket(moto, "src"), new_bucket(moto, "dst")
    for i in range(8):
        moto.put(src, f"big-{i}", body(f"big-{i}", 24 * MiB, "video/mp4"), "video/mp4")
    root = str(Path(__file__).resolve().parents[1])
    out = subprocess.run([sys.executable, "-c", MEMORY_PROBE, root, str(moto.port), src, dst],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    probe = json.loads(out.stdout.strip().splitlines()[-1])
    assert probe["statuses"] == [Status.COPIED] * 8
    growth_mib = (probe["after_kib"] - probe["before_kib"]) / 1024
    print(f"peak RSS growth copying 8 x 24 MiB concurrently: {growth_mib:.1f} MiB")
    assert growth_mib < 8 * 2 * 8 + 32  # 8 copies x 2 parts x 8 MiB, plus a fixed overhead


async def test_sizes_between_lists_exactly_a_key_range(s3: S3Server) -> None:
    bucket = new_bucket(s3, "list")
    for i in range(40):
        s3.put(bucket, f"media/{i:03d}/original/x.png", b"x" * i)
    s3.put(bucket, "other/010/original/x.png", b"nope")
    async with Bucket(BucketSettings(**bucket_settings(s3, bucket)), 4) as b:
        sizes = await b.sizes_between("media/", "media/010/original/x.png", "media/020/original/x.png", 2)
        one = await b.sizes_between("media/", "media/007/original/x.png", "media/007/original/x.png", 2)
        none = await b.sizes_between("media/", "media/007/original/y.png", "media/007/original/y.png", 2)
    assert one == {"media/007/original/x.png": 7} and none == {}
    assert sizes == {f"media/{i:03d}/original/x.png": i for i in range(10, 21)}


async def test_sizes_between_asks_no_page_past_the_last_key(s3: S3Server) -> None:
    bucket = new_bucket(s3, "pages")
    for i in range(40):
        s3.put(bucket, f"media/{i:03d}/original/x.png", b"x" * i)
    proxy = FaultProxy(s3.port).start()
    try:
        async with Bucket(BucketSettings(**bucket_settings(s3, bucket, endpoint=proxy.endpoint)), 4) as b:
            first, last = "media/010/original/x.png", "media/020/original/x.png"
            exact = await b.sizes_between("media/", first, last, 4, page_size=11)
            exact_requests = proxy.count("ListObjects")
            proxy.reset_counters()
            paged = await b.sizes_between("media/", first, last, 4, page_size=5)
            paged_requests = proxy.count("ListObjects")
    finally:
        proxy.stop()
    expected = {f"media/{i:03d}/original/x.png": i for i in range(10, 21)}
    assert exact == expected and paged == expected
    assert exact_requests == 1  # the page ended on the last key: nothing more to ask
    assert paged_requests == 3  # 010-014, 015-019, then 020 and keys past the range
