"""A folder on the Mastodon host, for folders.FolderStore: SFTP over the [ssh] login.

The SFTP client runs on the connection that the database tunnel uses (tunnel.Tunnel):
one SSH login for both, and one reconnect when it drops (the copies in flight fail
transiently and are retried on the new connection). SFTP requests are pipelined on the
one channel, so many copies share it without a connection each.
"""

from __future__ import annotations

import posixpath
import shlex
import stat
from typing import Any

import asyncssh

from mastosync.errors import DiskFull, FolderError, TunnelError
from mastosync.storage.base import NotFound, Permanent, StorageError, Transient, Unreachable
from mastosync.storage.folders import FIRST_READ, Entry, parse_owner, safe_relative
from mastosync.tunnel import Tunnel

ABSENT = (asyncssh.SFTPNoSuchFile, asyncssh.SFTPNoSuchPath)
REFUSED = (asyncssh.SFTPPermissionDenied, asyncssh.SFTPWriteProtect, asyncssh.SFTPFileIsADirectory,
           asyncssh.SFTPNotADirectory, asyncssh.SFTPInvalidFilename, asyncssh.SFTPOpUnsupported)
FULL = (asyncssh.SFTPNoSpaceOnFilesystem, asyncssh.SFTPQuotaExceeded)


class SftpFiles:
    """Files under `root` on the SSH host."""

    def __init__(self, tunnel: Tunnel, root: str, name: str, owner: str = "") -> None:
        self.tunnel = tunnel
        self.root = root
        self.name = name
        self.where = f"{tunnel.where}:{root}"
        self.owner_text = owner
        self.owner: tuple[int, int] | None = None

    def path(self, key: str) -> str:
        return posixpath.join(self.root, safe_relative(key))

    async def _client(self, what: str) -> asyncssh.SFTPClient:
        try:
            return await self.tunnel.sftp()
        except TunnelError as exc:  # reconnecting failed: worth another try later, like a reset
            raise Unreachable(f"{what}: {exc}") from None

    async def classify(self, exc: Exception, what: str) -> Exception:
        if isinstance(exc, StorageError | DiskFull):
            return exc
        if isinstance(exc, ABSENT):
            return NotFound(f"{what}: no such file", code="NoSuchKey", status=404)
        if isinstance(exc, FULL) or (isinstance(exc, asyncssh.SFTPFailure) and await self._full()):
            return DiskFull(f"{what}: the file system of {self.where} is full; the run stops: free some space "
                            "(or raise the quota) and run again, it resumes")
        if isinstance(exc, REFUSED):
            return Permanent(f"{what}: {getattr(exc, 'reason', exc)}")
        if isinstance(exc, asyncssh.SFTPError):
            return Transient(f"{what}: {exc.reason}")
        return Unreachable(f"{what}: SSH connection: {exc or type(exc).__name__}")

    async def _full(self) -> bool:
        """Whether a generic SFTP failure on a write is the disk being full (OpenSSH's
        sftp-server reports ENOSPC as a plain "Failure")."""
        try:
            sftp = await self.tunnel.sftp()
            space = await sftp.statvfs(self.root)
        except (asyncssh.Error, OSError, TunnelError):
            return False
        return space.bavail * space.frsize < 1024 * 1024

    async def _call(self, what: str, op: str, *args: Any, **kwargs: Any) -> Any:
        sftp = await self._client(what)
        try:
            return await getattr(sftp, op)(*args, **kwargs)
        except (asyncssh.Error, OSError) as exc:
            raise await self.classify(exc, what) from None

    async def stat_of(self, key: str) -> tuple[int, float] | None:
        try:
            attrs = await self._call(f"stat {key}", "stat", self.path(key))
        except NotFound:
            return None
        if attrs.permissions is not None and not stat.S_ISREG(attrs.permissions):
            return None
        return attrs.size, float(attrs.mtime or 0)

    async def free_bytes(self) -> int | None:
        try:
            found = await self._call("free space", "statvfs", self.root)  # statvfs@openssh.com
        except StorageError:
            return None
        return int(found.f_bavail * found.f_frsize)

    async def entries(self, key: str) -> list[Entry] | None:
        try:
            names = await self._call(f"list {key or '/'}", "readdir", self.path(key) if key else self.root)
        except StorageError:
            return None  # absent or unreadable: the objects will ask one by one
        found = []
        for name in names:
            if name.filename in (".", ".."):
                continue
            mode = name.attrs.permissions or 0
            if stat.S_ISDIR(mode) or stat.S_ISREG(mode):
                found.append(Entry(name.filename, stat.S_ISDIR(mode), name.attrs.size or 0, name.attrs.mtime or 0))
        return found

    async def open_reader(self, key: str) -> SftpReader:
        what = f"read {key}"
        f = await self._call(what, "open", self.path(key), "rb")
        try:
            attrs = await f.stat()
            if attrs.permissions is not None and not stat.S_ISREG(attrs.permissions):
                raise Permanent(f"{what}: not a regular file")
            start = await f.read(min(FIRST_READ, attrs.size or 0), 0) if attrs.size else b""
        except BaseException as exc:
            await _close_quietly(f)
            if isinstance(exc, asyncssh.Error | OSError):
                raise await self.classify(exc, what) from None
            raise
        return SftpReader(self, f, attrs.size or 0, bytes(start), what)

    async def open_writer(self, temporary: str, final: str, mode: int) -> SftpWriter:
        f = await self._call(f"write {final}", "open", self.path(temporary), "xb")
        return SftpWriter(self, f, self.path(temporary), self.path(final), mode, f"write {final}")

    async def make_dirs(self, key: str) -> None:
        """Each missing folder of `key`, 0755 whatever the SSH user's umask (nginx serves from
        them; Mastodon writes into them), and given to the owner if there is one. Folders that
        exist are left as they are."""
        path = self.root
        for part in key.split("/"):
            path = posixpath.join(path, part)
            try:
                await self._call(f"create folder {key}", "mkdir", path)
            except StorageError:
                if await self._call(f"create folder {key}", "isdir", path):
                    continue  # there already (or made meanwhile by another copy)
                raise
            await self._call(f"create folder {key}", "chmod", path, 0o755)
            if self.owner is not None:
                await self._call(f"create folder {key}", "chown", path, self.owner[0], self.owner[1])

    async def mode_of(self, key: str) -> int:
        return int((await self._call(f"stat {key}", "stat", self.path(key))).permissions or 0)

    async def chmod(self, key: str, mode: int) -> None:
        await self._call(f"chmod {key}", "chmod", self.path(key), mode)

    async def remove(self, key: str) -> None:
        await self._call(f"remove {key}", "remove", self.path(key))

    async def close(self) -> None:
        pass  # the SFTP client belongs to the tunnel, which closes it

    async def check(self, write: bool) -> None:
        where = f"{self.name}.root: {self.root} on {self.tunnel.where}"
        try:
            sftp = await self.tunnel.sftp()
        except TunnelError as exc:
            raise FolderError(f"{where}: {exc}") from None
        try:
            attrs = await sftp.stat(self.root)
        except ABSENT:
            raise FolderError(f"{where} does not exist") from None
        except asyncssh.SFTPError as exc:
            raise FolderError(f"{where} cannot be read ({exc.reason})") from None
        if attrs.permissions is not None and not stat.S_ISDIR(attrs.permissions):
            raise FolderError(f"{where} is not a folder")
        try:
            await sftp.readdir(self.root)
        except asyncssh.SFTPError as exc:
            raise FolderError(f"{where} cannot be read ({exc.reason})") from None
        if not write:
            return
        if self.owner_text:
            self.owner = await self._resolve_owner()
        probe = posixpath.join(self.root, ".mastosync-write-check")
        try:
            async with sftp.open(probe, "wb") as f:
                await f.write(b"mastosync")
                if self.owner is not None:
                    await f.chown(*self.owner)
            await sftp.remove(probe)
        except asyncssh.SFTPError as exc:
            problem = "refuses the owner" if self.owner else "cannot be written"
            raise FolderError(f"{where} {problem} ({exc.reason})") from None

    async def _resolve_owner(self) -> tuple[int, int]:
        """destination.owner as (uid, gid), names looked up on the SSH host (`id`)."""
        user, group = parse_owner(self.owner_text)
        if user.isdigit() and (not group or group.isdigit()):
            return int(user), int(group or user)
        command = f"id -u {shlex.quote(user)} && " + (f"getent group {shlex.quote(group)} | cut -d: -f3"
                                                      if group else f"id -g {shlex.quote(user)}")
        try:
            result = await self.tunnel.run(command)
            uid, gid = (int(line) for line in str(result).split())
        except (asyncssh.Error, OSError, ValueError, TunnelError):
            raise FolderError(f"destination.owner: cannot look up {self.owner_text!r} on {self.tunnel.where} "
                              "(give it as uid:gid)") from None
        return uid, gid


class SftpReader:
    def __init__(self, files: SftpFiles, f: asyncssh.SFTPClientFile, size: int, start: bytes, what: str) -> None:
        self._files, self._file, self.size, self.start, self._what = files, f, size, start, what

    async def read(self, n: int, offset: int) -> bytes | bytearray:
        try:
            data: Any = await self._file.read(n, offset)  # bytes: opened in binary mode
            return bytes(data)
        except (asyncssh.Error, OSError) as exc:
            raise await self._files.classify(exc, self._what) from None

    async def close(self) -> None:
        await _close_quietly(self._file)


class SftpWriter:
    def __init__(self, files: SftpFiles, f: asyncssh.SFTPClientFile, temporary: str, final: str, mode: int,
                 what: str) -> None:
        self._files, self._file, self._temporary, self._final = files, f, temporary, final
        self._mode, self._what, self._offset = mode, what, 0
        self._open = True

    async def write(self, data: bytes | bytearray) -> None:
        try:
            await self._file.write(bytes(data), self._offset)
        except (asyncssh.Error, OSError) as exc:
            raise await self._files.classify(exc, self._what) from None
        self._offset += len(data)

    async def commit(self) -> None:
        f = self._file
        owner = self._files.owner
        attrs = asyncssh.SFTPAttrs(permissions=self._mode, **({"uid": owner[0], "gid": owner[1]} if owner else {}))
        try:
            await f.setstat(attrs)
            try:
                await f.fsync()
            except asyncssh.SFTPOpUnsupported:
                pass  # a server without fsync@openssh.com: its close must do
            await f.close()
            self._open = False
            sftp = await self._files.tunnel.sftp()
            try:
                await sftp.posix_rename(self._temporary, self._final)
            except asyncssh.SFTPOpUnsupported:
                try:
                    await sftp.remove(self._final)
                except ABSENT:
                    pass
                await sftp.rename(self._temporary, self._final)
        except (asyncssh.Error, OSError, TunnelError) as exc:
            raise await self._files.classify(exc, self._what) from None

    async def discard(self) -> None:
        if self._open:
            await _close_quietly(self._file)
            self._open = False
        try:
            sftp = await self._files.tunnel.sftp()
            await sftp.remove(self._temporary)
        except (asyncssh.Error, OSError, TunnelError):
            pass  # gone already, or the connection is: the resume state remembers large ones


async def _close_quietly(f: asyncssh.SFTPClientFile) -> None:
    try:
        await f.close()
    except (asyncssh.Error, OSError):
        pass
