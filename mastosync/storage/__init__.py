"""Where objects are kept: the interface the copier and the pipeline use, and the choice of backend.

    kind = "s3"          storage.Bucket          a bucket on an S3-compatible endpoint
    kind = "filesystem"  folders.FolderStore     a folder on this machine (localfiles)
    kind = "sftp"        folders.FolderStore     a folder on the [ssh] host (sftpfiles)

Every command works for every pair: the copier reads with `get`, writes with `put` or a
multipart upload, and learns sizes with `head` and `sizes_between`. What an object is
written with is an ObjectAttrs (type, cache control, private, mode); each store keeps what
it can of it (a bucket: headers and an ACL; a folder: the file's mode).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol

from mastosync.config.settings import BucketSettings, DestinationSettings
from mastosync.storage.base import UNTOLD, Head, ObjectAttrs, UploadEvents
from mastosync.storage.limits import request_limit
from mastosync.storage.retry import Pacer, RetryPolicy

if TYPE_CHECKING:  # asyncssh costs 16 MB and 0.3 s at start: imported only when a side needs it
    from mastosync.tunnel import Tunnel


class Body(Protocol):
    async def read(self, size: int, last: bool) -> bytes | bytearray: ...

    async def aclose(self) -> None: ...


class Objects(Protocol):
    """The core every backend has: an object's head, its bytes in and out, key ranges listed."""

    label: str
    keeps_metadata: bool  # headers, ETags, Content-MD5 checks: a bucket; a folder keeps bytes only
    events: UploadEvents  # told when a multipart upload (a large file's temporary) starts and ends

    @property
    def key_prefix(self) -> str: ...

    @property
    def pacer(self) -> Pacer | None: ...  # an endpoint's pacing (a bucket's), read by --metrics

    def describe(self) -> str: ...

    async def __aenter__(self) -> Any: ...

    async def __aexit__(self, et: type[BaseException] | None, e: BaseException | None,
                        tb: TracebackType | None) -> None: ...

    def ensure_up(self, what: str) -> None: ...

    async def check(self, write: bool = False, policy: RetryPolicy | None = None,
                    attrs: ObjectAttrs | None = None) -> None: ...

    async def head(self, key: str) -> Head | None: ...

    async def get(self, key: str) -> tuple[Head, Body]: ...

    async def put(self, key: str, data: bytes | bytearray, md5: str, attrs: ObjectAttrs) -> None: ...

    async def start_multipart(self, key: str, attrs: ObjectAttrs) -> str: ...

    async def upload_part(self, key: str, upload_id: str, number: int, data: bytes | bytearray,
                          md5: str | None = None) -> str: ...

    async def complete_multipart(self, key: str, upload_id: str, etags: list[str]) -> None: ...

    async def abort_multipart(self, key: str, upload_id: str) -> bool: ...

    async def sizes_between(self, root: str, first: str, last: str, max_pages: int,
                            page_size: int = 1000) -> dict[str, int] | None: ...

    def list_pages(self, prefix: str) -> AsyncIterator[list[tuple[str, int, float | None]]]: ...


class Visibility(Protocol):
    """Who may read an object, after it is written: a bucket's ACL, a file's mode (run's
    visibility pass, verify's check, audit and fix)."""

    async def public_read(self, key: str) -> bool: ...

    async def put_acl(self, key: str, acl: str) -> None: ...

    async def set_attrs(self, key: str, attrs: ObjectAttrs, size: int = 0) -> None: ...


class Admin(Protocol):
    """What the checks before and around a run ask of the place (check, audit, fix)."""

    async def keeps_versions(self) -> bool: ...

    async def acls_disabled(self) -> str: ...

    async def clock_skew(self) -> float | None: ...

    async def free_bytes(self) -> int | None: ...


class Store(Objects, Visibility, Admin, Protocol):
    """What every backend is (mypy proves Bucket and FolderStore conform: make_store returns
    one). Server-side copy is a capability only some have (ServerSideCopy)."""


class ServerSideCopy(Protocol):
    """A capability, not every store's: copying from another store on the same endpoint and
    account, the bytes never passing through mastosync (a bucket: CopyObject, UploadPartCopy)."""

    max_copy_object: int  # the largest object copied in one request; larger ones go by parts
    copy_part_min: int  # the smallest part worth a request when copying by parts

    async def copy(self, source: Any, source_key: str, key: str, attrs: ObjectAttrs) -> None: ...

    async def copy_part(self, source: Any, source_key: str, key: str, upload_id: str, number: int,
                        first: int, last: int) -> str: ...


def needs_ssh(*sides: BucketSettings) -> bool:
    return any(side.kind == "sftp" for side in sides)


def make_store(side: BucketSettings, label: str, pool: int, timeout: float, tunnel: Tunnel | None,
               acl: str | None = None, tpslimit: float = 0.0, events: UploadEvents = UNTOLD) -> Store:
    """The store for one side of the copy (to be entered as an async context manager); `acl`:
    what a side other than the destination is written with (fix --side source)."""
    owner = side.owner if isinstance(side, DestinationSettings) else ""
    if side.kind == "filesystem":
        from mastosync.storage.folders import FolderStore
        from mastosync.storage.localfiles import LocalFiles

        return FolderStore(LocalFiles(side.root, label, pool, owner), label, events)
    if side.kind == "sftp":
        from mastosync.storage.folders import FolderStore
        from mastosync.storage.sftpfiles import SftpFiles

        if tunnel is None:  # connect.open_ssh opens it for every sftp side: a wiring defect
            raise TypeError(f"{label}: an sftp side needs the SSH connection")
        return FolderStore(SftpFiles(tunnel, side.root, label, owner), label, events)
    # aiohttp costs 0.3 s of CPU at start: a parent of --processes, or a folder-to-folder run, has
    # no use for it.
    from mastosync.storage.s3 import Bucket

    return Bucket(side, pool, timeout, label, acl, request_limit(tpslimit), events)
