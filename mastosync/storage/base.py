"""What every store says of an object and of a failure: Head, and the storage error tree.

Every error of a storage call is classified once, where it happens (s3.classify,
localfiles.classify, sftpfiles.SftpFiles.classify), into the kinds the copier acts on:

    StorageError                 a failed call; the message is safe to show
    ├── NotFound                 the object (or upload) does not exist
    ├── Transient                worth retrying: server errors, resets, timeouts, short bodies
    │   ├── Throttled            the provider asks us to slow down (503 SlowDown, 429)
    │   └── Unreachable          no connection could be made at all
    └── Permanent                retrying will not help: access denied, bad request

Errors that end the run rather than the object (an endpoint down, a full disk, expired
credentials) are MastosyncErrors (errors.py), never StorageErrors.
"""

from __future__ import annotations

import base64
import hashlib
import re
from dataclasses import dataclass
from typing import NamedTuple, Protocol

PLAIN_MD5 = re.compile(r"^[0-9a-f]{32}$")


class StorageError(Exception):
    """A failed storage call, already classified; the message is safe to show."""

    throttled = False
    unreachable = False

    def __init__(self, message: str, code: str = "", status: int = 0) -> None:
        super().__init__(message)
        self.code = code  # the S3 error code, when the server answered with one
        self.status = status  # the HTTP status, when the server answered


class NotFound(StorageError):
    """The object does not exist."""


class Transient(StorageError):
    """Worth retrying: server errors, resets, timeouts, truncated bodies."""

    def __init__(self, message: str, code: str = "", status: int = 0, retry_after: float | None = None) -> None:
        super().__init__(message, code, status)
        self.retry_after = retry_after  # seconds the server asked us to wait, if it did


class Throttled(Transient):
    """The provider asks us to slow down: the pacer lowers the requests in flight."""

    throttled = True


class Unreachable(Transient):
    """No connection could be made at all (a wrong endpoint fails the checks at once)."""

    unreachable = True


class Permanent(StorageError):
    """Retrying will not help: access denied, no such bucket, bad request."""


@dataclass(frozen=True, slots=True)
class Head:
    """What mastosync needs to know of a stored object."""

    size: int
    etag: str | None = None
    content_type: str | None = None
    cache_control: str | None = None
    # Other stored headers to copy with it (KEPT_HEADERS, x-amz-meta-*), lower-case names.
    metadata: tuple[tuple[str, str], ...] = ()
    encrypted: bool = False  # SSE-KMS, DSSE-KMS or SSE-C: the ETag is not an MD5
    last_modified: float | None = None  # seconds since the epoch, when the store tells
    # What a rewrite in place (fix: CopyObject onto itself) must send again or lose: storage
    # class, server-side encryption and its key, a website redirect. Lower-case names.
    kept_in_place: tuple[tuple[str, str], ...] = ()
    customer_key: bool = False  # SSE-C: nothing can be done to it without that key

    @property
    def md5(self) -> str | None:
        """The MD5 of the bytes (hex), when the ETag is one: a single-part upload without SSE-KMS/SSE-C."""
        etag = (self.etag or "").strip('"').lower()
        return etag if PLAIN_MD5.match(etag) and not self.encrypted else None


@dataclass(frozen=True, slots=True)
class ObjectAttrs:
    """How an object is written: what Mastodon's upload would have stored with it. Each store
    keeps what it can: a bucket as headers (Content-Type, Cache-Control, the ACL, or `private`,
    the storage class, the source's other stored headers), a folder as the file's mode."""

    content_type: str | None = None
    cache_control: str | None = None
    private: bool = False  # kept from the public: a private ACL, or a mode only Mastodon reads
    mode: int = 0o644  # a folder's file
    metadata: tuple[tuple[str, str], ...] = ()  # other stored headers (x-amz-meta-*, ...), lower-case
    # A rewrite in place (fix) sends these again, or CopyObject resets them: the storage
    # class, server-side encryption, a website redirect (Head.kept_in_place).
    kept_in_place: tuple[tuple[str, str], ...] = ()

    @classmethod
    def of(cls, head: Head, private: bool, mode: int = 0o644) -> ObjectAttrs:
        """An object written as `head` says it was stored, private or not."""
        return cls(head.content_type, head.cache_control, private, mode, head.metadata)


def content_md5(data: bytes | bytearray) -> str:
    """The Content-MD5 header of a body: the server refuses it (BadDigest) if damaged on the way."""
    return base64.b64encode(hashlib.md5(data).digest()).decode()


ABSENT = -1  # a listing showed the key does not exist


class Known(NamedTuple):
    """What listing told of an object's sizes before the copy, side by side: a size, ABSENT
    (the listing showed no such key), or None (not known: ask with HEAD). The one way
    mastosync says unknown or absent."""

    source_size: int | None = None
    destination_size: int | None = None


class UploadEvents(Protocol):
    """Told (key, upload id) when a multipart upload (or a large file's temporary) starts and
    when it is completed or aborted, so that the resume state knows what a crash may leave
    open. Given to a store when it is made (engine/events.py: the whole set of events)."""

    def upload_started(self, key: str, upload_id: str) -> None: ...

    def upload_ended(self, key: str, upload_id: str) -> None: ...


class NoUploadEvents:
    def upload_started(self, key: str, upload_id: str) -> None:
        pass

    def upload_ended(self, key: str, upload_id: str) -> None:
        pass


UNTOLD: UploadEvents = NoUploadEvents()
