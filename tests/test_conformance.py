"""S3 conformance: what real providers do that a copier must get right.

Each test is one defect a review found, reproduced on real servers (moto, rclone serve s3)
with the fault proxy playing the provider's part where neither server does it: a 404 from
the destination, ETags that are no MD5 (SSE-KMS), a bucket in another region, a skewed
clock, Retry-After, expired session tokens, refused ACLs and storage classes.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import pytest

from mastosync.config.settings import BucketSettings, DestinationSettings
from mastosync.config.units import MiB
from mastosync.engine.etags import MultipartEtags, part_size_for
from mastosync.engine.memory import MemoryBudget
from mastosync.engine.outcome import Proof, Status
from mastosync.engine.transfer import Copier
from mastosync.errors import BucketError
from mastosync.storage import Body
from mastosync.storage.base import Head, ObjectAttrs
from mastosync.storage.retry import RetryPolicy
from mastosync.storage.s3 import Bucket, _retry_after
from tests.conftest import ROOT, MastodonDb, new_bucket, start_server, write_config
from tests.services import instance
from tests.services.faultproxy import FaultProxy
from tests.services.s3 import SERVERS, S3Server


@pytest.fixture(params=list(SERVERS))
def s3(request: pytest.FixtureRequest, s3_servers: dict[str, S3Server]) -> S3Server:
    """This storage suite runs against every S3 server the tests can start."""
    return start_server(request.param, s3_servers)



@contextmanager
def proxy_for(s3: S3Server) -> Iterator[FaultProxy]:
    proxy = FaultProxy(s3.port).start()
    try:
        yield proxy
    finally:
        proxy.stop()


def side(s3: S3Server, bucket: str, endpoint: str | None = None, cls: type[BucketSettings] = BucketSettings,
         **extra: Any) -> BucketSettings:
    return cls(bucket=bucket, endpoint=endpoint or s3.endpoint, region="us-east-1", access_key_id=s3.access_key,
               secret_access_key=s3.secret_key, **extra)


@asynccontextmanager
async def copier(s3: S3Server, src: str, dst: str, source_endpoint: str | None = None,
                 destination_endpoint: str | None = None, retries: int = 3, server_side: bool = False,
                 **destination: str) -> AsyncIterator[Copier]:
    source = side(s3, src, source_endpoint)
    target = side(s3, dst, destination_endpoint, DestinationSettings, **destination)
    async with Bucket(source, 8, timeout=10) as s, Bucket(target, 8, timeout=10) as d:
        yield Copier(s, d, multipart_threshold=16 * MiB, part_size=8 * MiB,
                     policy=RetryPolicy(retries=retries, base=0.01, cap=0.05), budget=MemoryBudget(64 * MiB),
                     server_side=d if server_side else None)


def multipart_upload(s3: S3Server, bucket: str, key: str, data: bytes, part: int) -> str:
    """Upload `data` in parts of `part` bytes, as Mastodon (5 MiB) or boto3 (8 MiB) would; returns the ETag."""
    c = s3.client
    upload = c.create_multipart_upload(Bucket=bucket, Key=key, ContentType="video/mp4")["UploadId"]
    parts = []
    for n, first in enumerate(range(0, len(data), part), start=1):
        etag = c.upload_part(Bucket=bucket, Key=key, UploadId=upload, PartNumber=n,
                             Body=data[first:first + part])["ETag"]
        parts.append({"PartNumber": n, "ETag": etag})
    c.complete_multipart_upload(Bucket=bucket, Key=key, UploadId=upload, MultipartUpload={"Parts": parts})
    whole: str = c.head_object(Bucket=bucket, Key=key)["ETag"]
    return whole


# -- 1. only the source's "no such key" means missing --------------------------------------


async def test_a_404_from_the_destination_is_not_missing(s3: S3Server) -> None:
    src, dst = new_bucket(s3, "src"), new_bucket(s3, "dst")
    s3.put(src, "small.png", b"x" * 1000, "image/png")
    s3.put(src, "video.mp4", os.urandom(20 * MiB), "video/mp4")
    with proxy_for(s3) as proxy:
        # Every upload of a part, and every single PUT, meets a vanished upload / bare 404.
        proxy.set_faults(error=1.0, error_answer=(404, "NoSuchUpload"), only_ops=("UploadPart", "PutObject"))
        async with copier(s3, src, dst, destination_endpoint=proxy.endpoint) as c:
            outcomes = {k: await c.copy(k, k) for k in ("small.png", "video.mp4")}
        assert {k: o.status for k, o in outcomes.items()} == {"small.png": Status.FAILED, "video.mp4": Status.FAILED}
        assert all("NoSuchUpload" in (o.error or "") for o in outcomes.values())
        # Some of them, now: retried from a fresh GET, and copied.
        proxy.set_faults(error=0.3, error_answer=(404, "NoSuchUpload"), only_ops=("UploadPart", "PutObject"))
        async with copier(s3, src, dst, destination_endpoint=proxy.endpoint, retries=20) as c:
            again = [await c.copy(k, k) for k in ("small.png", "video.mp4")]
        assert [o.status for o in again] == [Status.COPIED, Status.COPIED]
        assert s3.open_uploads(dst) == [] or not s3.can_abort_uploads  # s3rver cannot abort
    async with copier(s3, src, dst) as c:
        assert (await c.copy("not-there.png", "not-there.png")).status == Status.MISSING


# -- 2 and 5. content proven; ETags that are no MD5 ----------------------------------------


async def test_content_proofs(s3: S3Server) -> None:
    src, dst = new_bucket(s3, "src"), new_bucket(s3, "dst")
    s3.put(src, "single.jpg", os.urandom(300_000), "image/jpeg")
    # Uploaded in parts as Mastodon's aws-sdk does (5 MiB), as boto3 (8 MiB), and oddly (6 MiB).
    etags = {key: multipart_upload(s3, src, key, os.urandom(size), part)
             for key, size, part in (("mastodon.mp4", 23 * MiB, 5 * MiB), ("boto.mp4", 20 * MiB, 8 * MiB),
                                     ("odd.mp4", 20 * MiB, 6 * MiB))}
    # moto gives multipart ETags; rclone serve s3 stores a file and answers its MD5 (the
    # large-single-part path: the MD5 of every byte, computed part by part, must match).
    multipart = s3.kind == "moto"
    assert all(("-" in e) == multipart for e in etags.values()), etags
    async with copier(s3, src, dst) as c:
        proofs = {k: (o.status, o.proof) for k in ("single.jpg", *etags) for o in [await c.copy(k, k)]}
    if multipart:
        expected = {"mastodon.mp4": Proof.MULTIPART, "boto.mp4": Proof.MULTIPART, "odd.mp4": Proof.TRANSFER}
    else:
        expected = dict.fromkeys(etags, Proof.MD5)
    assert proofs == {"single.jpg": (Status.COPIED, Proof.MD5), **{k: (Status.COPIED, v) for k, v in expected.items()}}


@pytest.mark.parametrize("sse_header", [False, True])
async def test_an_etag_that_is_no_md5_does_not_block_the_copy(s3: S3Server, sse_header: bool) -> None:
    """SSE-KMS / SSE-C sources: a 32-hex ETag that is not the MD5. Copied (once the same
    bytes were read twice), with the weaker proof, and never sent as Content-MD5."""
    src, dst = new_bucket(s3, "src"), new_bucket(s3, "dst")
    data = os.urandom(50_000)
    s3.put(src, "kms.jpg", data, "image/jpeg")
    opaque = '"' + hashlib.md5(b"not the content").hexdigest() + '"'
    headers = {"ETag": opaque, **({"x-amz-server-side-encryption": "aws:kms"} if sse_header else {})}
    with proxy_for(s3) as source_proxy, proxy_for(s3) as destination_proxy:
        source_proxy.behave(response_headers=headers)
        async with copier(s3, src, dst, source_endpoint=source_proxy.endpoint,
                          destination_endpoint=destination_proxy.endpoint) as c:
            outcome = await c.copy("kms.jpg", "kms.jpg")
        gets = source_proxy.count("GetObject")
        bad_digests = destination_proxy.counters.operations
    assert (outcome.status, outcome.proof) == (Status.COPIED, Proof.TRANSFER), outcome
    assert gets == (1 if sse_header else 2)  # told by the header, or by two equal reads
    assert s3.get(dst, "kms.jpg")[0] == data
    assert bad_digests["PutObject"] == 1  # the destination accepted the first PUT


@pytest.mark.parametrize("size", [10_000, 17 * MiB])  # one PUT; parts, the whole object's MD5 taken beside
async def test_damaged_bytes_are_never_stored(moto: S3Server, size: int) -> None:
    """Bytes whose MD5 differs from the source's ETag on every read fail; nothing is stored."""
    src, dst = new_bucket(moto, "src"), new_bucket(moto, "dst")
    moto.put(src, "a.jpg", os.urandom(size), "image/jpeg")
    with proxy_for(moto) as proxy:
        async with copier(moto, src, dst, source_endpoint=proxy.endpoint, retries=2) as c:
            flips = 0
            original_get = c.source.get

            async def damaged_get(key: str) -> tuple[Head, Body]:  # a different wrong byte each read
                nonlocal flips
                head, body = await original_get(key)
                read = body.read

                async def read_damaged(size: int, last: bool) -> bytearray:
                    nonlocal flips
                    data = bytearray(await read(size, last))
                    flips += 1
                    data[flips] ^= 0xFF
                    return data
                body.read = read_damaged  # type: ignore[method-assign]
                return head, body
            c.source.get = damaged_get  # type: ignore[method-assign]
            outcome = await c.copy("a.jpg", "a.jpg")
    assert outcome.status == Status.FAILED and "MD5" in (outcome.error or "")
    assert moto.keys(dst) == set()


def test_multipart_etags_follow_only_plausible_part_sizes() -> None:
    data = bytes(range(256)) * (4 * 4096)  # 4 MiB of pattern, repeated below
    body = data * 5 + b"tail"  # 20 MiB + 4 bytes
    parts = [body[i:i + 8 * MiB] for i in range(0, len(body), 8 * MiB)]
    etag = hashlib.md5(b"".join(hashlib.md5(p).digest() for p in parts)).hexdigest() + f"-{len(parts)}"
    for ours in (8 * MiB, 5 * MiB):  # our part size equal to the source's, or not
        tracker = MultipartEtags(len(body), f'"{etag}"', ours)
        assert tracker.plausible
        for i in range(0, len(body), ours):
            piece = body[i:i + ours]
            tracker.feed(piece, hashlib.md5(piece).digest())
        assert tracker.matches(), ours
    assert not MultipartEtags(len(body), '"abc-99"', 8 * MiB).plausible  # no usual size gives 99 parts


# -- 3. pre-flight checks test what the run sends ------------------------------------------


async def test_write_check_sends_acl_and_storage_class_under_the_prefix(moto: S3Server) -> None:
    bucket = new_bucket(moto, "chk")
    with proxy_for(moto) as proxy:
        settings = side(moto, bucket, proxy.endpoint, DestinationSettings, key_prefix="media", acl="public-read",
                        storage_class="STANDARD_IA")
        async with Bucket(settings, 4) as b:
            await b.check(write=True, attrs=ObjectAttrs())
        written = dict(proxy.counters.acl)
        headers = set(proxy.counters.headers)
    assert written == {f"/{bucket}/media/.mastosync-write-check": "public-read"}
    assert "CreateMultipartUpload x-amz-storage-class" in headers
    assert moto.open_uploads(bucket) == []


@pytest.mark.parametrize("refusal", [(400, "InvalidStorageClass"), (400, "AccessControlListNotSupported"),
                                     (501, "NotImplemented")])
async def test_a_bucket_refusing_acl_or_class_fails_the_check(moto: S3Server, refusal: tuple[int, str]) -> None:
    """What AWS (BucketOwnerEnforced), R2 (x-amz-acl) or a bad storage class answer: found up front."""
    bucket = new_bucket(moto, "refuse")
    with proxy_for(moto) as proxy:
        proxy.set_faults(error=1.0, error_answer=refusal, only_ops=("CreateMultipartUpload",))
        settings = side(moto, bucket, proxy.endpoint, DestinationSettings, storage_class="GLACIER_IR")
        async with Bucket(settings, 4, label="destination") as b:
            with pytest.raises(BucketError, match="refuses what each copy sends.*destination.acl"):
                await b.check(write=True, attrs=ObjectAttrs())


async def test_a_refused_abort_fails_the_write_check(s3: S3Server) -> None:
    bucket = new_bucket(s3, "abort")
    with proxy_for(s3) as proxy:
        proxy.set_faults(error=1.0, error_answer=(403, "AccessDenied"), only_ops=("AbortMultipartUpload",))
        async with Bucket(side(s3, bucket, proxy.endpoint), 4, label="destination") as b:
            with pytest.raises(BucketError, match="AbortMultipartUpload"):
                await b.check(write=True)


async def test_read_check_lists_under_the_prefix(s3: S3Server) -> None:
    bucket = new_bucket(s3, "pfx")
    with proxy_for(s3) as proxy:
        async with Bucket(side(s3, bucket, proxy.endpoint, key_prefix="only/here"), 4) as b:
            await b.check()
        # What a policy limited to the prefix allows: a listing under it.
        assert proxy.count("ListObjects") == 1
        assert "prefix=only%2Fhere%2F" in proxy.counters.targets["ListObjects"]


# -- 4. stored headers and metadata copied -------------------------------------------------


async def test_stored_headers_and_metadata_are_copied(s3: S3Server) -> None:
    src, dst = new_bucket(s3, "src"), new_bucket(s3, "dst")
    s3.client.put_object(Bucket=src, Key="icon.svg", Body=b"\x1f\x8b" + b"z" * 200, ContentType="image/svg+xml",
                         ContentEncoding="gzip", ContentDisposition='inline; filename="icon.svg"',
                         ContentLanguage="en", CacheControl=instance.CC, Metadata={"origin": "mastodon"})
    s3.client.put_object(Bucket=src, Key="big.bin", Body=os.urandom(20 * MiB), ContentEncoding="identity",
                         Metadata={"origin": "mastodon"})
    with proxy_for(s3) as proxy:
        async with copier(s3, src, dst, destination_endpoint=proxy.endpoint) as c:
            assert [(await c.copy(k, k)).status for k in ("icon.svg", "big.bin")] == [Status.COPIED, Status.COPIED]
        sent = set(proxy.counters.headers)
    for op in ("PutObject", "CreateMultipartUpload"):
        assert {f"{op} content-encoding", f"{op} x-amz-meta-origin"} <= sent, op
    assert {"PutObject content-disposition", "PutObject content-language"} <= sent
    if s3.kind == "moto":  # rclone serve s3 keeps only some of them: what was sent is checked above
        got = s3.client.head_object(Bucket=dst, Key="icon.svg")
        assert (got["ContentEncoding"], got["ContentDisposition"], got["ContentLanguage"], got["Metadata"]) == (
            "gzip", 'inline; filename="icon.svg"', "en", {"origin": "mastodon"})
        assert s3.get(dst, "icon.svg")[0] == b"\x1f\x8b" + b"z" * 200  # as stored, not decompressed


# -- 6. region, clock, Retry-After ---------------------------------------------------------


async def test_a_bucket_in_another_region_is_followed(moto: S3Server) -> None:
    bucket = new_bucket(moto, "region")
    moto.put(bucket, "a.png", b"png")
    with proxy_for(moto) as proxy:
        proxy.behave(region="eu-central-1")
        async with Bucket(side(moto, bucket, proxy.endpoint), 4) as b:  # configured us-east-1
            await b.check()
            head = await b.head("a.png")
        assert head is not None and head.size == 3
        assert proxy.count("ListObjects") == 2  # refused once, then signed for eu-central-1


async def test_a_skewed_clock_is_corrected(moto: S3Server) -> None:
    bucket = new_bucket(moto, "clock")
    moto.put(bucket, "a.png", b"png")
    with proxy_for(moto) as proxy:
        proxy.behave(clock_offset=3 * 3600)  # the server is three hours ahead of us
        async with Bucket(side(moto, bucket, proxy.endpoint), 4) as b:
            await b.check()
            assert (await b.head("a.png")) is not None
        assert proxy.count("ListObjects", "HeadObject") == 3  # one refusal, then in time


def test_retry_after_is_honoured() -> None:
    assert _retry_after({"retry-after": "3"}) == 3.0
    assert _retry_after({"retry-after": "100000"}) == 300.0  # capped
    assert _retry_after({"retry-after": "soon"}) is None
    in_two = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() + 2))
    assert 0.5 < (_retry_after({"retry-after": in_two}) or 0) <= 2.0
    policy = RetryPolicy(base=0.001, cap=0.01)
    assert all(policy.delay(1, True, retry_after=2.5) >= 2.5 for _ in range(20))


async def test_retry_after_reaches_the_retries(moto: S3Server) -> None:
    bucket = new_bucket(moto, "ra")
    moto.put(bucket, "a.png", b"png")
    with proxy_for(moto) as proxy:
        proxy.set_faults(slowdown=1.0, retry_after=7, only_ops=("HeadObject",))
        async with Bucket(side(moto, bucket, proxy.endpoint), 4) as b:
            from mastosync.storage.base import Transient

            with pytest.raises(Transient) as caught:
                await b.head("a.png")
            assert caught.value.retry_after == 7.0 and caught.value.throttled
            # And the retry waits that long: the first answer says "come back in 1 s", the
            # next one is asked no sooner (a lower bound, which a slow machine cannot break).
            proxy.reset_counters()
            proxy.set_faults(slowdown=1.0, retry_after=1, only_ops=("HeadObject",))
            policy = RetryPolicy(retries=3, base=0.001, cap=0.01)
            retried = asyncio.create_task(policy.call(lambda: b.head("a.png")))
            while proxy.count("HeadObject") < 1:
                await asyncio.sleep(0.01)
            proxy.set_faults()
            head = await retried
    assert head is not None and head.size == 3
    (refused, first), (answered, second) = [(t, status) for t, op, status in proxy.counters.timeline
                                            if op == "HeadObject"][:2]
    assert (first, second) == (503, 200) and answered - refused >= 0.95


# -- 7. very large objects -----------------------------------------------------------------


@pytest.mark.parametrize("size,expected", [
    (1 * MiB, 8 * MiB), (78 * 1024 * MiB, 8 * MiB),  # up to 10,000 parts of 8 MiB: as configured
    (100 * 1024 * MiB, 11 * MiB),  # 100 GiB: whole MiB parts, at most 10,000 of them
    (5 * 1024 * 1024 * MiB, 525 * MiB),  # 5 TiB, S3's largest object
])
def test_part_size_scales_to_the_part_limit(size: int, expected: int) -> None:
    part = part_size_for(size, 8 * MiB)
    assert part == expected and -(-size // part) <= 10_000


async def test_server_side_copy_in_parts(moto: S3Server, monkeypatch: pytest.MonkeyPatch) -> None:
    """Objects over CopyObject's 5 GiB go by UploadPartCopy (limits lowered to test it small)."""
    monkeypatch.setattr(Bucket, "max_copy_object", 6 * MiB)
    monkeypatch.setattr(Bucket, "copy_part_min", 5 * MiB)
    src, dst = new_bucket(moto, "src"), new_bucket(moto, "dst")
    data = os.urandom(12 * MiB)
    moto.client.put_object(Bucket=src, Key="v.mp4", Body=data, ContentType="video/mp4", CacheControl=instance.CC)
    with proxy_for(moto) as proxy:
        async with copier(moto, src, dst, source_endpoint=proxy.endpoint, destination_endpoint=proxy.endpoint,
                          server_side=True) as c:
            c.part_size = 5 * MiB
            outcome = await c.copy("v.mp4", "v.mp4")
        assert proxy.count("GetObject", "PutObject", "UploadPart") == 0
        assert proxy.count("UploadPartCopy") == 3
    assert (outcome.status, outcome.proof) == (Status.COPIED, Proof.SERVER)
    body, got = moto.get(dst, "v.mp4")
    assert body == data and (got["ContentType"], got["CacheControl"]) == ("video/mp4", instance.CC)


# -- 8. uploads left open by a crash are aborted by the next run ---------------------------


async def test_uploads_left_by_a_killed_run_are_aborted(tmp_path: Path, mastodon_db: MastodonDb,
                                                        moto: S3Server) -> None:
    inst = instance.build(mastodon_db.shape, video_size=60 * MiB)
    src, dst = new_bucket(moto, "src"), new_bucket(moto, "dst")
    await instance.seed(inst, mastodon_db, moto, src)
    with proxy_for(moto) as proxy:
        proxy.set_faults(latency=0.5, only_ops=("UploadPart",))  # parts go slowly …
        config = write_config(tmp_path / "c.toml", db=mastodon_db, source=(moto, src), destination=(moto, dst),
                              destination_endpoint=proxy.endpoint)
        env = {k: v for k, v in os.environ.items() if not k.startswith("MASTOSYNC_")}
        child = subprocess.Popen([sys.executable, "-m", "mastosync", "run", "--config", str(config),
                                  "--type", "media_attachments"], cwd=ROOT, env=env,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while proxy.count("UploadPart") < 2 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        child.send_signal(signal.SIGKILL)  # … and the run dies mid-upload, with no chance to abort
        child.wait()
        assert len(moto.open_uploads(dst)) == 1
        state = json.loads(next((tmp_path / "state").glob("resume-*.json")).read_text())
        assert len(state["open_uploads"]) == 1
        proxy.set_faults()
        again = subprocess.run([sys.executable, "-m", "mastosync", "run", "--config", str(config),
                                "--type", "media_attachments"], cwd=ROOT, env=env, capture_output=True, text=True)
    assert again.returncode == 0, again.stderr
    assert "aborted 1 of 1 multipart uploads left open" in again.stdout
    assert moto.open_uploads(dst) == []


# -- 9. credentials ------------------------------------------------------------------------


async def test_profile_per_side(rclone: S3Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bucket = new_bucket(rclone, "prof")
    credentials = tmp_path / "credentials"
    credentials.write_text(f"[old-host]\naws_access_key_id = {rclone.access_key}\n"
                           f"aws_secret_access_key = {rclone.secret_key}\n")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(credentials))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    settings = BucketSettings(bucket=bucket, endpoint=rclone.endpoint, profile="old-host")
    async with Bucket(settings, 4) as b:
        await b.check(write=True)
    async with Bucket(BucketSettings(bucket=bucket, endpoint=rclone.endpoint, profile="nope"), 4) as b:
        with pytest.raises(BucketError, match="no profile 'nope'"):
            await b.check()


async def test_an_expired_session_token_stops_the_run_in_one_line(tmp_path: Path, mastodon_db: MastodonDb,
                                                                  moto: S3Server) -> None:
    from tests.conftest import run_cli

    inst = instance.build(mastodon_db.shape, video_size=100_000)
    src, dst = new_bucket(moto, "src"), new_bucket(moto, "dst")
    await instance.seed(inst, mastodon_db, moto, src)
    with proxy_for(moto) as proxy:
        # The checks pass; then the token expires: every GET is refused.
        proxy.set_faults(error=1.0, error_answer=(400, "ExpiredToken"), only_ops=("GetObject",))
        config = write_config(tmp_path / "c.toml", db=mastodon_db, source=(moto, src), destination=(moto, dst),
                              source_endpoint=proxy.endpoint,
                              extra={"source": {"session_token": "FQoGZXIvYXdzE-expired"}})
        result = run_cli("run", "--all", config=config)
        gets = proxy.count("GetObject")
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "session_token has expired" in lines[0], result.stderr
    assert "FQoGZXIvYXdzE-expired" not in result.stdout + result.stderr
    assert gets < len(inst.objects)  # stopped, not one failure per object
