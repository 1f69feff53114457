"""One SSH login to the Mastodon host: a port forward to the database, and SFTP for its files.

`Tunnel.endpoint()` gives the loopback (host, port) that reaches database.host:port as
seen from the SSH server; `Tunnel.sftp()` an SFTP client on the same connection (a folder
side of kind "sftp"). If the SSH connection drops, the next call reconnects, so the
record stream can re-open its cursor and the copies retry, and carry on.
"""

from __future__ import annotations

import asyncio
import getpass
import logging
import os
import socket
import sys
from pathlib import Path
from types import TracebackType
from typing import Any

import asyncssh

from mastosync.config.settings import DatabaseSettings, SshSettings
from mastosync.errors import TunnelError

log = logging.getLogger(__name__)


class _Client(asyncssh.SSHClient):
    def __init__(self) -> None:
        self.lost = False

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True


class Tunnel:
    """Async context manager; closes the SSH connection on every exit path."""

    def __init__(self, ssh: SshSettings, database: DatabaseSettings | None, warn: Any = None) -> None:
        self.ssh = ssh
        self.database = database
        self._warn = warn or (lambda text: print(text, file=sys.stderr))
        self._conn: asyncssh.SSHClientConnection | None = None
        self._client: _Client | None = None
        self._listener: asyncssh.SSHListener | None = None
        self._sftp: asyncssh.SFTPClient | None = None
        self._lock = asyncio.Lock()
        self._keys: list[asyncssh.SSHKey] | None = None
        self.connects = 0
        if not ssh.known_hosts:
            self._warn(
                "mastosync: warning: SSH host key checking is off (ssh.known_hosts = \"\"): "
                f"the tunnel to {ssh.host} could be intercepted"
            )

    async def __aenter__(self) -> Tunnel:
        async with self._lock:
            await self._open()
        return self

    async def __aexit__(self, et: type[BaseException] | None, e: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    @property
    def where(self) -> str:
        return f"{self.ssh.user}@{self.ssh.host}:{self.ssh.port}"

    async def _connection(self) -> asyncssh.SSHClientConnection:
        """The SSH connection, opened again if it was lost (call with the lock held)."""
        if self._conn is None or self._client is None or self._client.lost:
            await self._open()
        if self._conn is None:
            raise TunnelError(f"SSH {self.where}: the connection could not be opened")
        return self._conn

    async def endpoint(self) -> tuple[str, int]:
        """The local end of the forward, reconnecting if the SSH connection was lost."""
        async with self._lock:
            await self._connection()
            if self._listener is None:
                raise TunnelError(f"SSH {self.where}: opened for files only, with no forward to the database")
            return "127.0.0.1", self._listener.get_port()

    async def sftp(self) -> asyncssh.SFTPClient:
        """The SFTP client on this connection, reconnecting (and restarting it) if it was lost."""
        async with self._lock:
            conn = await self._connection()
            if self._sftp is None:
                try:
                    self._sftp = await conn.start_sftp_client()
                except asyncssh.Error as exc:
                    raise TunnelError(f"SSH {self.where}: the server offers no SFTP ({exc}); enable its "
                                      "sftp subsystem (Subsystem sftp in sshd_config)") from None
            return self._sftp

    async def run(self, command: str) -> str:
        """A command's output on the SSH host (looking up a user for destination.owner)."""
        async with self._lock:
            result = await (await self._connection()).run(command, check=True, timeout=30)
        return str(result.stdout)

    async def close(self) -> None:
        if self._sftp is not None:
            self._sftp.exit()
            self._sftp = None
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        if self._conn is not None:
            self._conn.close()
            try:
                await asyncio.wait_for(self._conn.wait_closed(), 5)
            except (TimeoutError, OSError, asyncssh.Error):
                pass
            self._conn = None

    async def _open(self) -> None:
        await self.close()
        conn, client = await self._connect()
        db = self.database
        if db is None:  # SFTP only: the database is reached another way
            self._conn, self._client = conn, client
            self.connects += 1
            return
        # database.host a folder: PostgreSQL's Unix socket on the host (Mastodon's standard
        # install, DB_HOST=/var/run/postgresql), reached by forwarding to the socket's path.
        target = f"{db.host.rstrip('/')}/.s.PGSQL.{db.port}" if db.is_socket else f"{db.host}:{db.port}"
        try:
            # Probe once: a server that forbids forwarding says so here, not as a puzzling
            # database error later.
            if db.is_socket:
                _, writer = await conn.open_unix_connection(target)
                writer.close()
                listener = await conn.forward_local_port_to_path("127.0.0.1", 0, target)
            else:
                _, writer = await conn.open_connection(db.host, db.port)
                writer.close()
                listener = await conn.forward_local_port("127.0.0.1", 0, db.host, db.port)
        except asyncssh.ChannelOpenError as exc:
            conn.close()
            if exc.code == asyncssh.OPEN_CONNECT_FAILED:  # forwarding allowed, nothing listening there
                raise TunnelError(
                    f"SSH {self.where}: the SSH server cannot reach the database at {target} "
                    f"({exc.reason}); check database.host and database.port as seen from the SSH server"
                ) from None
            raise TunnelError(
                f"SSH {self.where}: the server refused to forward to {target} ({exc.reason}); "
                f"check {'AllowStreamLocalForwarding' if db.is_socket else 'AllowTcpForwarding'} in its sshd_config"
            ) from None
        except (OSError, asyncssh.Error) as exc:
            conn.close()
            raise TunnelError(f"SSH {self.where}: port forward failed: {exc}") from None
        self._conn, self._client, self._listener = conn, client, listener
        self.connects += 1
        if self.connects > 1:
            log.warning("SSH tunnel re-established (%d connections so far)", self.connects)

    async def read_file(self, path: str, limit: int = 1 << 20) -> bytes:
        """A file of the SSH host, read over SFTP on a connection of its own (no forward)."""
        conn, _ = await self._connect()
        try:
            async with conn.start_sftp_client() as sftp, sftp.open(path, "rb") as f:
                data: Any = await f.read(limit)  # bytes: the file is opened in binary mode
                return bytes(data)
        except asyncssh.SFTPError as exc:
            raise TunnelError(f"SSH {self.where}: cannot read {path}: {exc.reason}") from None
        except asyncssh.Error as exc:
            raise TunnelError(f"SSH {self.where}: SFTP failed: {exc}") from None
        finally:
            conn.close()

    async def _connect(self) -> tuple[asyncssh.SSHClientConnection, Any]:
        """An SSH connection, with every failure turned into one clear TunnelError."""
        s = self.ssh
        options: dict[str, Any] = {
            "username": s.user,
            "known_hosts": self._known_hosts(),
            "keepalive_interval": s.keepalive_interval,
            "keepalive_count_max": 3,
            "connect_timeout": s.connect_timeout,
        }
        if s.password:
            options["password"] = s.password
        if s.key_file:
            options["client_keys"] = self._load_keys()
        try:
            conn, client = await asyncssh.create_connection(_Client, s.host, s.port, **options)
        except asyncssh.HostKeyNotVerifiable as exc:
            raise TunnelError(
                f"SSH {s.host}:{s.port}: host key not trusted ({exc.reason}). Check the server's key, then add "
                f"it to {s.known_hosts} (ssh-keyscan -p {s.port} {s.host} >> {s.known_hosts}); "
                "ssh.known_hosts = \"\" turns checking off"
            ) from None
        except asyncssh.PermissionDenied:
            raise TunnelError(
                f"SSH {self.where}: authentication failed (tried "
                f"{'key_file, ' if s.key_file else ''}{'password, ' if s.password else ''}agent and default keys)"
            ) from None
        except socket.gaierror as exc:
            raise TunnelError(f"SSH {s.host}: cannot resolve host name ({exc.strerror})") from None
        except (TimeoutError, OSError) as exc:
            reason = getattr(exc, "strerror", None) or str(exc) or "timed out"
            raise TunnelError(f"SSH {s.host}:{s.port}: cannot connect: {reason}") from None
        except asyncssh.Error as exc:
            raise TunnelError(f"SSH {s.host}:{s.port}: {exc.reason}") from None
        return conn, client

    def _known_hosts(self) -> Any:
        path = self.ssh.known_hosts
        if not path:
            return None  # checking off, warned about in __init__
        if not Path(path).is_file():
            raise TunnelError(
                f"SSH: known_hosts file {path} not found; add the server's key to it "
                f"(ssh-keyscan -p {self.ssh.port} {self.ssh.host} >> {path}) or set ssh.known_hosts"
            )
        return path

    def _load_keys(self) -> list[asyncssh.SSHKey]:
        if self._keys is not None:
            return self._keys
        path = self.ssh.key_file
        if not Path(path).is_file():
            raise TunnelError(f"SSH: ssh.key_file {path} not found")
        passphrase = self.ssh.passphrase or None
        try:
            key = asyncssh.read_private_key(path, passphrase)
        except (asyncssh.KeyImportError, asyncssh.KeyEncryptionError) as exc:
            # asyncssh says "Passphrase must be specified" without one, and "Unable to decrypt"
            # (PKCS#8) or raises KeyEncryptionError (OpenSSH format) with a wrong one.
            text = str(exc).lower()
            encrypted = "passphrase" in text or "decrypt" in text or isinstance(exc, asyncssh.KeyEncryptionError)
            if not encrypted:
                raise TunnelError(f"SSH: cannot read ssh.key_file {path}: {exc}") from None
            if passphrase is not None or not (sys.stdin.isatty() and os.isatty(2)):
                raise TunnelError(
                    f"SSH: ssh.key_file {path} is encrypted and "
                    + ("the passphrase is wrong" if passphrase else
                       "no passphrase was given (set MASTOSYNC_SSH_PASSPHRASE)")
                ) from None
            entered = getpass.getpass(f"Passphrase for {path}: ")
            try:
                key = asyncssh.read_private_key(path, entered)
            except (asyncssh.KeyImportError, asyncssh.KeyEncryptionError):
                raise TunnelError(f"SSH: wrong passphrase for {path}") from None
        self._keys = [key]
        return self._keys
