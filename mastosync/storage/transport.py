"""HTTP for the S3 requests: aiohttp, one session and connection pool per endpoint.

aiohttp does the protocol (keep-alive, chunked and close-delimited bodies, flow control,
TLS, proxies, happy eyeballs); this module only shapes it for S3 copies:

- bodies are passed on as stored (`auto_decompress=False`, no Accept-Encoding);
- no header is added that would change what is stored (no default Content-Type);
- proxies come from the environment once per endpoint (HTTPS_PROXY, HTTP_PROXY, NO_PROXY,
  ~/.netrc), not once per request; a plain-HTTP endpoint is reached through an HTTP proxy
  with absolute-form requests, an HTTPS one with CONNECT;
- the CA bundle is the side's `ca_bundle`, else AWS_CA_BUNDLE, else the system's (which
  honours SSL_CERT_FILE);
- every request has a deadline besides the per-read timeout, so a server that trickles
  bytes cannot hold a copy for ever;
- a non-idempotent request (POST) is never re-sent by the transport: aiohttp retries only
  idempotent methods after a kept-alive connection turns out closed.

Errors come out as two kinds: ConnectFailed (no connection could be made) and HTTPError
(reset, cut body, timeout, protocol error); storage/s3.py's classify maps them.
"""

from __future__ import annotations

import asyncio
import functools
import os
import ssl
import urllib.request
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
from yarl import URL

MIN_RATE = 64 * 1024  # bytes/s below which a body is too slow to wait for (deadlines)
WRITE_PIECE = 256 * 1024  # larger bodies are sent in pieces of this size, each drained before the next


class HTTPError(Exception):
    """The exchange failed on the way: reset, cut body, timeout, bad answer. Worth retrying."""


class ConnectFailed(HTTPError):
    """No connection could be made to the endpoint (or its proxy)."""


class CertificateError(HTTPError):
    """The endpoint's TLS certificate is not trusted; retrying will not help."""

    def __init__(self, message: str, verify_message: str) -> None:
        super().__init__(message)
        self.verify_message = verify_message


def ssl_context(ca_bundle: str = "") -> ssl.SSLContext:
    """Verification against `ca_bundle`, else AWS_CA_BUNDLE, else the system's trust store."""
    cafile = ca_bundle or os.environ.get("AWS_CA_BUNDLE") or None
    return _context(cafile, os.environ.get("SSL_CERT_FILE"), os.environ.get("SSL_CERT_DIR"))


@functools.lru_cache(maxsize=8)
def _context(cafile: str | None, cert_file: str | None, cert_dir: str | None) -> ssl.SSLContext:
    # Loading a trust store costs about 90 ms of CPU: both sides of a copy share one. The
    # environment that picks the system's store is part of the key.
    return ssl.create_default_context(cafile=cafile)


def _translate(exc: BaseException, what: str) -> BaseException:
    """aiohttp's exceptions → ours (others pass through unchanged)."""
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        cert = exc.certificate_error
        verify = getattr(cert, "verify_message", None) or str(cert)
        return CertificateError(f"{what}: the TLS certificate is not trusted ({verify})", verify)
    if isinstance(exc, aiohttp.ClientConnectorError | aiohttp.ClientProxyConnectionError):
        return ConnectFailed(f"cannot connect to {exc.host}:{exc.port} ({exc.os_error.strerror or exc})")
    if isinstance(exc, asyncio.TimeoutError | aiohttp.ServerTimeoutError):
        return HTTPError(f"{what}: no answer in time")
    if isinstance(exc, aiohttp.ClientPayloadError):
        return HTTPError(f"{what}: body cut short ({exc})")
    if isinstance(exc, aiohttp.ClientError | OSError):
        return HTTPError(f"{what}: {type(exc).__name__}: {exc}".rstrip(": "))
    return exc


class Response:
    """Status, headers, and the body to read (once) before release()."""

    def __init__(self, raw: aiohttp.ClientResponse, deadline: float,
                 on_release: Callable[[], None] | None = None) -> None:
        self._raw = raw
        self.status = raw.status
        self.headers = raw.headers  # case-insensitive
        self.content_length = raw.content_length
        self._deadline = deadline
        self.on_release = on_release  # called once, when the answer is released

    @property
    def complete(self) -> bool:
        """The whole body has been read."""
        return self._raw.content.at_eof()

    async def read_exactly(self, size: int) -> bytes | bytearray:
        """The next `size` bytes of the body, fewer only where it ends. A body already in
        whole (a small one) is returned as received, not copied again; a larger one is
        gathered into one buffer allocated once, so no body is ever held twice."""
        content = self._raw.content
        try:
            if content.is_eof():  # every byte has arrived: no read can wait, no deadline to set
                return await _gather(content, size)
            async with asyncio.timeout(self._deadline + size / MIN_RATE):
                return await _gather(content, size)
        except BaseException as exc:
            raise _translate(exc, "reading the body") from None

    async def read(self, limit: int = 1 << 26) -> bytes:
        """The whole body, at most `limit` bytes (answers to control requests: XML, errors)."""
        if self.content_length is not None and self.content_length > limit:
            raise HTTPError(f"answer of {self.content_length} bytes, more than expected")
        if self._raw.content.at_eof():
            return b""  # nothing (left) to read, as most PUT answers: no deadline to set up
        out = bytearray()
        try:
            async with asyncio.timeout(self._deadline + limit / MIN_RATE):
                while chunk := await self._raw.content.read(65536):
                    out += chunk
                    if len(out) > limit:
                        raise HTTPError("answer larger than expected")
        except HTTPError:
            raise
        except BaseException as exc:
            raise _translate(exc, "reading the answer") from None
        return bytes(out)

    def release(self) -> None:
        """Done with this answer: its connection is reused if the body was read, else closed."""
        if self._raw.content.at_eof():
            self._raw.release()
        else:
            self._raw.close()
        if self.on_release is not None:
            callback, self.on_release = self.on_release, None
            callback()


class Transport:
    """Keep-alive connections to one origin (scheme://host:port), through the environment's proxy."""

    def __init__(self, origin: str, connect_timeout: float, read_timeout: float, pool_size: int = 100,
                 ca_bundle: str = "") -> None:
        self.origin = origin
        self.host = URL(origin).raw_host or ""
        self._read_timeout = read_timeout
        self._connect_timeout = connect_timeout
        self._pool_size = pool_size
        self._ssl = ssl_context(ca_bundle) if origin.startswith("https:") else False
        self._session: aiohttp.ClientSession | None = None
        self.proxy, self.proxy_auth = _environment_proxy(origin)

    def _open(self) -> aiohttp.ClientSession:
        # Created on first use, inside the running loop (aiohttp requires one).
        connector = aiohttp.TCPConnector(limit=self._pool_size, limit_per_host=0, ssl=self._ssl,
                                         ttl_dns_cache=300, keepalive_timeout=15.0)
        timeout = aiohttp.ClientTimeout(total=None, connect=None, sock_connect=self._connect_timeout,
                                        sock_read=self._read_timeout)
        return aiohttp.ClientSession(connector=connector, timeout=timeout, auto_decompress=False,
                                     skip_auto_headers=("Content-Type", "Accept-Encoding"),
                                     trust_env=False, cookie_jar=aiohttp.DummyCookieJar())

    async def request(self, method: str, target: str, headers: dict[str, str],
                      body: bytes | bytearray = b"", on_release: Callable[[], None] | None = None) -> Response:
        """Send one request; returns once the answer's head is in (its body still to read).

        `target` is the path and query, already encoded as signed: it is sent verbatim.
        `on_release` is called when the answer is released (not when no answer came).
        """
        if self._session is None:
            self._session = self._open()
        # Time to send the body and get an answer; the body is read under its own deadline.
        deadline = self._connect_timeout + self._read_timeout + len(body) / MIN_RATE
        data: Any = body or None
        if len(body) > WRITE_PIECE:
            # Handed over whole, a body the socket cannot take at once is copied into the
            # transport's buffer: a second copy of every large upload. In drained pieces, not.
            headers = {**headers, "content-length": str(len(body))}
            data = _pieces(body)
        try:
            async with asyncio.timeout(deadline):
                raw = await self._session.request(
                    method, URL(self.origin + target, encoded=True), headers=headers,
                    data=data,
                    allow_redirects=False, proxy=self.proxy, proxy_auth=self.proxy_auth)
        except BaseException as exc:
            raise _translate(exc, f"{method} {target.split('?')[0]}") from None
        return Response(raw, self._read_timeout, on_release)

    async def close(self) -> None:
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()


async def _gather(content: aiohttp.StreamReader, size: int) -> bytes | bytearray:
    first = await content.read(size)
    if len(first) == size or not first:
        return first
    buffer = bytearray(size)
    filled = len(first)
    buffer[:filled] = first
    del first
    while filled < size:
        chunk = await content.read(size - filled)
        if not chunk:
            del buffer[filled:]  # ended early: the caller says so
            break
        buffer[filled:filled + len(chunk)] = chunk
        filled += len(chunk)
    return buffer


async def _pieces(body: bytes | bytearray) -> AsyncIterator[memoryview]:
    with memoryview(body) as view:
        for start in range(0, len(view), WRITE_PIECE):
            yield view[start:start + WRITE_PIECE]


def _environment_proxy(origin: str) -> tuple[URL | None, aiohttp.BasicAuth | None]:
    """The proxy the environment sets for this origin, resolved once (NO_PROXY honoured).

    Read here rather than by aiohttp (trust_env), which would look it up for every request
    and ignore an https:// proxy.
    """
    url = URL(origin)
    found = urllib.request.getproxies().get(url.scheme)
    if not found or urllib.request.proxy_bypass(url.host or ""):
        return None, None
    proxy = URL(found if "://" in found else "http://" + found)
    auth = None
    if proxy.user is not None:
        auth = aiohttp.BasicAuth(proxy.user, proxy.password or "")
        proxy = proxy.with_user(None)
    return proxy, auth
