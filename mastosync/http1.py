"""A small HTTP/1.1 client for one origin: the transport under storage.py.

Why not aiohttp: for the requests mastosync makes (a GET and a PUT of a 100 KB image,
thousands per second), aiohttp spends its CPU on generality we do not use (cookies,
redirects, tracing, middleware, multidict headers, proxy and netrc lookups per request).
Measured here, a signed GET of a small object through storage.py costs about 140 µs of
CPU on this module and about 260 µs on aiohttp; on two cores, where the S3 servers need
the CPU too, that is the difference between beating rclone and not (bench/compare.py).
It does only what S3 needs:

- keep-alive connections, reused most-recent-first, dropped after IDLE_SECONDS idle
  or when the server closes them; a request that fails on a reused connection before
  any answer arrives is sent once more on a new one (the server had closed it);
- bodies sent from memory in slices, waiting while the socket is full, so a part is
  never copied whole into the transport's buffer;
- answers with Content-Length, chunked, or up to the connection's end; a streamed body
  read straight into the caller's buffer, with reading paused while it is not consumed;
- connect and read timeouts; TLS with the system's certificates; an HTTP proxy from
  HTTPS_PROXY / HTTP_PROXY / NO_PROXY, through CONNECT.

Errors: ConnectFailed (no connection could be made), and otherwise the OS's
ConnectionError / TimeoutError or ProtocolError; storage.py classifies them.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import ssl
import time
import urllib.request
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

IDLE_SECONDS = 15.0  # below the idle timeout of S3 and most S3-compatible servers
READ_HIGH = 1 << 20  # pause reading a streamed body once this much waits unread
WRITE_SLICE = 256 * 1024
HEAD_LIMIT = 64 * 1024
Body = bytes | bytearray | memoryview


class HTTPError(Exception):
    """The exchange failed on the way; the server's answer, if any, is unknown."""


class ConnectFailed(HTTPError):
    """No connection could be made: refused, no such host, connect timeout, proxy refused."""


class ProtocolError(HTTPError):
    """The answer is not HTTP/1.1 as we know it."""


class _Stale(Exception):
    """A reused connection turned out to be closed before any answer: send again."""


class _Connection(asyncio.Protocol):
    """One socket: received bytes in a buffer, and futures to wait on it."""

    def __init__(self, loop: asyncio.AbstractEventLoop, read_timeout: float,
                 registry: set[_Connection]) -> None:
        self.loop = loop
        self.registry = registry  # the pool's open connections, closed with the pool
        self.read_timeout = read_timeout
        self.transport: Any = None
        self.buffer = bytearray()
        self.eof = False
        self.lost: BaseException | None = None
        self.idle_since = 0.0
        self._waiter: asyncio.Future[None] | None = None
        self._write_paused = False
        self._read_paused = False

    # -- asyncio.Protocol ----------------------------------------------------------------

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        self.registry.add(self)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if len(self.buffer) > READ_HIGH and not self._read_paused:
            self._read_paused = True
            self.transport.pause_reading()
        self._wake()

    def eof_received(self) -> bool:
        self.eof = True
        self._wake()
        return False

    def connection_lost(self, exc: BaseException | None) -> None:
        self.registry.discard(self)
        self.eof = True
        self.lost = exc
        self._write_paused = False
        self._wake()

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        self._wake()

    # -- waiting -------------------------------------------------------------------------

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def _wait(self, what: str) -> None:
        """Until something happens on the socket, at most read_timeout seconds."""
        waiter = self._waiter = self.loop.create_future()
        timer = self.loop.call_later(self.read_timeout, _expire, waiter, what, self.read_timeout)
        try:
            await waiter
        finally:
            timer.cancel()
            self._waiter = None

    def consumed(self, n: int) -> None:
        del self.buffer[:n]
        if self._read_paused and len(self.buffer) < READ_HIGH // 2:
            self._read_paused = False
            self.transport.resume_reading()

    @property
    def usable(self) -> bool:
        return not self.eof and self.transport is not None and not self.transport.is_closing()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    # -- one exchange ---------------------------------------------------------------------

    async def send(self, head: bytes, body: Body) -> None:
        if len(body) <= WRITE_SLICE:
            self.transport.write(head + body if body else head)
        else:
            self.transport.write(head)
            view = memoryview(body)
            for start in range(0, len(view), WRITE_SLICE):
                if self.eof:
                    break  # the server answered early and closed; its answer is read next
                self.transport.write(view[start:start + WRITE_SLICE])
                while self._write_paused and not self.eof:
                    await self._wait("sending the body")

    async def read_head(self) -> tuple[int, dict[str, str]]:
        """Status and headers (lower-case names) of the next answer, skipping 1xx."""
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(self.buffer) > HEAD_LIMIT:
                    raise ProtocolError("answer headers larger than 64 KiB")
                if self.eof:
                    raise (ConnectionResetError(f"connection closed ({self.lost or 'end of stream'})")
                           if self.buffer else _Stale())
                await self._wait("waiting for the answer")
                continue
            lines = bytes(self.buffer[:end]).decode("latin-1").split("\r\n")
            self.consumed(end + 4)
            try:
                version, code, *_ = lines[0].split(" ", 2)
                status = int(code)
            except ValueError:
                raise ProtocolError(f"not an HTTP status line: {lines[0][:80]!r}") from None
            if not version.startswith("HTTP/1."):
                raise ProtocolError(f"not HTTP/1.x: {lines[0][:80]!r}")
            if 100 <= status < 200:
                continue
            headers: dict[str, str] = {}
            for line in lines[1:]:
                name, sep, value = line.partition(":")
                if sep:
                    headers[name.strip().lower()] = value.strip()
            if version == "HTTP/1.0" and headers.get("connection", "").lower() != "keep-alive":
                headers["connection"] = "close"
            return status, headers


def _expire(waiter: asyncio.Future[None], what: str, seconds: float) -> None:
    if not waiter.done():
        waiter.set_exception(TimeoutError(f"no data for {seconds:.0f}s {what}"))


class Response:
    """Status, headers, and the body to read (once) before release()."""

    def __init__(self, pool: Pool, conn: _Connection, method: str, status: int,
                 headers: dict[str, str]) -> None:
        self.status = status
        self.headers = headers
        self._pool = pool
        self._conn: _Connection | None = conn
        self._keep = headers.get("connection", "").lower() != "close"
        self.content_length: int | None = None
        self._chunked = False
        self._remaining = 0  # of a Content-Length body
        if method == "HEAD" or status in (204, 304):
            self.content_length = 0
        elif "chunked" in headers.get("transfer-encoding", "").lower():
            self._chunked = True
        elif "content-length" in headers:
            try:
                self.content_length = self._remaining = int(headers["content-length"])
            except ValueError:
                raise ProtocolError(f"bad Content-Length {headers['content-length']!r}") from None
        else:
            self._keep = False  # the body ends where the connection does
        self.on_release: Any = None

    @property
    def complete(self) -> bool:
        return self.content_length is not None and self._remaining == 0

    async def readinto(self, view: memoryview) -> int:
        """Fill `view` from a Content-Length body; returns how much was written (short at its end)."""
        conn = self._need_conn()
        if self.content_length is None:
            raise ProtocolError("streaming needs a Content-Length")
        filled = 0
        want = min(len(view), self._remaining)
        while filled < want:
            if not conn.buffer:
                if conn.eof:
                    raise ConnectionResetError(
                        f"body cut short: {self.content_length - self._remaining} of {self.content_length} bytes")
                await conn._wait("reading the body")
                continue
            n = min(len(conn.buffer), want - filled)
            with memoryview(conn.buffer) as received:  # released before the buffer shrinks
                view[filled:filled + n] = received[:n]
            conn.consumed(n)
            filled += n
            self._remaining -= n
        return filled

    async def read(self, limit: int = 1 << 26) -> bytes:
        """The whole body (answers to control requests: XML, error documents)."""
        conn = self._need_conn()
        if self._chunked:
            return await self._read_chunked(conn, limit)
        if self.content_length is not None:
            if self.content_length > limit:
                raise ProtocolError(f"answer of {self.content_length} bytes, more than expected")
            data = bytearray(self.content_length)
            await self.readinto(memoryview(data))
            return bytes(data)
        while not conn.eof:  # until the server closes
            if len(conn.buffer) > limit:
                raise ProtocolError("answer larger than expected")
            await conn._wait("reading the body")
        data = bytes(conn.buffer)
        conn.consumed(len(conn.buffer))
        return data

    async def _read_chunked(self, conn: _Connection, limit: int) -> bytes:
        out = bytearray()
        while True:
            line = await self._line(conn)
            try:
                size = int(line.split(b";")[0].strip(), 16)
            except ValueError:
                raise ProtocolError(f"bad chunk size {line[:40]!r}") from None
            if size == 0:
                while await self._line(conn):  # trailers, up to the empty line
                    pass
                self.content_length, self._remaining = len(out), 0
                return bytes(out)
            if len(out) + size > limit:
                raise ProtocolError("answer larger than expected")
            while len(conn.buffer) < size + 2:
                if conn.eof:
                    raise ConnectionResetError("chunked body cut short")
                await conn._wait("reading the body")
            out += conn.buffer[:size]
            conn.consumed(size + 2)

    @staticmethod
    async def _line(conn: _Connection) -> bytes:
        while (end := conn.buffer.find(b"\r\n")) < 0:
            if conn.eof or len(conn.buffer) > HEAD_LIMIT:
                raise ConnectionResetError("chunked body cut short")
            await conn._wait("reading the body")
        line = bytes(conn.buffer[:end])
        conn.consumed(end + 2)
        return line

    def _need_conn(self) -> _Connection:
        if self._conn is None:
            raise ProtocolError("the response was already released")
        return self._conn

    def release(self) -> None:
        """Done with this answer: the connection goes back to the pool if its body was read."""
        conn, self._conn = self._conn, None
        if conn is not None:
            if self._keep and self.complete and not conn.buffer and conn.usable:
                self._pool._idle(conn)
            else:
                conn.close()
        if self.on_release is not None:
            callback, self.on_release = self.on_release, None
            callback()


@dataclass(frozen=True)
class _Proxy:
    host: str
    port: int
    authorization: str | None


def _proxy_for(scheme: str, host: str) -> _Proxy | None:
    """The proxy the environment sets for this origin (HTTPS_PROXY, HTTP_PROXY, NO_PROXY)."""
    url = urllib.request.getproxies().get(scheme)
    if not url or urllib.request.proxy_bypass(host):
        return None
    parts = urlsplit(url if "://" in url else "http://" + url)
    authorization = None
    if parts.username:
        pair = f"{unquote(parts.username)}:{unquote(parts.password or '')}".encode()
        authorization = "Basic " + base64.b64encode(pair).decode()
    return _Proxy(parts.hostname or "", parts.port or 80, authorization)


class Pool:
    """Keep-alive connections to one origin (scheme://host:port)."""

    def __init__(self, origin: str, connect_timeout: float, read_timeout: float,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        parts = urlsplit(origin)
        self.host = parts.hostname or ""
        self.tls = parts.scheme == "https"
        self.port = parts.port or (443 if self.tls else 80)
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.ssl_context = (ssl_context or ssl.create_default_context()) if self.tls else None
        self.proxy = _proxy_for(parts.scheme, self.host)
        self._idle_connections: collections.deque[_Connection] = collections.deque()
        self._all: set[_Connection] = set()

    async def request(self, method: str, target: str, headers: dict[str, str], body: Body = b"") -> Response:
        """Send one request; the answer's head is read, its body is left to the caller."""
        lines = [f"{method} {target} HTTP/1.1"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        if body or method in ("PUT", "POST"):
            lines.append(f"content-length: {len(body)}")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        while True:
            conn, reused = await self._connection()
            try:
                await conn.send(head, body)
                status, response_headers = await conn.read_head()
                return Response(self, conn, method, status, response_headers)
            except _Stale:
                conn.close()
                if not reused:
                    raise ConnectionResetError("the server closed the connection without answering") from None
                # A reused connection the server had closed meanwhile: send again, on a new one.
            except BaseException:
                conn.close()
                raise

    async def _connection(self) -> tuple[_Connection, bool]:
        now = time.monotonic()
        while self._idle_connections:
            conn = self._idle_connections.pop()
            if conn.usable and now - conn.idle_since < IDLE_SECONDS:
                return conn, True
            conn.close()
        return await self._connect(), False

    def _idle(self, conn: _Connection) -> None:
        conn.idle_since = time.monotonic()
        self._idle_connections.append(conn)

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        conn = _Connection(loop, self.read_timeout, self._all)
        host, port = (self.proxy.host, self.proxy.port) if self.proxy else (self.host, self.port)
        direct_tls = self.ssl_context if self.tls and not self.proxy else None
        try:
            async with asyncio.timeout(self.connect_timeout):
                await loop.create_connection(lambda: conn, host, port, ssl=direct_tls,
                                             server_hostname=self.host if direct_tls else None)
                if self.proxy:
                    await self._tunnel(conn, loop)
        except ssl.SSLCertVerificationError:
            conn.close()
            raise
        except (OSError, TimeoutError, ConnectFailed, ProtocolError, _Stale) as exc:
            conn.close()
            where = f"{host}:{port}" + (" (proxy)" if self.proxy else "")
            detail = "timed out" if isinstance(exc, TimeoutError) else str(exc) or type(exc).__name__
            raise ConnectFailed(f"cannot connect to {where}: {detail}") from exc
        except BaseException:
            conn.close()
            raise
        return conn

    async def _tunnel(self, conn: _Connection, loop: asyncio.AbstractEventLoop) -> None:
        """CONNECT through the proxy, then TLS to the origin inside the tunnel."""
        assert self.proxy is not None
        authority = f"{self.host}:{self.port}"
        lines = [f"CONNECT {authority} HTTP/1.1", f"host: {authority}"]
        if self.proxy.authorization:
            lines.append(f"proxy-authorization: {self.proxy.authorization}")
        await conn.send(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"), b"")
        status, _ = await conn.read_head()
        if status != 200:
            raise ConnectFailed(f"the proxy refused CONNECT {authority} ({status})")
        if self.tls:
            conn.transport = await loop.start_tls(conn.transport, conn, self.ssl_context,
                                                  server_hostname=self.host)

    async def close(self) -> None:
        for conn in list(self._all):
            conn.close()
        self._all.clear()
        self._idle_connections.clear()
