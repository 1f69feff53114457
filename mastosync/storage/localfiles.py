"""A folder on this machine, for folders.FolderStore: the os module in a pool of threads.

File system calls block, so each runs in a thread of a pool sized to the run's
concurrency (asyncio's default pool has a handful of threads, and fsync, which every
written file needs, would queue behind it).
"""

from __future__ import annotations

import asyncio
import errno
import grp
import os
import pwd
import stat
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from mastosync.errors import DiskFull, FolderError
from mastosync.storage.base import NotFound, Permanent, StorageError, Transient
from mastosync.storage.folders import FIRST_READ, Entry, parse_owner, safe_relative

T = TypeVar("T")
FULL = (errno.ENOSPC, errno.EDQUOT)
REFUSED = (errno.EACCES, errno.EPERM, errno.EROFS, errno.EISDIR, errno.ENOTDIR, errno.ENAMETOOLONG)


def classify(exc: OSError, what: str, root: str) -> Exception:
    """An OSError as the copier understands it: absent, worth a retry, or not."""
    if exc.errno in FULL:
        return DiskFull(f"{what}: the file system of {root} is full ({os.strerror(exc.errno or 0)}); the run "
                        "stops: free some space (or raise the quota) and run again, it resumes")
    if isinstance(exc, FileNotFoundError):
        return NotFound(f"{what}: no such file", code="NoSuchKey", status=404)
    detail = exc.strerror or str(exc)
    if exc.errno in REFUSED:
        return Permanent(f"{what}: {detail}")
    return Transient(f"{what}: {detail}")


class LocalReader:
    def __init__(self, fd: int, size: int, start: bytes, run: Callable[..., Any]) -> None:
        self.fd, self.size, self.start = fd, size, start
        self._run = run

    async def read(self, n: int, offset: int) -> bytes | bytearray:
        data: bytes | bytearray = await self._run(_read_exactly, self.fd, n, offset)
        return data

    async def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)  # does not block: nothing is flushed on a read-only descriptor
            self.fd = -1


def _read_exactly(fd: int, n: int, offset: int) -> bytearray:
    """n bytes at offset, in one buffer (fewer at the end of the file)."""
    buffer = bytearray(n)
    view, got = memoryview(buffer), 0
    while got < n:
        count = os.preadv(fd, [view[got:]], offset + got)
        if count == 0:
            return buffer[:got]
        got += count
    return buffer


class LocalWriter:
    def __init__(self, files: LocalFiles, fd: int, temporary: str, final: str, mode: int) -> None:
        self._files, self._fd, self._temporary, self._final, self._mode = files, fd, temporary, final, mode

    async def write(self, data: bytes | bytearray) -> None:
        await self._files.run(self._write, data, what=f"write {self._final}")

    def _write(self, data: bytes | bytearray) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(self._fd, view):]

    async def commit(self) -> None:
        await self._files.run(self._commit, what=f"write {self._final}")

    def _commit(self) -> None:
        os.fsync(self._fd)
        os.fchmod(self._fd, self._mode)  # exactly this mode, whatever the umask
        if self._files.owner is not None:
            os.fchown(self._fd, *self._files.owner)
        os.close(self._fd)
        self._fd = -1
        os.rename(self._temporary, self._final)
        # The rename is in the folder's entries: without this, a power cut could lose a file
        # the resume state already counts as copied.
        folder = os.open(os.path.dirname(self._final), os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(folder)
        finally:
            os.close(folder)

    async def discard(self) -> None:
        await asyncio.shield(self._files.loop_run(self._discard))

    def _discard(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        try:
            os.unlink(self._temporary)
        except FileNotFoundError:
            pass


class LocalFiles:
    """Files under `root` on this machine; `name` is the configuration section, for messages."""

    def __init__(self, root: str, name: str, threads: int, owner: str = "") -> None:
        self.root = root
        self.where = root
        self.name = name
        self.owner_text = owner
        self.owner: tuple[int, int] | None = None
        self._pool = ThreadPoolExecutor(max(4, min(threads, 64)), thread_name_prefix=f"mastosync-{name}")

    def path(self, key: str) -> str:
        return os.path.join(self.root, safe_relative(key))

    async def loop_run(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    async def run(self, fn: Callable[..., T], *args: Any, what: str) -> T:
        try:
            return await self.loop_run(fn, *args)
        except OSError as exc:
            raise classify(exc, what, self.root) from None

    async def stat_of(self, key: str) -> tuple[int, float] | None:
        try:
            found = await self.run(os.stat, self.path(key), what=f"stat {key}")
        except NotFound:
            return None
        return (found.st_size, found.st_mtime) if stat.S_ISREG(found.st_mode) else None

    async def free_bytes(self) -> int | None:
        try:
            found = await self.run(os.statvfs, self.root, what="free space")
        except StorageError:
            return None
        return found.f_bavail * found.f_frsize

    async def entries(self, key: str) -> list[Entry] | None:
        try:
            return await self.run(_entries, self.path(key), what=f"list {key or '/'}")
        except NotFound:
            return None
        except StorageError:
            return None  # not a folder, unreadable: the objects will ask one by one

    async def open_reader(self, key: str) -> LocalReader:
        fd, size, start = await self.run(_open_for_reading, self.path(key), what=f"read {key}")
        return LocalReader(fd, size, start, lambda *a: self.run(*a, what=f"read {key}"))

    async def open_writer(self, temporary: str, final: str, mode: int) -> LocalWriter:
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
        fd = await self.run(os.open, self.path(temporary), flags, 0o600, what=f"write {final}")
        return LocalWriter(self, fd, self.path(temporary), self.path(final), mode)

    async def make_dirs(self, key: str) -> None:
        await self.run(self._make_dirs, key, what=f"create folder {key}")

    def _make_dirs(self, key: str) -> None:
        path = self.root
        for part in safe_relative(key).split("/"):
            path = os.path.join(path, part)
            try:
                os.mkdir(path, 0o755)
            except FileExistsError:
                continue
            # 0755 whatever the umask: under umask 077 nginx would answer 403 for every file.
            os.chmod(path, 0o755)
            if self.owner is not None:
                os.chown(path, *self.owner)

    async def mode_of(self, key: str) -> int:
        return (await self.run(os.stat, self.path(key), what=f"stat {key}")).st_mode

    async def chmod(self, key: str, mode: int) -> None:
        await self.run(os.chmod, self.path(key), mode, what=f"chmod {key}")

    async def remove(self, key: str) -> None:
        await self.run(os.unlink, self.path(key), what=f"remove {key}")

    async def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    async def check(self, write: bool) -> None:
        where = f"{self.name}.root: {self.root}"
        if not os.path.exists(self.root):
            raise FolderError(f"{where} does not exist")
        if not os.path.isdir(self.root):
            raise FolderError(f"{where} is not a folder")
        try:
            os.listdir(self.root)
        except OSError as exc:
            raise FolderError(f"{where} cannot be read ({exc.strerror})") from None
        if not write:
            return
        if self.owner_text:
            self.owner = resolve_owner(self.owner_text)
        probe = os.path.join(self.root, f".mastosync-write-check.{os.getpid()}")
        try:
            fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                os.write(fd, b"mastosync")
                os.fsync(fd)
                if self.owner is not None:
                    os.fchown(fd, *self.owner)
            finally:
                os.close(fd)
                os.unlink(probe)
        except OSError as exc:
            problem = "cannot be written" if exc.errno != errno.EPERM else "refuses the owner"
            raise FolderError(f"{where} {problem} ({exc.strerror})") from None


def _entries(path: str) -> list[Entry]:
    found = []
    with os.scandir(path) as scan:
        for e in scan:
            if e.is_dir(follow_symlinks=False):
                found.append(Entry(e.name, True, 0))
            elif e.is_file(follow_symlinks=False):
                info = e.stat(follow_symlinks=False)
                found.append(Entry(e.name, False, info.st_size, info.st_mtime))
    return found


def _open_for_reading(path: str) -> tuple[int, int, bytes]:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        found = os.fstat(fd)
        if not stat.S_ISREG(found.st_mode):
            raise IsADirectoryError(errno.EISDIR, "not a regular file")
        return fd, found.st_size, os.pread(fd, FIRST_READ, 0)
    except BaseException:
        os.close(fd)
        raise


def resolve_owner(text: str) -> tuple[int, int]:
    """destination.owner as (uid, gid): names through this machine's user database."""
    user, group = parse_owner(text)
    try:
        entry = pwd.getpwuid(int(user)) if user.isdigit() else pwd.getpwnam(user)
        uid = entry.pw_uid
        gid = entry.pw_gid
    except KeyError:
        if not user.isdigit():
            raise FolderError(f"destination.owner: no user {user!r} on this machine") from None
        uid, gid = int(user), int(user)
    if group:
        try:
            gid = int(group) if group.isdigit() else grp.getgrnam(group).gr_gid
        except KeyError:
            raise FolderError(f"destination.owner: no group {group!r} on this machine") from None
    if os.geteuid() != 0 and (uid, gid) != (os.geteuid(), os.getegid()):
        raise FolderError(f"destination.owner: giving files to {text!r} needs mastosync to run as root")
    return uid, gid
