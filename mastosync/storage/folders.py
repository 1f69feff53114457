"""A folder as storage: Mastodon's local `public/system`, on this machine or on the SSH host.

Mastodon writes the same relative keys on disk as in a bucket (`cache/` included), so a
key is a relative path under `root`. `FolderStore` offers the calls the copier makes of a
bucket (head, get, put, multipart, listing a key range) on top of a few file operations,
`Files`, which `localfiles.LocalFiles` does with the os module and `sftpfiles.SftpFiles`
over SFTP.

Reading: the size from the file; the Content-Type from the first bytes (sniff.py), the
Cache-Control Mastodon sends with every upload; no ETag, so a copy is proven by the
destination's check of our Content-MD5. Writing: into a temporary file beside the real
one (`.<name>.<token>.mastosync-partial`), written, fsync'd, given its mode (and owner),
then renamed: never a half file under the real name. A large object is the same
temporary file written part by part, its name the "upload id" that the resume state keeps,
so a crash leaves nothing the next run does not remove.
"""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import AsyncIterator, Generator
from dataclasses import dataclass
from types import TracebackType
from typing import Protocol

from mastosync.errors import FolderError
from mastosync.mastodon.layout import MASTODON_CACHE_CONTROL
from mastosync.storage.base import (
    UNTOLD,
    Head,
    NotFound,
    ObjectAttrs,
    Permanent,
    StorageError,
    Transient,
    UploadEvents,
)
from mastosync.storage.retry import Pacer, RetryPolicy
from mastosync.storage.sniff import SNIFF_BYTES, content_type

PARTIAL_SUFFIX = ".mastosync-partial"
FIRST_READ = 64 * 1024  # read with the open: a small file then needs no second request


@dataclass(frozen=True, slots=True)
class Entry:
    name: str
    is_dir: bool
    size: int
    mtime: float = 0.0


class Reader(Protocol):
    size: int
    start: bytes  # the first FIRST_READ bytes (all of a small file), read with the open

    async def read(self, n: int, offset: int) -> bytes | bytearray: ...

    async def close(self) -> None: ...


class Writer(Protocol):
    async def write(self, data: bytes | bytearray) -> None: ...

    async def commit(self) -> None:
        """fsync, set the mode (and owner), rename onto the real name."""

    async def discard(self) -> None:
        """Close and remove the temporary file."""


class Files(Protocol):
    """The file operations a folder store needs, each raising a classified StorageError
    (NotFound, Transient, Permanent) or DiskFull."""

    where: str  # for messages: "/srv/x" or "mastodon@host:22:/srv/x"

    async def free_bytes(self) -> int | None:
        """Bytes free for an unprivileged writer under the root, when that can be told."""
        ...

    async def stat_of(self, path: str) -> tuple[int, float] | None:
        """(size, mtime) of a regular file, None when there is none."""
        ...

    async def entries(self, path: str) -> list[Entry] | None: ...

    async def open_reader(self, path: str) -> Reader: ...

    async def open_writer(self, temporary: str, final: str, mode: int) -> Writer: ...

    async def make_dirs(self, path: str) -> None: ...

    async def remove(self, path: str) -> None: ...

    async def mode_of(self, path: str) -> int: ...

    async def chmod(self, path: str, mode: int) -> None: ...

    async def check(self, write: bool) -> None:
        """Raise FolderError if the root cannot be read (and written, with its owner)."""

    async def close(self) -> None: ...


class FolderBody:
    """A file's content, read in the exact pieces the copier asks for."""

    def __init__(self, reader: Reader, what: str) -> None:
        self._reader = reader
        self._what = what
        self._offset = 0

    async def read(self, size: int, last: bool) -> bytes | bytearray:
        start, offset = self._reader.start, self._offset
        if offset + size <= len(start):  # a small file: read with the open already
            self._offset += size
            return start if (offset, size) == (0, len(start)) else start[offset:offset + size]
        data = await self._reader.read(size, self._offset)
        if len(data) != size:
            raise Transient(f"{self._what}: the file changed while being read (got {len(data)} of {size} bytes)")
        self._offset += size
        return data

    async def aclose(self) -> None:
        await self._reader.close()


class FolderStore:
    """A folder as the copier's source or destination. Use as an async context manager."""

    key_prefix = ""  # keys are paths under root (a folder has no S3_KEY_PREFIX)
    # A file keeps its bytes only: no headers, no ETag, no checksum to check a write against.
    keeps_metadata = False
    pacer: Pacer | None = None  # a folder is not paced

    def __init__(self, files: Files, label: str, events: UploadEvents = UNTOLD) -> None:
        self.files = files
        self.label = label
        self.events = events  # as Bucket's: told when a large write starts and when it ends
        self._writers: dict[str, Writer] = {}
        self._made: set[str] = set()  # folders known to exist: one mkdir per folder per run

    def describe(self) -> str:
        return f"{self.label} folder {self.files.where}"

    async def __aenter__(self) -> FolderStore:
        return self

    async def __aexit__(self, et: type[BaseException] | None, e: BaseException | None,
                        tb: TracebackType | None) -> None:
        for writer in self._writers.values():
            await writer.discard()
        await self.files.close()

    def ensure_up(self, what: str) -> None:
        pass  # a folder has no endpoint to declare down: its errors speak for themselves

    async def check(self, write: bool = False, policy: RetryPolicy | None = None,
                    attrs: ObjectAttrs | None = None) -> None:
        await self.files.check(write)

    # -- reading --------------------------------------------------------------------------

    async def head(self, key: str) -> Head | None:
        found = await self.files.stat_of(key)
        return None if found is None else Head(found[0], last_modified=found[1])

    async def get(self, key: str) -> tuple[Head, FolderBody]:
        reader = await self.files.open_reader(key)
        head = Head(reader.size, content_type=content_type(reader.start[:SNIFF_BYTES]),
                    cache_control=MASTODON_CACHE_CONTROL)
        return head, FolderBody(reader, f"read {key}")

    async def sizes_between(self, root: str, first: str, last: str, max_pages: int,
                            page_size: int = 1000) -> dict[str, int] | None:
        """Sizes of the files from key `first` to `last`, by walking only the folders that can
        hold such keys (the id partitions of one batch), as a bucket lists a key range.
        None when that means reading more than max_pages × page_size entries."""
        partials: list[str] = []
        walk = walk_range(first, last, max_pages * page_size, partials)
        try:
            folder = next(walk)
            while True:
                folder = walk.send(await self.files.entries(folder))
        except StopIteration as done:
            found: dict[str, int] | None = done.value
        for key in partials:  # left by a crash (small files are not in the resume state)
            try:
                await self.files.remove(key)
            except StorageError:
                pass  # removed meanwhile, or not ours to remove: no reason to fail a listing
        return found

    async def list_pages(self, prefix: str) -> AsyncIterator[list[tuple[str, int, float | None]]]:
        """Every file under the folder `prefix` with its size, a folder at a time (partial
        files of ours included: they are not objects)."""
        pending = [prefix]
        while pending:
            folder = pending.pop()
            entries = await self.files.entries(folder)
            if entries is None:
                continue
            pending.extend(f"{folder}{e.name}/" for e in entries if e.is_dir)
            files: list[tuple[str, int, float | None]] = [(f"{folder}{e.name}", e.size, e.mtime)
                                                          for e in entries if not e.is_dir]
            if files:
                yield files

    async def public_read(self, key: str) -> bool:
        """Whether the web server may serve the file: readable by others (0644, not 0600)."""
        return bool(await self.files.mode_of(key) & 0o004)

    async def clock_skew(self) -> float | None:
        return None  # nothing signed, nothing to be skewed

    async def free_bytes(self) -> int | None:
        return await self.files.free_bytes()

    async def acls_disabled(self) -> str:
        return ""  # a file's mode always says who reads it

    async def keeps_versions(self) -> bool:
        return False  # a file rewritten is the only copy

    async def put_acl(self, key: str, acl: str) -> None:
        await self.files.chmod(key, 0o600 if acl == "private" else 0o644)

    async def set_attrs(self, key: str, attrs: ObjectAttrs, size: int = 0) -> None:
        await self.files.chmod(key, attrs.mode)  # a file has no headers; its mode stands for an ACL

    # -- writing --------------------------------------------------------------------------

    async def put(self, key: str, data: bytes | bytearray, md5: str, attrs: ObjectAttrs) -> None:
        writer = await self._open(key, attrs, self._temporary_for(key))
        try:
            await writer.write(data)
            await writer.commit()
        except BaseException:
            await writer.discard()
            raise

    async def start_multipart(self, key: str, attrs: ObjectAttrs) -> str:
        # The id is the temporary file, what an abort removes. It is recorded before the file
        # exists: a crash at any moment leaves nothing the next run does not know of.
        upload_id = self._temporary_for(key)
        self.events.upload_started(key, upload_id)
        try:
            self._writers[upload_id] = await self._open(key, attrs, upload_id)
        except BaseException:
            self.events.upload_ended(key, upload_id)
            raise
        return upload_id

    async def upload_part(self, key: str, upload_id: str, number: int, data: bytes | bytearray,
                          md5: str | None = None) -> str:
        await self._writers[upload_id].write(data)  # parts come in order, one at a time
        return f"part-{number}"

    async def complete_multipart(self, key: str, upload_id: str, etags: list[str]) -> None:
        await self._writers[upload_id].commit()
        del self._writers[upload_id]
        self.events.upload_ended(key, upload_id)

    async def abort_multipart(self, key: str, upload_id: str) -> bool:
        """Remove the temporary file of an unfinished write (of this run, or left by a crash)."""
        writer = self._writers.pop(upload_id, None)
        if writer is not None:
            await writer.discard()
        elif is_partial(upload_id):
            try:
                await self.files.remove(upload_id)
            except NotFound:
                pass
        self.events.upload_ended(key, upload_id)
        return True

    @staticmethod
    def _temporary_for(key: str) -> str:
        """A new temporary name beside `key`: hidden, and marked as ours."""
        folder, _, name = key.rpartition("/")
        return f"{folder}/" * bool(folder) + f".{name}.{secrets.token_hex(4)}{PARTIAL_SUFFIX}"

    async def _open(self, key: str, attrs: ObjectAttrs, temporary: str) -> Writer:
        folder = key.rpartition("/")[0]
        if folder and folder not in self._made:
            await self.files.make_dirs(folder)
            self._made.add(folder)
        return await self.files.open_writer(temporary, key, attrs.mode)


def is_partial(key: str) -> bool:
    """Whether `key` names one of our temporary files (never remove anything else)."""
    name = key.rpartition("/")[2]
    return name.startswith(".") and name.endswith(PARTIAL_SUFFIX) and ".." not in key.split("/")


STALE_PARTIAL = 15 * 60  # seconds untouched after which a partial file is a crash's leftover


def walk_range(first: str, last: str, budget: int, stale: list[str] | None = None,
               now: float | None = None) -> Generator[str, list[Entry] | None, dict[str, int] | None]:
    """The folders to read (yielded; send back their entries, None if absent), then the
    sizes of the files with keys in [first, last] — or None past `budget` entries.

    Written once as a generator so that a local walk and an SFTP walk share it. A folder
    is entered only if keys under it can fall in the range: its "name/" is at most `last`
    and not wholly before `first`. Partial files untouched for STALE_PARTIAL seconds (a
    write in progress touches its file all the time) are added to `stale`.
    """
    now = time.time() if now is None else now
    common = os.path.commonprefix([first, last])
    top = common[:common.rfind("/") + 1]  # "" is the root
    found: dict[str, int] = {}
    pending, seen = [top], 0
    while pending:
        folder = pending.pop()
        entries = yield folder
        if entries is None:
            continue
        seen += len(entries)
        if seen > budget:
            return None
        for entry in entries:
            key = folder + entry.name
            if entry.is_dir:
                below = key + "/"
                if below <= last and first[:len(below)] <= below:
                    pending.append(below)
            elif is_partial(key):  # never an object, whatever its name sorts beside
                if stale is not None and now - entry.mtime > STALE_PARTIAL:
                    stale.append(key)
            elif first <= key <= last:
                found[key] = entry.size
    return found


def parse_owner(text: str) -> tuple[str, str]:
    """"mastodon" → ("mastodon", ""); "mastodon:www-data" and "991:991" split at the colon."""
    user, _, group = text.partition(":")
    if not user:
        raise FolderError(f"destination.owner: expected a user, user:group or uid:gid, got {text!r}")
    return user, group


def safe_relative(key: str) -> str:
    """`key` as a path under the root; a key that would leave the root (an absolute path, a
    ".." segment: never one Mastodon writes) is refused rather than followed."""
    parts = key.split("/")
    if key.startswith("/") or ".." in parts or "\0" in key:
        raise Permanent(f"{key!r}: not a relative path under the folder's root")
    return key
