"""One S3 endpoint and bucket: the few calls mastosync makes, and their errors classified.

Requests are signed here (sigv4.py) and sent on one aiohttp session of keep-alive
connections per bucket per run (transport.py). botocore is not on this path: its
per-request machinery costs more CPU than copying a typical Mastodon image (see the
README's Performance section). It is still used, lazily, for one thing it does well:
finding credentials when the configuration gives none, or names a `profile`
(environment, ~/.aws, instance role).

Like botocore, a request follows the bucket's real region when AWS says it is elsewhere
(x-amz-bucket-region), re-signs with the server's clock after RequestTimeTooSkewed, and
a throttled answer's Retry-After is honoured by the retries.

What is sent matches what S3-compatible providers accept: no `Expect: 100-continue`
(an extra round trip per upload, and a known source of hangs), no new-style default
checksums (B2, R2, Wasabi and older MinIO reject them), Content-MD5 on every upload we
can give one, and UNSIGNED-PAYLOAD where TLS or a signed Content-MD5 protects the body
(the payload hash is signed only for the few bodies over plain HTTP without one: hashing
every byte twice cost a third of a small copy's CPU).

Every error is classified once, here, into the kinds of base.py the copier acts on. A
streamed GET is never retried here: a retry is a fresh GET, decided in transfer.py.
"""

from __future__ import annotations

import asyncio
import email.utils
import functools
import hashlib
import html
import os
import time
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Any
from urllib.parse import quote, unquote_plus, urlsplit

from mastosync import __version__
from mastosync.config.settings import BucketSettings
from mastosync.errors import BucketError, EndpointDown
from mastosync.mastodon.layout import full_key
from mastosync.redact import redact
from mastosync.storage.base import (
    UNTOLD,
    Head,
    NotFound,
    ObjectAttrs,
    Permanent,
    StorageError,
    Transient,
    UploadEvents,
    content_md5,
)
from mastosync.storage.limits import RateLimit
from mastosync.storage.retry import Pacer, RetryPolicy
from mastosync.storage.s3.addressing import bucket_url, upload_extra
from mastosync.storage.s3.answers import (
    ACCESS_CODES,
    ERROR_BODY_LIMIT,
    ERROR_CODE,
    EXPIRED_CODES,
    REGION_CODES,
    SKEW_CODES,
    _head,
    _http_time,
    _iso_time,
    _retry_after,
    answer_error,
    classify,
)
from mastosync.storage.sigv4 import (
    EMPTY_SHA256,
    UNSIGNED_PAYLOAD,
    Credentials,
    Signer,
    canonical_query,
    encode_key,
)
from mastosync.storage.transport import (
    HTTPError,
    Response,
    Transport,
)

USER_AGENT = f"mastosync/{__version__}"
CREDENTIALS_REFRESH_SECONDS = 60.0
ABORT_RETRIES = RetryPolicy(retries=3, base=0.2, cap=2.0)  # an upload left open is billed: try a little
RETRIES = RetryPolicy(retries=8)  # a listing page, asked again from the same token
MiB = 1024 * 1024
MAX_PARTS = 10_000
MAX_COPY_OBJECT = 5 * 1024 * MiB  # the largest CopyObject; beyond it, UploadPartCopy
COPY_PART_MIN = 512 * MiB  # server-side parts move no bytes through us: fewer, larger requests



class Body:
    """A GET's body, streamed: read it in exact pieces, then close it."""

    def __init__(self, response: Response, what: str) -> None:
        self._response = response
        self._what = what

    async def read(self, size: int, last: bool) -> bytes | bytearray:
        """The next `size` bytes, in one buffer of exactly that size (Response.read_exactly:
        never held twice, a small body not copied at all). A body that ends early, or (with
        `last`) goes on past `size`, is Transient.
        """
        try:
            data = await self._response.read_exactly(size)
        except Exception as exc:
            raise classify(exc, f"{self._what}: reading the body") from None
        if len(data) != size:
            raise Transient(f"{self._what}: body truncated: got {len(data)} of {size} bytes")
        if last and not self._response.complete:
            try:
                extra = await self._response.read_exactly(1)
            except Exception as exc:
                raise classify(exc, f"{self._what}: reading the body") from None
            if extra:
                raise Transient(f"{self._what}: body longer than expected")
        return data

    def close(self) -> None:
        self._response.release()

    async def aclose(self) -> None:
        self.close()


class CredentialsExpired(BucketError):
    """The configured session token has expired: every request will now fail, so the run stops."""


class Bucket:
    """A bucket on an endpoint. Use as an async context manager: the connections live for the run."""

    # Headers and an ETag with every object; every PUT and part carries a Content-MD5 the server checks.
    keeps_metadata = True
    # Server-side copy's limits (ServerSideCopy): CopyObject's largest, then UploadPartCopy's parts.
    max_copy_object = MAX_COPY_OBJECT
    copy_part_min = COPY_PART_MIN

    def __init__(self, settings: BucketSettings, pool_size: int, timeout: float = 60.0,
                 label: str = "bucket", acl: str | None = None, tps: RateLimit | None = None,
                 events: UploadEvents = UNTOLD) -> None:
        self.settings = settings
        self.tps = tps  # --tpslimit: requests per second to this bucket
        self.acl = acl  # the ACL of public objects when this is not the destination (fix --side source)
        self.name = settings.bucket
        self.label = label
        self._timeout = timeout
        self._pool_size = pool_size
        self.transport: Transport | None = None
        self.pacer = Pacer(pool_size, down_after=timeout)
        # Told when a multipart upload starts and when it is completed or aborted, so the
        # resume state knows which may be left open.
        self.events = events
        self._region = settings.region or "us-east-1"
        self._origin, self._path = bucket_url(settings)
        self._host = urlsplit(self._origin).netloc
        self._https = self._origin.startswith("https:")
        self._signer: Signer | None = None
        self._credential_source: Any = None  # botocore's, when the configuration has no keys or a profile
        self._credentials_checked = 0.0
        self._clock_offset = 0.0  # the server's clock minus ours, learnt from RequestTimeTooSkewed
        self._declared_down = False

    def describe(self) -> str:
        return f"{self.label} bucket {self.name!r} at {self.settings.endpoint or 'AWS ' + self._region}"

    @property
    def key_prefix(self) -> str:
        return self.settings.key_prefix

    def _headers(self, attrs: ObjectAttrs) -> dict[str, str]:
        """What a write of this object sends (a file's `mode` means nothing to a bucket)."""
        return upload_extra(self.settings, attrs, self.acl)

    async def __aenter__(self) -> Bucket:
        self._open_transport()
        return self

    def _open_transport(self) -> Transport:
        self.transport = Transport(self._origin, connect_timeout=min(self._timeout, 20), read_timeout=self._timeout,
                                   pool_size=self._pool_size + 4, ca_bundle=self.settings.ca_bundle)
        return self.transport

    async def __aexit__(self, et: type[BaseException] | None, e: BaseException | None,
                        tb: TracebackType | None) -> None:
        if self.transport is not None:
            await self.transport.close()

    # -- credentials and signing ---------------------------------------------------------

    async def _get_signer(self) -> Signer:
        s = self.settings
        if self._signer is None and not s.profile and (s.access_key_id or s.secret_access_key):
            self._signer = Signer(Credentials(s.access_key_id, s.secret_access_key, s.session_token), self._region)
        if self._credential_source is None and self._signer is not None:
            return self._signer
        now = time.monotonic()
        if self._signer is None or now - self._credentials_checked > CREDENTIALS_REFRESH_SECONDS:
            self._credentials_checked = now
            if self._credential_source is None:
                self._credential_source = await self._find_credentials()
            frozen = await self._credential_source.get_frozen_credentials()
            credentials = Credentials(frozen.access_key, frozen.secret_key, frozen.token or "")
            if self._signer is None or self._signer.credentials != credentials:
                self._signer = Signer(credentials, self._region)
        return self._signer

    async def _find_credentials(self) -> Any:
        # Imported only here: most runs configure keys, and botocore is heavy.
        from aiobotocore.session import AioSession
        from botocore.exceptions import ProfileNotFound

        profile = self.settings.profile
        try:
            source = await AioSession(profile=profile or None).get_credentials()
        except ProfileNotFound:
            raise Permanent(f"{self.describe()}: no profile {profile!r} in the AWS configuration files",
                            code="NoCredentials") from None
        if source is None:
            where = f"profile {profile!r} has no keys" if profile else "no credentials (set access_key_id and " \
                "secret_access_key, or profile)"
            raise Permanent(f"{self.describe()}: {where}", code="NoCredentials")
        return source

    def _resign_for(self, region: str) -> None:
        """Sign from now on for `region` (the bucket turned out to live there)."""
        self._region = region
        if self._signer is not None:
            self._signer = Signer(self._signer.credentials, region)
        if not self.settings.endpoint:  # AWS's default endpoint: the regional one
            self._origin, self._path = bucket_url(BucketSettings(
                bucket=self.settings.bucket, region=region, addressing_style=self.settings.addressing_style))
            self._host = urlsplit(self._origin).netloc
            old, self.transport = self.transport, None
            self._open_transport()
            if old is not None:
                asyncio.get_running_loop().create_task(old.close())

    # -- one request ---------------------------------------------------------------------

    async def _send(self, method: str, key: str | None, what: str, query: dict[str, str] | None = None,
                    headers: dict[str, str] | None = None, body: bytes | bytearray = b"",
                    stream: bool = False) -> tuple[Response, bytes]:
        """One S3 request, paced and signed; an error answer raises, classified.

        Returns the response and its body. With `stream`, the body is left unread, and
        the request keeps its place in the pacer until the caller releases the response.
        A wrong region or a skewed clock is corrected once, and the request sent again.
        """
        for attempt in range(3):
            try:
                return await self._send_once(method, key, what, query, headers, body, stream)
            except _Redo:
                if attempt == 2:
                    break
        raise Permanent(f"{what}: {self.describe()} keeps redirecting to another region or clock")

    async def _send_once(self, method: str, key: str | None, what: str, query: dict[str, str] | None,
                         headers: dict[str, str] | None, body: bytes | bytearray,
                         stream: bool) -> tuple[Response, bytes]:
        self.ensure_up(what)
        signer = await self._get_signer()
        path = self._path + (encode_key(key) if key is not None else "")
        query_string = canonical_query(query) if query else ""
        if not body:
            payload_hash = EMPTY_SHA256
        elif self._https or (headers is not None and "content-md5" in headers):
            # Over TLS, or with a Content-MD5 that the signature covers and the server checks
            # the body against: the body cannot be changed unseen, so it is not hashed again
            # for the signature (an SHA-256 of every body was a third of a small copy's CPU).
            payload_hash = UNSIGNED_PAYLOAD
        else:
            payload_hash = hashlib.sha256(body).hexdigest()
        signed_with = self._clock_offset
        now = datetime.now(UTC) + timedelta(seconds=signed_with) if signed_with else None
        signed = signer.sign(method, self._host, path, query_string, headers or {}, payload_hash, now)
        signed["user-agent"] = USER_AGENT
        target = f"{path}?{query_string}" if query_string else path
        transport = self.transport or self._open_transport()  # used outside `async with`: opened now
        if self.tps is not None:
            await self.tps.take(1)
        await self.pacer.acquire()
        held = True
        try:
            # A streamed answer holds its pacing slot until its body is read and released.
            response = await transport.request(method, target, signed, body,
                                               on_release=self.pacer.release if stream else None)
            held = not stream
            if response.status >= 300:
                try:
                    error_body = await response.read(ERROR_BODY_LIMIT) if method != "HEAD" else b""
                except (HTTPError, OSError):
                    error_body = b""
                finally:
                    response.release()
                self._correct(response, error_body, signed_with)  # raises _Redo when worth sending again
                raise answer_error(what, response.status, error_body, _retry_after(response.headers))
            if stream:
                data = b""
            else:
                try:
                    data = await response.read()
                finally:
                    response.release()
        except _Redo:
            raise
        except Exception as exc:
            error = classify(exc, what)
            if error.throttled:
                self.pacer.throttled()
            elif isinstance(error, Transient) or error.status >= 500:
                self._failed()  # a reset, a timeout, a refused connection, a 5xx: no sign of life
            elif error.status:
                self.pacer.answered()
            if error.code in EXPIRED_CODES and self._credential_source is None:
                raise CredentialsExpired(f"{self.describe()}: the configured session_token has expired "
                                         f"({error.code}); set fresh credentials and run again") from None
            if error.code in EXPIRED_CODES and self._credential_source is not None:
                self._credentials_checked = 0.0  # refreshed before the retry
            raise error from None
        finally:
            if held:
                self.pacer.release()
        self.pacer.succeeded()
        return response, data

    def _correct(self, response: Response, error_body: bytes, signed_with: float = 0.0) -> None:
        """Raise _Redo when the answer shows what to fix: the bucket's region, or our clock
        (`signed_with`: the clock offset the request was signed with; requests in flight when
        another one learnt the server's clock are sent again with it, not failed)."""
        region = response.headers.get("x-amz-bucket-region")
        found = ERROR_CODE.search(error_body)
        code = found.group(1).decode("utf-8", "replace") if found else ""
        if region and region != self._region and (response.status in (301, 307) or code in REGION_CODES):
            self._resign_for(region)
            raise _Redo()
        if code == "RequestTimeTooSkewed" or (code in SKEW_CODES and b"skew" in error_body.lower()):
            server = response.headers.get("date")
            try:
                offset = email.utils.parsedate_to_datetime(server).timestamp() - time.time() if server else None
            except (TypeError, ValueError):
                offset = None
            if offset is not None and abs(offset - self._clock_offset) > 60:
                self._clock_offset = offset
                raise _Redo()
            if abs(self._clock_offset - signed_with) > 60:
                raise _Redo()  # corrected meanwhile, by an answer to another request

    def _failed(self) -> None:
        self.pacer.failed()
        if self.pacer.down and not self._declared_down:
            # Down: requests still waiting on it (a read timeout can be a minute) end now.
            self._declared_down = True
            transport, self.transport = self.transport, None
            self._open_transport()
            if transport is not None:
                asyncio.get_running_loop().create_task(transport.close())

    def ensure_up(self, what: str) -> None:
        """Raise EndpointDown once nothing but failures has come back for `down_after` seconds."""
        if self.pacer.down:
            raise EndpointDown(f"{self.describe()}: nothing but failures (resets, timeouts, server errors) for "
                               f"over {self.pacer.down_after:.0f}s (sync.timeout); stopped. Objects in flight are "
                               "reported failed; the next run continues where this one stopped")

    async def _xml(self, method: str, key: str | None, what: str, query: dict[str, str],
                   headers: dict[str, str] | None = None, body: bytes = b"") -> ET.Element:
        """A request whose answer is an XML document. S3 may answer 200 with an <Error> in it
        (CopyObject, CompleteMultipartUpload): that is an error like any other."""
        _, data = await self._send(method, key, what, query, headers, body)
        try:
            root = ET.fromstring(data)
        except ET.ParseError:
            raise Transient(f"{what}: the answer is not valid XML") from None
        for element in root.iter():
            element.tag = element.tag.rpartition("}")[2]  # drop the S3 namespace
        if root.tag == "Error":
            raise answer_error(what, 200, data)
        return root

    # -- checks before a run -------------------------------------------------------------

    async def check(self, write: bool = False, policy: RetryPolicy | None = None,
                    attrs: ObjectAttrs | None = None) -> None:
        """Fail with BucketError if the bucket cannot be read (and written as the run will write).

        The read check lists under the key prefix, and the write check opens (and aborts) a
        multipart upload under it with the headers every copy sends (`attrs`: ACL, storage
        class), so credentials limited to the prefix pass, and a bucket that refuses an ACL
        or a storage class is found here, not after the first download. Transient answers
        (a 503, a reset) are retried a few times first. Both run at once; when both fail,
        the read error is the one told.
        """
        policy = policy or RetryPolicy(retries=4)
        checks = [self._check_read(policy),
                  *([self._check_write(policy, self._headers(attrs or ObjectAttrs()))] if write else [])]
        for outcome in await asyncio.gather(*checks, return_exceptions=True):
            if isinstance(outcome, BaseException):
                raise outcome

    async def _check_read(self, policy: RetryPolicy) -> None:
        query = {"list-type": "2", "max-keys": "1"}
        if self.settings.key_prefix:
            query["prefix"] = full_key(self.settings.key_prefix, "")
        try:
            await policy.call(lambda: self._xml("GET", None, "ListObjectsV2", query), retry_unreachable=False)
        except StorageError as exc:
            raise BucketError(self._explain(exc)) from None

    async def _check_write(self, policy: RetryPolicy, extra: dict[str, str]) -> None:
        # An aborted multipart upload proves write access without leaving an object behind.
        key = full_key(self.settings.key_prefix, ".mastosync-write-check")
        try:
            upload_id = await policy.call(lambda: self._start_multipart(key, extra), retry_unreachable=False)
        except StorageError as exc:
            raise BucketError(self._explain(exc, "write")) from None
        try:
            await policy.call(lambda: self._abort_once(key, upload_id))
        except StorageError as exc:
            raise BucketError(self._explain(exc, "abort of a multipart upload (AbortMultipartUpload); uploads "
                                                 "that fail would be left open and billed")) from None

    async def holds_upload_of(self, other: Bucket) -> bool | None:
        """Whether `other` is this very bucket under another address (localhost and 127.0.0.1, an
        endpoint spelled two ways): an upload opened (never completed: nothing is written) in
        `other` is looked for among this bucket's open uploads. None when that cannot be told."""
        key = full_key(other.settings.key_prefix, f".mastosync-same-place-check-{os.getpid()}-{time.time_ns()}")
        try:
            upload_id = await other._start_multipart(key, {})
        except StorageError:
            return None
        try:
            listing = await self._xml("GET", None, "ListMultipartUploads", {"uploads": "", "prefix": key})
            return any(upload.findtext("UploadId") == upload_id for upload in listing.iter("Upload"))
        except StorageError:
            return None
        finally:
            await other.abort_multipart(key, upload_id)

    def _explain(self, error: StorageError, action: str = "read") -> str:
        where = self.describe()
        if error.code == "NoSuchBucket":
            return f"{where}: the bucket does not exist"
        if error.code == "NoCredentials":
            return str(error)
        if error.code in ("AccessControlListNotSupported", "InvalidStorageClass", "NotImplemented",
                          "InvalidArgument") or (action == "write" and error.status == 400):
            return (f"{where}: the bucket refuses what each copy sends ({error}); check destination.acl "
                    "(\"\" for buckets without ACLs, such as R2 or Object Ownership 'bucket owner enforced') "
                    "and destination.storage_class")
        if error.code in ACCESS_CODES or error.status == 403:
            return (f"{where}: access denied ({error.code or error.status}) on {action}; check the "
                    "access key, secret and permissions (and the key prefix they are limited to)")
        if error.unreachable:
            return f"{where}: cannot connect to the endpoint"
        if error.status == 404:
            return f"{where}: the bucket does not exist (404)"
        return redact(f"{where}: {error}")

    # -- object calls: each raises a classified StorageError -----------------------------

    async def head(self, key: str) -> Head | None:
        try:
            response, _ = await self._send("HEAD", key, f"HEAD {key}")
        except NotFound:
            return None
        length = response.headers.get("content-length")
        if length is None or not length.isdigit():
            raise Transient(f"HEAD {key}: the answer has no Content-Length")
        return _head(response.headers, int(length))

    async def get(self, key: str) -> tuple[Head, Body]:
        """Start a GET: the head and the streaming body (to be read, then closed)."""
        what = f"GET {key}"
        response, _ = await self._send("GET", key, what, stream=True)
        size = response.content_length
        if size is None:
            # A chunked answer (some gateways and proxies): the size comes from a HEAD,
            # and the body must then have exactly that many bytes.
            try:
                head = await self.head(key)
            except BaseException:
                response.release()
                raise
            if head is None:
                response.release()
                raise NotFound(f"{what}: gone between GET and HEAD")
            size = head.size
        return _head(response.headers, size), Body(response, what)

    async def put(self, key: str, data: bytes | bytearray, md5: str, attrs: ObjectAttrs) -> None:
        """Upload one object; `md5` is the Content-MD5 of `data` (base64), checked by the server.

        It is always the MD5 of the bytes, never the source's ETag: an ETag that looks like
        an MD5 is not one for SSE-KMS or SSE-C sources, and the destination would refuse
        every try (BadDigest). transfer.py compares the bytes with the ETag itself.
        """
        await self._send("PUT", key, f"PUT {key}", headers={**self._headers(attrs), "content-md5": md5}, body=data)

    async def copy(self, source: Bucket, source_key: str, key: str, attrs: ObjectAttrs) -> None:
        """Server-side copy from another bucket on the same endpoint and account (up to 5 GiB)."""
        headers = {**self._headers(attrs), "x-amz-copy-source": self._copy_source(source, source_key),
                   "x-amz-metadata-directive": "COPY"}
        # Headers of the object itself come from the source (COPY); only ACL and class are set.
        headers = {k: v for k, v in headers.items() if k in ("x-amz-acl", "x-amz-storage-class")
                   or k.startswith("x-amz-copy") or k == "x-amz-metadata-directive"}
        await self._xml("PUT", key, f"COPY {source_key}", {}, headers)

    @staticmethod
    def _copy_source(source: Bucket, source_key: str) -> str:
        return f"/{quote(source.name, safe='')}/{encode_key(source_key)}"

    async def copy_part(self, source: Bucket, source_key: str, key: str, upload_id: str, number: int,
                        first: int, last: int) -> str:
        """UploadPartCopy: bytes first..last of the source object as part `number` (server-side)."""
        root = await self._xml("PUT", key, f"UploadPartCopy {number} of {key}",
                               {"partNumber": str(number), "uploadId": upload_id},
                               {"x-amz-copy-source": self._copy_source(source, source_key),
                                "x-amz-copy-source-range": f"bytes={first}-{last}"})
        etag = root.findtext("ETag")
        if not etag:
            raise Transient(f"UploadPartCopy {number} of {key}: no ETag in the answer")
        return etag

    async def start_multipart(self, key: str, attrs: ObjectAttrs) -> str:
        upload_id = await self._start_multipart(key, self._headers(attrs))
        self.events.upload_started(key, upload_id)
        return upload_id

    async def _start_multipart(self, key: str, extra: dict[str, str]) -> str:
        root = await self._xml("POST", key, f"CreateMultipartUpload {key}", {"uploads": ""}, extra)
        upload_id = root.findtext("UploadId")
        if not upload_id:
            raise Transient(f"CreateMultipartUpload {key}: no UploadId in the answer")
        return upload_id

    async def upload_part(self, key: str, upload_id: str, number: int, data: bytes | bytearray,
                          md5: str | None = None) -> str:
        response, _ = await self._send(
            "PUT", key, f"UploadPart {number} of {key}", {"partNumber": str(number), "uploadId": upload_id},
            {"content-md5": md5 or content_md5(data)}, data)
        etag = response.headers.get("etag")
        if not etag:
            raise Transient(f"UploadPart {number} of {key}: no ETag in the answer")
        return etag

    async def complete_multipart(self, key: str, upload_id: str, etags: list[str]) -> None:
        parts = "".join(f"<Part><PartNumber>{i + 1}</PartNumber><ETag>{html.escape(etag)}</ETag></Part>"
                        for i, etag in enumerate(etags))
        body = f"<CompleteMultipartUpload>{parts}</CompleteMultipartUpload>".encode()
        await self._xml("POST", key, f"CompleteMultipartUpload {key}", {"uploadId": upload_id},
                        {"content-type": "application/xml"}, body)
        self.events.upload_ended(key, upload_id)

    async def sizes_between(self, root: str, first: str, last: str, max_pages: int,
                            page_size: int = 1000) -> dict[str, int] | None:
        """Sizes of the keys under `root` from `first` to `last` (inclusive), by listing.

        One request lists up to 1,000 keys, where a HEAD tells about one. Returns None when
        the range holds more than `max_pages` pages of other keys (orphans): then HEADs are
        cheaper. Every key in [first, last] that exists is in the answer.
        """
        found: dict[str, int] = {}
        # Every key from first to last starts with what those two have in common: a prefix
        # that narrow lets the server walk only that part of the bucket.
        prefix = max(root, os.path.commonprefix([first, last]), key=len)
        # Keys come URL-encoded, so that any character survives XML; StartAfter is exclusive.
        query = {"list-type": "2", "prefix": prefix, "max-keys": str(page_size), "encoding-type": "url",
                 "start-after": first[:-1]}
        for _ in range(max_pages):
            page = await self._xml("GET", None, f"LIST {root}", query)
            encoded = (page.findtext("EncodingType") or "").lower() == "url"
            contents = page.findall("Contents")
            for item in contents:
                key = item.findtext("Key") or ""
                key = unquote_plus(key) if encoded else key
                if key > last:
                    return found
                found[key] = int(item.findtext("Size") or 0)
            token = page.findtext("NextContinuationToken")
            if (page.findtext("IsTruncated") or "").lower() != "true" or not contents or not token:
                return found
            if last in found:  # the page ended on the last key: the next one would start past it
                return found
            query = {k: v for k, v in query.items() if k != "start-after"}
            query["continuation-token"] = token
        return None

    # -- audit and fix: the whole bucket, ACLs, headers in place ---------------------------

    async def list_pages(self, prefix: str) -> AsyncIterator[list[tuple[str, int, float | None]]]:
        """Every key under `prefix` with its size and time of writing, a ListObjectsV2 page at a time."""
        query = {"list-type": "2", "prefix": prefix, "max-keys": "1000", "encoding-type": "url"}
        while True:
            page = await RETRIES.call(functools.partial(self._xml, "GET", None, f"LIST {prefix or '/'}", query))
            encoded = (page.findtext("EncodingType") or "").lower() == "url"
            found = []
            for item in page.findall("Contents"):
                key = item.findtext("Key") or ""
                found.append((unquote_plus(key) if encoded else key, int(item.findtext("Size") or 0),
                              _iso_time(item.findtext("LastModified"))))
            yield found
            token = page.findtext("NextContinuationToken")
            if (page.findtext("IsTruncated") or "").lower() != "true" or not token:
                return
            query["continuation-token"] = token

    async def public_read(self, key: str) -> bool:
        """Whether everyone may read the object (a READ grant to AllUsers: public-read)."""
        what = f"GetObjectAcl {key}"
        _, data = await self._send("GET", key, what, {"acl": ""})
        try:
            root = ET.fromstring(data)
        except ET.ParseError:
            root = None
        if root is None or root.tag.rpartition("}")[2] != "AccessControlPolicy":
            # Some servers ignore ?acl and send the object itself: they keep no ACL per object.
            raise Permanent(f"{what}: the endpoint answers no ACL (it keeps none per object)")
        for element in root.iter():
            element.tag = element.tag.rpartition("}")[2]
        return any(grant.findtext("Permission") in ("READ", "FULL_CONTROL")
                   and (grant.findtext("Grantee/URI") or "").endswith("/global/AllUsers")
                   for grant in root.iter("Grant"))

    async def clock_skew(self) -> float | None:
        """The endpoint's clock minus this machine's, in seconds, from a listing's Date header."""
        query = {"list-type": "2", "max-keys": "1"}
        if self.settings.key_prefix:
            query["prefix"] = full_key(self.settings.key_prefix, "")
        response, _ = await self._send("GET", None, "ListObjectsV2", query)
        moment = _http_time(response.headers.get("date"))
        return None if moment is None else moment - time.time()

    async def free_bytes(self) -> int | None:
        return None  # a bucket has no size to fill

    async def acls_disabled(self) -> str:
        """Why the bucket has no per-object ACLs ("" when it has them, or cannot tell): AWS's Object
        Ownership "bucket owner enforced" answers GetObjectAcl as if every object were private."""
        try:
            root = await self._xml("GET", None, "GetBucketOwnershipControls", {"ownershipControls": ""})
        except StorageError:
            return ""
        if any((rule.findtext("ObjectOwnership") or "") == "BucketOwnerEnforced" for rule in root.iter("Rule")):
            return "its Object Ownership is BucketOwnerEnforced: ACLs are disabled"
        return ""

    async def keeps_versions(self) -> bool:
        """Whether the bucket keeps old versions (a rewrite in place leaves one behind, billed)."""
        try:
            root = await self._xml("GET", None, "GetBucketVersioning", {"versioning": ""})
        except StorageError:
            return False
        return (root.findtext("Status") or "") == "Enabled"

    async def put_acl(self, key: str, acl: str) -> None:
        await self._send("PUT", key, f"PutObjectAcl {key}", {"acl": ""}, {"x-amz-acl": acl})

    async def set_attrs(self, key: str, attrs: ObjectAttrs, size: int = 0) -> None:
        """The object's headers (and ACL) set in place: CopyObject onto itself, REPLACE; over
        CopyObject's 5 GiB, a multipart upload of itself by UploadPartCopy (no byte through us)."""
        if size <= MAX_COPY_OBJECT:
            await self._xml("PUT", key, f"COPY {key} onto itself", {},
                            {**self._headers(attrs), "x-amz-copy-source": self._copy_source(self, key),
                             "x-amz-metadata-directive": "REPLACE", "x-amz-tagging-directive": "COPY"})
            return
        part = max(COPY_PART_MIN, -(-size // MAX_PARTS))
        upload_id = await self.start_multipart(key, attrs)
        try:
            etags = [await RETRIES.call(functools.partial(self.copy_part, self, key, key, upload_id, number, first,
                                                          min(first + part, size) - 1))
                     for number, first in enumerate(range(0, size, part), start=1)]
            await self.complete_multipart(key, upload_id, etags)
        except BaseException:
            await asyncio.shield(self.abort_multipart(key, upload_id))
            raise

    async def _abort_once(self, key: str, upload_id: str) -> None:
        try:
            await self._send("DELETE", key, f"AbortMultipartUpload {key}", {"uploadId": upload_id})
        except NotFound:
            pass  # already gone
        self.events.upload_ended(key, upload_id)

    async def abort_multipart(self, key: str, upload_id: str) -> bool:
        """Abort, retrying a little: an upload left open is billed until someone notices.

        Returns False when it could not be aborted; the resume state still lists it (it
        was recorded when it started) and the next run tries again.
        """
        try:
            await ABORT_RETRIES.call(lambda: self._abort_once(key, upload_id))
            return True
        except StorageError:
            return False


class _Redo(Exception):
    """Internal: the request is worth sending again at once (region or clock corrected)."""
