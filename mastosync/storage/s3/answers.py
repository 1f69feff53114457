"""What an S3 answer says: its error classified into the kinds of storage/base.py, and the
headers of an object (Head, times, Retry-After)."""

from __future__ import annotations

import asyncio
import calendar
import email.utils
import html
import re
import ssl
import time
from datetime import datetime
from typing import Any

from mastosync.redact import redact
from mastosync.storage.base import (
    Head,
    NotFound,
    Permanent,
    StorageError,
    Throttled,
    Transient,
    Unreachable,
)
from mastosync.storage.transport import (
    CertificateError,
    ConnectFailed,
    HTTPError,
)

TRANSIENT_STATUS = frozenset({408, 429, 500, 502, 503, 504})
TRANSIENT_CODES = frozenset({
    "SlowDown", "Throttling", "ThrottlingException", "RequestLimitExceeded", "TooManyRequests",
    "TooManyRequestsException", "InternalError", "ServiceUnavailable", "RequestTimeout",
    "RequestTimeoutException", "BadDigest", "IncompleteBody", "XAmzContentSHA256Mismatch",
    "OperationAborted", "PriorRequestNotComplete",
})
THROTTLE_CODES = frozenset({"SlowDown", "Throttling", "ThrottlingException", "RequestLimitExceeded",
                            "TooManyRequests", "TooManyRequestsException"})
NOT_FOUND_CODES = frozenset({"NoSuchKey", "NotFound", "NoSuchUpload"})
ACCESS_CODES = frozenset({"InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied",
                          "InvalidToken", "ExpiredToken"})
EXPIRED_CODES = frozenset({"ExpiredToken", "TokenRefreshRequired", "RequestExpired"})
REGION_CODES = frozenset({"PermanentRedirect", "AuthorizationHeaderMalformed", "IllegalLocationConstraintException",
                          "AuthorizationQueryParametersError"})
SKEW_CODES = frozenset({"RequestTimeTooSkewed", "RequestExpired", "InvalidSignatureException"})
# Stored headers that go with the bytes (besides Content-Type and Cache-Control).
KEPT_HEADERS = ("content-encoding", "content-disposition", "content-language", "expires")
# Properties of the object itself (not of its content) that CopyObject onto itself resets
# unless they are sent again.
KEPT_IN_PLACE = ("x-amz-storage-class", "x-amz-server-side-encryption", "x-amz-server-side-encryption-aws-kms-key-id",
                 "x-amz-server-side-encryption-bucket-key-enabled", "x-amz-website-redirect-location")
ERROR_CODE = re.compile(rb"<Code>([^<]*)</Code>")
ERROR_MESSAGE = re.compile(rb"<Message>([^<]*)</Message>")
ERROR_BODY_LIMIT = 64 * 1024

def answer_error(what: str, status: int, body: bytes, retry_after: float | None = None) -> StorageError:
    """The error an S3 answer stands for, from its status and (if any) its XML error body."""
    found = ERROR_CODE.search(body)
    code = html.unescape(found.group(1).decode("utf-8", "replace")) if found else ""
    found = ERROR_MESSAGE.search(body)
    message = html.unescape(found.group(1).decode("utf-8", "replace")) if found else ""
    text = redact(f"{what}: {code or status}{': ' + message if message else ''}")
    if code in NOT_FOUND_CODES or (status == 404 and code != "NoSuchBucket"):
        return NotFound(text, code, status)
    if code in TRANSIENT_CODES or (status in TRANSIENT_STATUS and code not in ACCESS_CODES):
        kind = Throttled if code in THROTTLE_CODES or status in (429, 503) else Transient
        return kind(text, code=code, status=status, retry_after=retry_after)
    return Permanent(text, code, status)


def classify(exc: BaseException, what: str) -> StorageError:
    """Any exception from an S3 call → NotFound, Transient or Permanent."""
    if isinstance(exc, StorageError):
        return exc
    if isinstance(exc, ssl.SSLCertVerificationError | CertificateError):
        return Permanent(redact(f"{what}: the endpoint's TLS certificate is not trusted ({exc.verify_message})"))
    if isinstance(exc, ConnectFailed):
        return Unreachable(redact(f"{what}: {exc}"))
    if isinstance(exc, (HTTPError, OSError, asyncio.TimeoutError, asyncio.IncompleteReadError)):
        detail = str(exc) or type(exc).__name__
        return Transient(redact(f"{what}: {detail}"))
    return Permanent(redact(f"{what}: unexpected {type(exc).__name__}: {exc}"))


def _head(headers: Any, size: int) -> Head:
    kept = tuple((name, value) for name, value in ((k.lower(), v) for k, v in headers.items())
                 if name in KEPT_HEADERS or name.startswith("x-amz-meta-"))
    encrypted = (headers.get("x-amz-server-side-encryption", "").lower().startswith("aws:kms")
                 or "x-amz-server-side-encryption-customer-algorithm" in headers)
    in_place = tuple((name, headers[name]) for name in KEPT_IN_PLACE if headers.get(name))
    return Head(size, headers.get("etag"), headers.get("content-type"), headers.get("cache-control"), kept,
                encrypted, _http_time(headers.get("last-modified")), in_place,
                "x-amz-server-side-encryption-customer-algorithm" in headers)


def _iso_time(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


_MONTHS = {m: n for n, m in enumerate(("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov",
                                         "Dec"), start=1)}


def _http_time(value: str | None) -> float | None:
    """Seconds since the epoch of an HTTP date. Every answer has one (Last-Modified): the
    IMF-fixdate S3 sends ("Sun, 06 Nov 1994 08:49:37 GMT") is read directly, other forms
    through email.utils (ten times the CPU)."""
    if not value:
        return None
    parts = value.split()
    if len(parts) == 6 and parts[5] == "GMT" and parts[2] in _MONTHS:
        try:
            hours, minutes, seconds = parts[4].split(":")
            return float(calendar.timegm((int(parts[3]), _MONTHS[parts[2]], int(parts[1]), int(hours), int(minutes),
                                          int(seconds), 0, 0, 0)))
        except ValueError:
            pass
    try:
        return email.utils.parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError):
        return None


def _retry_after(headers: Any) -> float | None:
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return min(300.0, max(0.0, float(value)))
    except ValueError:
        try:
            moment = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        return min(300.0, max(0.0, moment.timestamp() - time.time()))
