"""storage.py: URLs, error classification, credentials and the pacer.

The tables are pure; the credential and header tests talk to the real S3 servers
(rclone serve s3 checks every signature, so a wrong one fails there).
"""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import pytest

from mastosync.config.settings import BucketSettings
from mastosync.errors import BucketError
from mastosync.storage.base import NotFound, ObjectAttrs, Permanent, Throttled, Transient, content_md5
from mastosync.storage.retry import Pacer
from mastosync.storage.s3 import Bucket, answer_error, bucket_url
from tests.conftest import new_bucket, start_server
from tests.reliability.helpers import fault_proxy
from tests.services.s3 import SERVERS, S3Server


@pytest.fixture(params=list(SERVERS))
def s3(request: pytest.FixtureRequest, s3_servers: dict[str, S3Server]) -> S3Server:
    """This storage suite runs against every S3 server the tests can start."""
    return start_server(request.param, s3_servers)



def settings(**values: str) -> BucketSettings:
    return BucketSettings(**{"bucket": "media-bucket", **values})


@pytest.mark.parametrize(("values", "origin", "path"), [
    ({"endpoint": "http://127.0.0.1:9000", "addressing_style": "path"}, "http://127.0.0.1:9000", "/media-bucket/"),
    ({"endpoint": "https://s3.example.com/", "addressing_style": "virtual"},
     "https://media-bucket.s3.example.com", "/"),
    ({"endpoint": "https://gw.example.com/s3", "addressing_style": "path"}, "https://gw.example.com",
     "/s3/media-bucket/"),
    # auto: virtual only on AWS, and only for names that can be host names
    ({"endpoint": "", "region": "eu-central-1", "addressing_style": "auto"},
     "https://media-bucket.s3.eu-central-1.amazonaws.com", "/"),
    ({"endpoint": "", "region": "eu-central-1", "addressing_style": "path"},
     "https://s3.eu-central-1.amazonaws.com", "/media-bucket/"),
    ({"endpoint": "https://acct.r2.cloudflarestorage.com", "addressing_style": "auto"},
     "https://acct.r2.cloudflarestorage.com", "/media-bucket/"),
    ({"endpoint": "", "region": "us-east-1", "addressing_style": "auto", "bucket": "my.dotted.bucket"},
     "https://s3.us-east-1.amazonaws.com", "/my.dotted.bucket/"),
])
def test_bucket_url(values: dict[str, str], origin: str, path: str) -> None:
    assert bucket_url(settings(**values)) == (origin, path)


SLOWDOWN = b"<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>"


@pytest.mark.parametrize(("status", "body", "kind", "throttled"), [
    (404, b"", NotFound, False),  # a HEAD has no body
    (404, b"<Error><Code>NoSuchKey</Code></Error>", NotFound, False),
    (404, b"<Error><Code>NoSuchBucket</Code></Error>", Permanent, False),
    (503, SLOWDOWN, Throttled, True),
    (503, b"", Throttled, True),
    (429, b"", Throttled, True),
    (500, b"<Error><Code>InternalError</Code></Error>", Transient, False),
    (400, b"<Error><Code>BadDigest</Code></Error>", Transient, False),  # the body was damaged on the way
    (400, b"<Error><Code>RequestTimeout</Code></Error>", Transient, False),
    (403, b"<Error><Code>SignatureDoesNotMatch</Code></Error>", Permanent, False),
    (403, b"<Error><Code>AccessDenied</Code></Error>", Permanent, False),
    (400, b"<Error><Code>InvalidArgument</Code></Error>", Permanent, False),
    (200, b"<Error><Code>InternalError</Code></Error>", Transient, False),  # CompleteMultipartUpload's way
    (301, b"<Error><Code>PermanentRedirect</Code></Error>", Permanent, False),
])
def test_answer_error(status: int, body: bytes, kind: type, throttled: bool) -> None:
    error = answer_error("GET k", status, body)
    assert type(error) is kind
    assert error.throttled is throttled
    assert str(error).startswith("GET k: ")


def test_error_message_is_unescaped_and_redacted() -> None:
    from mastosync.redact import MASK, redact

    error = answer_error("PUT k", 403, b"<Error><Code>AccessDenied</Code><Message>a &amp; b</Message></Error>")
    assert str(error) == "PUT k: AccessDenied: a & b" and error.code == "AccessDenied" and error.status == 403
    # A server that echoes the access key id (as some do in SignatureDoesNotMatch): masked.
    redact.add(["AKIA-TEST-SECRET-1234"])
    echoed = answer_error("GET k", 403, b"<Error><Code>SignatureDoesNotMatch</Code>"
                                        b"<Message>key AKIA-TEST-SECRET-1234 &amp; more</Message></Error>")
    assert str(echoed) == f"GET k: SignatureDoesNotMatch: key {MASK} & more"


def test_redactor_masks_every_secret_longest_first() -> None:
    from mastosync.redact import MASK, Redactor

    r = Redactor()
    r.add(["pass", "password-long", ""])  # an empty secret would mask everything: ignored
    assert r("x password-long y pass z") == f"x {MASK} y {MASK} z"
    assert r("nothing here") == "nothing here"


async def test_pacer_is_first_come_first_served_and_survives_cancellation() -> None:
    pacer = Pacer(2, down_after=60)
    await pacer.acquire()
    await pacer.acquire()
    order: list[int] = []

    async def waiter(n: int) -> None:
        await pacer.acquire()
        order.append(n)

    tasks = [asyncio.create_task(waiter(n)) for n in range(3)]
    await asyncio.sleep(0)
    tasks[1].cancel()  # a cancelled waiter must not take or leak a slot
    pacer.release()
    pacer.release()
    await asyncio.gather(*tasks, return_exceptions=True)
    assert order == [0, 2] and pacer.in_flight == 2
    pacer.throttled()
    assert pacer._allowed() == 1  # 2 × (1 − 1/64)² is below 2
    pacer.release()
    pacer.release()
    assert pacer.in_flight == 0


def pace(pacer: Pacer, share: float, answers: int, seed: int = 1) -> float:
    rng = random.Random(seed)
    for _ in range(answers):
        if rng.random() < share:
            pacer.throttled()
        else:
            pacer.succeeded()
    return pacer.limit


@pytest.mark.parametrize("share,at_least,at_most", [
    (0.0, 32, 32), (0.02, 0.9 * 32, 32), (0.10, 0.75 * 32, 0.85 * 32), (0.5, 7, 9), (0.9, 1, 1)])
def test_pacer_lowers_the_rate_in_proportion_to_throttling(share: float, at_least: float, at_most: float) -> None:
    """One SlowDown in fifty costs a few percent, not half the rate (as the halving pacer did)."""
    assert at_least <= pace(Pacer(32, 60), share, 3000) <= at_most


def test_pacer_comes_back_after_a_storm_and_ignores_errors() -> None:
    pacer = Pacer(32, 60)
    assert pace(pacer, 0.9, 500) == 1
    assert pace(pacer, 0.0, 200) >= 0.8 * 32  # a couple hundred answers after the storm
    for _ in range(100):
        pacer.failed()  # resets and 500s are retried, not paced
    assert pacer.limit >= 0.8 * 32


async def test_pacer_declares_an_endpoint_down_after_only_failures() -> None:
    pacer = Pacer(8, down_after=0.2)
    pacer.failed()
    await asyncio.sleep(0.1)
    pacer.failed()
    assert not pacer.down
    pacer.succeeded()  # any success starts the count again
    pacer.failed()
    await asyncio.sleep(0.3)
    pacer.throttled()  # throttling is a sign of life
    assert not pacer.down
    pacer.failed()
    await asyncio.sleep(0.3)
    assert pacer.down


def credential_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No files, no instance metadata: only what the test puts in the environment."""
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


async def test_credentials_from_the_environment_when_none_configured(
        rclone: S3Server, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    bucket = new_bucket(rclone, "envcreds")
    rclone.put(bucket, "a.png", b"png")
    credential_env(monkeypatch, tmp_path)
    config = settings(bucket=bucket, endpoint=rclone.endpoint)
    async with Bucket(config, 4) as b:
        with pytest.raises(BucketError, match="no credentials"):
            await b.check()
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", rclone.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
    async with Bucket(config, 4) as b:
        with pytest.raises(BucketError, match="access denied"):  # rclone checked the signature
            await b.check()
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", rclone.secret_key)
    async with Bucket(config, 4) as b:
        await b.check(write=True)
        head = await b.head("a.png")
    assert head is not None and head.size == 3


async def test_requests_carry_no_unsigned_extras(s3: S3Server) -> None:
    """No Expect: 100-continue, no checksum headers, no Content-Type the source did not have."""
    bucket = new_bucket(s3, "hdrs")
    with fault_proxy(s3) as proxy:
        config = settings(bucket=bucket, endpoint=proxy.endpoint, access_key_id=s3.access_key,
                          secret_access_key=s3.secret_key)
        async with Bucket(config, 4) as b:
            await b.put("k.bin", b"data", content_md5(b"data"), ObjectAttrs())
            upload_id = await b.start_multipart("big.bin", ObjectAttrs())
            await b.abort_multipart("big.bin", upload_id)
        sent = {h for h in proxy.counters.headers}
    assert "PutObject content-md5" in sent and "PutObject authorization" in sent
    for name in ("expect", "content-type", "x-amz-checksum-crc32", "x-amz-sdk-checksum-algorithm",
                 "accept-encoding"):
        assert f"PutObject {name}" not in sent, name
