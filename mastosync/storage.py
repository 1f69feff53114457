"""One S3 endpoint and bucket: client set-up, the few calls mastosync makes, and the retry policy.

The client is created once per run, with a connection pool as large as the
concurrency, checksums only "when required" (B2, R2, Wasabi and older MinIO reject
botocore's new defaults), no `Expect: 100-continue` round trip, and botocore's own
retries off: a streamed GET cannot be retried by botocore, so every retry is decided
here and in transfer.py, from a fresh request.

Errors are classified once, here, into three kinds the transfer engine acts on:
NotFound (the object is missing), Transient (retry later) and Permanent (give up).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import random
import re
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, TypeVar

import aiohttp
import botocore.exceptions
import botocore.handlers
from aiobotocore.config import AioConfig
from aiobotocore.session import AioSession

from mastosync.config import BucketSettings, DestinationSettings
from mastosync.errors import BucketError
from mastosync.redact import redact

TRANSIENT_STATUS = frozenset({408, 429, 500, 502, 503, 504})
TRANSIENT_CODES = frozenset({
    "SlowDown", "Throttling", "ThrottlingException", "RequestLimitExceeded", "TooManyRequests",
    "TooManyRequestsException", "InternalError", "ServiceUnavailable", "RequestTimeout",
    "RequestTimeoutException", "BadDigest", "IncompleteBody", "XAmzContentSHA256Mismatch",
    "OperationAborted", "PriorRequestNotComplete",
})
THROTTLE_CODES = frozenset({"SlowDown", "Throttling", "ThrottlingException", "RequestLimitExceeded",
                            "TooManyRequests", "TooManyRequestsException"})
NOT_FOUND_CODES = frozenset({"NoSuchKey", "NotFound", "404"})
T = TypeVar("T")
PLAIN_MD5 = re.compile(r"^[0-9a-f]{32}$")


class StorageError(Exception):
    """A failed S3 call, already classified; the message is safe to show."""

    throttled = False


class NotFound(StorageError):
    """The object does not exist."""


class Transient(StorageError):
    """Worth retrying: throttling, server errors, resets, timeouts, truncated bodies."""

    def __init__(self, message: str, throttled: bool = False, unreachable: bool = False) -> None:
        super().__init__(message)
        self.throttled = throttled
        self.unreachable = unreachable  # no connection could be made at all


class Permanent(StorageError):
    """Retrying will not help: access denied, no such bucket, bad request."""


def classify(exc: BaseException, what: str) -> StorageError:
    """Any exception from an S3 call → NotFound, Transient or Permanent."""
    if isinstance(exc, StorageError):
        return exc
    if isinstance(exc, botocore.exceptions.ClientError):
        error = exc.response.get("Error", {})
        code = str(error.get("Code", ""))
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        message = error.get("Message") or ""
        text = redact(f"{what}: {code or status}{': ' + message if message else ''}")
        if code in NOT_FOUND_CODES or (status == 404 and code != "NoSuchBucket"):
            return NotFound(text)
        if code in TRANSIENT_CODES or status in TRANSIENT_STATUS:
            return Transient(text, throttled=code in THROTTLE_CODES or status in (429, 503))
        return Permanent(text)
    if isinstance(exc, botocore.exceptions.NoCredentialsError):
        return Permanent(f"{what}: no credentials configured")
    if isinstance(exc, botocore.exceptions.ParamValidationError):
        return Permanent(redact(f"{what}: {exc}"))
    if _cannot_connect(exc):
        return Transient(redact(f"{what}: cannot connect ({type(exc).__name__})"), unreachable=True)
    if isinstance(exc, (botocore.exceptions.BotoCoreError, aiohttp.ClientError, OSError,
                        asyncio.TimeoutError, asyncio.IncompleteReadError, ConnectionError)):
        return Transient(redact(f"{what}: {type(exc).__name__}: {exc}".rstrip(": ")))
    return Permanent(redact(f"{what}: unexpected {type(exc).__name__}: {exc}"))


def _cannot_connect(exc: BaseException) -> bool:
    """No connection could be made (refused, DNS, connect timeout), as opposed to one that broke."""
    if isinstance(exc, botocore.exceptions.ConnectTimeoutError):
        return True
    if isinstance(exc, botocore.exceptions.EndpointConnectionError):
        exc = getattr(exc, "kwargs", {}).get("error") or exc  # botocore wraps aiohttp's error
    return isinstance(exc, (aiohttp.ClientConnectorError, ConnectionRefusedError, socket.gaierror))


@dataclass(frozen=True, slots=True)
class Head:
    """What mastosync needs to know of a stored object."""

    size: int
    etag: str | None = None
    content_type: str | None = None
    cache_control: str | None = None

    @property
    def content_md5(self) -> str | None:
        """Content-MD5 for a re-upload, when the ETag is a plain MD5 (single-part upload)."""
        etag = (self.etag or "").strip('"').lower()
        if PLAIN_MD5.match(etag):
            return base64.b64encode(bytes.fromhex(etag)).decode()
        return None


def _head(resp: dict[str, Any]) -> Head:
    return Head(resp["ContentLength"], resp.get("ETag"), resp.get("ContentType"), resp.get("CacheControl"))


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Exponential backoff with full jitter (AWS architecture blog, "Exponential Backoff And Jitter")."""

    retries: int = 8
    base: float = 0.1
    cap: float = 20.0

    def delay(self, attempt: int, throttled: bool = False) -> float:
        # Throttling means the provider wants fewer requests: start the backoff higher.
        base = self.base * (5 if throttled else 1)
        return random.uniform(0, min(self.cap, base * 2 ** min(attempt, 16)))


    async def call(self, fn: Callable[[], Awaitable[T]]) -> T:
        """Call `fn`, retrying Transient errors with backoff; other errors pass through."""
        attempt = 0
        while True:
            attempt += 1
            try:
                return await fn()
            except Transient as exc:
                if attempt > self.retries:
                    raise
                await asyncio.sleep(self.delay(attempt, exc.throttled))


class Pacer:
    """How many requests an endpoint gets at once, and whether it is down.

    Additive increase, multiplicative decrease (as TCP): a throttling answer (503
    SlowDown, 429) halves the requests allowed in flight, each success adds a little
    back. So a provider that asks us to slow down sees fewer requests per second, not the
    same rate of retries. An endpoint that answers nothing at all for `down_after`
    seconds is declared down, and the remaining objects fail at once instead of each
    waiting through its retries.
    """

    def __init__(self, limit: int, down_after: float) -> None:
        self.max = float(limit)
        self.limit = float(limit)
        self.in_flight = 0
        self.down_after = down_after
        self._cond = asyncio.Condition()
        self._last_cut = 0.0
        self._unreachable_since: float | None = None

    async def acquire(self) -> None:
        async with self._cond:
            await self._cond.wait_for(lambda: self.in_flight < max(1, int(self.limit)))
            self.in_flight += 1

    async def release(self) -> None:
        async with self._cond:
            self.in_flight -= 1
            self._cond.notify(1)

    def answered(self) -> None:
        """Any answer, even an error, shows the endpoint is up."""
        self._unreachable_since = None

    def succeeded(self) -> None:
        self._unreachable_since = None
        if self.limit < self.max:
            # Recover linearly (a quarter request per success, at least): after a storm
            # the full rate is back within a few hundred requests.
            self.limit = min(self.max, self.limit + max(0.25, 1.0 / self.limit))

    def throttled(self) -> None:
        self._unreachable_since = None
        now = time.monotonic()
        if now - self._last_cut > 0.1:  # one cut per burst of throttled answers
            self._last_cut = now
            self.limit = max(1.0, self.limit / 2)

    def unreachable(self) -> None:
        if self._unreachable_since is None:
            self._unreachable_since = time.monotonic()

    @property
    def down(self) -> bool:
        since = self._unreachable_since
        return since is not None and time.monotonic() - since > self.down_after


class Bucket:
    """A bucket on an endpoint. Use as an async context manager: the client lives for the run."""

    def __init__(self, settings: BucketSettings, pool_size: int, timeout: float = 60.0,
                 label: str = "bucket") -> None:
        self.settings = settings
        self.name = settings.bucket
        self.label = label
        self._pool_size = pool_size
        self._timeout = timeout
        self._stack = contextlib.AsyncExitStack()
        self.client: Any = None
        self.pacer = Pacer(pool_size, down_after=timeout)
        self.unaborted: list[tuple[str, str]] = []  # multipart uploads an abort could not reach

    def ensure_up(self, what: str) -> None:
        """Raise Permanent once the endpoint has been declared down."""
        if self.pacer.down:
            raise Permanent(f"{what}: {self.describe()} has been unreachable for over "
                            f"{self.pacer.down_after:.0f}s; giving up")

    async def _request(self, what: str, call: Callable[[], Awaitable[T]]) -> T:
        """One S3 call, paced, with its errors classified."""
        self.ensure_up(what)
        await self.pacer.acquire()
        try:
            result = await call()
        except Exception as exc:
            error = classify(exc, what)
            if error.throttled:
                self.pacer.throttled()
            elif getattr(error, "unreachable", False):
                self.pacer.unreachable()
            elif isinstance(exc, botocore.exceptions.ClientError):
                self.pacer.answered()  # a reset or timeout is no sign of life; an error answer is
            raise error from None
        finally:
            await self.pacer.release()
        self.pacer.succeeded()
        return result

    def describe(self) -> str:
        return f"{self.label} bucket {self.name!r} at {self.settings.endpoint or 'AWS ' + self.settings.region}"

    async def __aenter__(self) -> Bucket:
        s = self.settings
        config = AioConfig(
            region_name=s.region or None,
            max_pool_connections=self._pool_size,
            connect_timeout=min(self._timeout, 20),
            read_timeout=self._timeout,
            retries={"total_max_attempts": 1},  # all retrying is ours: see the module docstring
            s3={"addressing_style": s.addressing_style},
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
            tcp_keepalive=True,
        )
        credentials: dict[str, Any] = {}
        if s.access_key_id or s.secret_access_key:
            credentials = {"aws_access_key_id": s.access_key_id,
                           "aws_secret_access_key": s.secret_access_key,
                           "aws_session_token": s.session_token or None}
        session = AioSession()
        self.client = await self._stack.enter_async_context(
            session.create_client("s3", endpoint_url=s.endpoint or None, config=config, **credentials)
        )
        # botocore asks for `Expect: 100-continue` on every upload: one more round trip per
        # object, and a known source of hangs with aiohttp. We send bodies straight away.
        self.client.meta.events.unregister("before-call.s3", botocore.handlers.add_expect_header)
        return self

    async def __aexit__(self, et: type[BaseException] | None, e: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self._stack.aclose()

    # -- checks before a run -------------------------------------------------------------

    async def check(self, write: bool = False, policy: RetryPolicy | None = None) -> None:
        """Fail with BucketError if the bucket cannot be reached or read (and written).

        Transient answers (a 503, a reset) are retried a few times first: a busy provider
        is not a misconfiguration.
        """
        policy = policy or RetryPolicy(retries=4)
        try:
            await self._retrying(policy, lambda: self.client.list_objects_v2(Bucket=self.name, MaxKeys=1))
        except Exception as exc:
            raise BucketError(self._explain(exc)) from None
        if write:
            # An aborted multipart upload proves write access without leaving an object behind.
            key = ".mastosync-write-check"
            try:
                upload = await self._retrying(
                    policy, lambda: self.client.create_multipart_upload(Bucket=self.name, Key=key))
                await self.abort_multipart(key, upload["UploadId"])
            except Exception as exc:
                raise BucketError(self._explain(exc, "write")) from None

    @staticmethod
    async def _retrying(policy: RetryPolicy, call: Callable[[], Awaitable[T]]) -> T:
        """`call`, retried while its error is Transient but not "cannot connect"; the original error escapes."""
        attempt = 0
        while True:
            attempt += 1
            try:
                return await call()
            except Exception as exc:
                error = classify(exc, "check")
                if not isinstance(error, Transient) or error.unreachable or attempt > policy.retries:
                    raise
                await asyncio.sleep(policy.delay(attempt, error.throttled))

    def _explain(self, exc: BaseException, action: str = "read") -> str:
        where = self.describe()
        if isinstance(exc, botocore.exceptions.ClientError):
            code = exc.response.get("Error", {}).get("Code", "")
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
            if code == "NoSuchBucket":
                return f"{where}: the bucket does not exist"
            if code in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "403") or status == 403:
                return f"{where}: access denied ({code or status}) on {action}; check the access key, secret and permissions"
            return redact(f"{where}: {code or status}: {exc.response.get('Error', {}).get('Message', '')}")
        if isinstance(exc, botocore.exceptions.NoCredentialsError):
            return f"{where}: no credentials (set access_key_id and secret_access_key)"
        if isinstance(exc, (botocore.exceptions.EndpointConnectionError, OSError, aiohttp.ClientError,
                            botocore.exceptions.ConnectTimeoutError)):
            return f"{where}: cannot connect to the endpoint"
        return redact(f"{where}: {type(exc).__name__}: {exc}")

    # -- object calls: each raises a classified StorageError -----------------------------

    async def head(self, key: str) -> Head | None:
        try:
            return _head(await self._request(f"HEAD {key}",
                                             lambda: self.client.head_object(Bucket=self.name, Key=key)))
        except NotFound:
            return None

    async def get(self, key: str) -> tuple[Head, Any]:
        """Start a GET: the head and the streaming body (to be read, then closed)."""
        resp = await self._request(f"GET {key}", lambda: self.client.get_object(Bucket=self.name, Key=key))
        return _head(resp), resp["Body"]

    async def put(self, key: str, data: bytes, head: Head, extra: dict[str, Any]) -> None:
        args = {"Bucket": self.name, "Key": key, "Body": data, "ContentLength": len(data), **extra}
        md5 = head.content_md5
        if md5 and len(data) == head.size:
            args["ContentMD5"] = md5
        await self._request(f"PUT {key}", lambda: self.client.put_object(**args))

    async def copy(self, source: Bucket, source_key: str, key: str, extra: dict[str, Any]) -> None:
        """Server-side copy from another bucket on the same endpoint and account."""
        await self._request(f"COPY {source_key}", lambda: self.client.copy_object(
            Bucket=self.name, Key=key, CopySource={"Bucket": source.name, "Key": source_key},
            MetadataDirective="COPY", **extra,
        ))

    async def start_multipart(self, key: str, extra: dict[str, Any]) -> str:
        resp = await self._request(f"CreateMultipartUpload {key}", lambda: self.client.create_multipart_upload(
            Bucket=self.name, Key=key, **extra))
        return str(resp["UploadId"])

    async def upload_part(self, key: str, upload_id: str, number: int, data: bytes, md5: str) -> str:
        resp = await self._request(f"UploadPart {number} of {key}", lambda: self.client.upload_part(
            Bucket=self.name, Key=key, UploadId=upload_id, PartNumber=number, Body=data,
            ContentLength=len(data), ContentMD5=md5,
        ))
        return str(resp["ETag"])

    async def complete_multipart(self, key: str, upload_id: str, etags: list[str]) -> None:
        parts = [{"PartNumber": i + 1, "ETag": etag} for i, etag in enumerate(etags)]
        await self._request(f"CompleteMultipartUpload {key}", lambda: self.client.complete_multipart_upload(
            Bucket=self.name, Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts}))

    async def sizes_between(self, root: str, first: str, last: str, max_pages: int) -> dict[str, int] | None:
        """Sizes of the keys under `root` from `first` to `last` (inclusive), by listing.

        One request lists up to 1,000 keys, where a HEAD tells about one. Returns None when
        the range holds more than `max_pages` pages of other keys (orphans): then HEADs are
        cheaper. Every key in [first, last] that exists is in the answer.
        """
        found: dict[str, int] = {}
        args: dict[str, Any] = {"Bucket": self.name, "Prefix": root, "MaxKeys": 1000,
                                "StartAfter": first[:-1]}  # StartAfter is exclusive
        for _ in range(max_pages):
            page = await self._request(f"LIST {root}", lambda a=dict(args): self.client.list_objects_v2(**a))
            contents = page.get("Contents", [])
            for item in contents:
                key = item["Key"]
                if key > last:
                    return found
                found[key] = item["Size"]
            if not page.get("IsTruncated") or not contents:
                return found
            args["ContinuationToken"] = page["NextContinuationToken"]
            args.pop("StartAfter", None)
        return None

    async def abort_multipart(self, key: str, upload_id: str) -> None:
        """Abort, retrying a little: an upload left open is billed until someone notices."""
        for attempt in range(4):
            try:
                await self.client.abort_multipart_upload(Bucket=self.name, Key=key, UploadId=upload_id)
                return
            except Exception as exc:
                error = classify(exc, "AbortMultipartUpload")
                if isinstance(error, NotFound):
                    return  # already gone
                if isinstance(error, Permanent) or attempt == 3:
                    # Remembered in the resume state; the next run aborts it.
                    self.unaborted.append((key, upload_id))
                    return
                await asyncio.sleep(0.2 * 2**attempt)


def upload_extra(destination: DestinationSettings, head: Head) -> dict[str, Any]:
    """Headers of a copied object: Content-Type and Cache-Control from the source, ACL and class from config."""
    extra: dict[str, Any] = {}
    if head.content_type:
        extra["ContentType"] = head.content_type
    if head.cache_control:
        extra["CacheControl"] = head.cache_control
    if destination.acl:
        extra["ACL"] = destination.acl
    if destination.storage_class:
        extra["StorageClass"] = destination.storage_class
    return extra
