"""transport.py, the HTTP layer on aiohttp: keep-alive and stale connections, chunked,
close-delimited and cut answers, timeouts, TLS and CA bundles, and proxies (CONNECT for
HTTPS endpoints, absolute-form requests for plain HTTP ones).

The exchange-level cases use a tiny scripted server on loopback (each test says what it
answers); TLS and proxies are tested end to end against `rclone serve s3` over HTTPS.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from mastosync.config.settings import BucketSettings, DestinationSettings
from mastosync.engine.memory import MemoryBudget
from mastosync.engine.outcome import Status
from mastosync.engine.transfer import Copier
from mastosync.errors import BucketError
from mastosync.storage.retry import RetryPolicy
from mastosync.storage.s3 import Bucket
from mastosync.storage.transport import ConnectFailed, HTTPError, Transport
from tests.conftest import new_bucket
from tests.services.process import free_port
from tests.services.s3 import RcloneServer
from tests.services.tls import self_signed

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter, int], Awaitable[None]]
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


@contextlib.asynccontextmanager
async def scripted_server(handler: Handler) -> AsyncIterator[tuple[str, list[int]]]:
    """A server calling `handler(reader, writer, n)` for its n-th connection; yields (origin, connections)."""
    connections: list[int] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(len(connections))
        try:
            await handler(reader, writer, len(connections) - 1)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}", connections
    finally:
        server.close()


async def read_request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            await reader.readexactly(int(line.split(b":")[1]))
    return head


def Pool(origin: str, connect_timeout: float, read_timeout: float) -> Transport:  # noqa: N802
    return Transport(origin, connect_timeout, read_timeout)


async def get(pool: Transport, target: str = "/b/k") -> tuple[int, bytes]:
    response = await pool.request("GET", target, {})
    try:
        return response.status, await response.read()
    finally:
        response.release()


async def test_keep_alive_reuses_one_connection() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        while True:
            await read_request(reader)
            writer.write(OK)

    async with scripted_server(handler) as (origin, connections):
        pool = Pool(origin, 5, 5)
        assert [await get(pool) for _ in range(5)] == [(200, b"ok")] * 5
        await pool.close()
    assert len(connections) == 1


async def test_a_connection_closed_while_idle_is_replaced_transparently() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await read_request(reader)
        writer.write(OK)  # keep-alive promised ...
        await writer.drain()
        if n == 0:
            await read_request(reader)  # ... but the next request meets a closing server

    async with scripted_server(handler) as (origin, connections):
        pool = Pool(origin, 5, 5)
        assert await get(pool) == (200, b"ok")
        # Sent on the reused connection, which closes with no answer: a GET is sent again on a new one.
        assert await get(pool) == (200, b"ok")
        await asyncio.sleep(0.1)  # the second connection is closed by the server now
        assert await get(pool) == (200, b"ok")
        await pool.close()
    assert len(connections) >= 3


async def test_a_post_is_never_sent_twice() -> None:
    """A POST (CreateMultipartUpload, CompleteMultipartUpload) that meets a closing kept-alive
    connection is an error for the caller to retry, not something the transport re-sends."""
    posts: list[int] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await read_request(reader)
        writer.write(OK)
        await writer.drain()
        head = await read_request(reader)  # the POST arrives on the kept-alive connection …
        if head.startswith(b"POST"):
            posts.append(n)  # … and the server closes without an answer

    async with scripted_server(handler) as (origin, connections):
        pool = Pool(origin, 5, 5)
        assert await get(pool) == (200, b"ok")
        with pytest.raises(HTTPError):
            response = await pool.request("POST", "/b/k?uploads", {}, b"<x/>")
            response.release()
        await pool.close()
    assert posts == [0] and len(connections) == 1


async def test_a_new_connection_closed_without_answer_is_an_error() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await read_request(reader)

    async with scripted_server(handler) as (origin, _):
        pool = Pool(origin, 5, 5)
        with pytest.raises(HTTPError):
            await get(pool)
        await pool.close()


async def test_chunked_answers_and_trailers() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        while True:
            await read_request(reader)
            writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                         b"5;ext=1\r\n<List\r\n3\r\n/>\n\r\n0\r\nX-Trailer: 1\r\n\r\n")

    async with scripted_server(handler) as (origin, connections):
        pool = Pool(origin, 5, 5)
        assert await get(pool) == (200, b"<List/>\n")
        assert await get(pool) == (200, b"<List/>\n")  # and the connection was reusable
        await pool.close()
    assert len(connections) == 1


async def test_a_body_cut_short_is_an_error_and_the_connection_is_dropped() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n" + b"x" * 400)
        await writer.drain()

    async with scripted_server(handler) as (origin, connections):
        pool = Pool(origin, 5, 5)
        response = await pool.request("GET", "/b/k", {})
        with pytest.raises(HTTPError, match="cut short"):
            await response.read_exactly(1000)
        response.release()
        await pool.close()


@pytest.mark.parametrize("framing", ["chunked", "close-delimited"])
async def test_large_bodies_without_content_length(framing: str) -> None:
    """Bodies over 1 MiB sent chunked or until the connection closes are read whole
    (the hand-written client paused reading on them and never resumed)."""
    payload = bytes(range(256)) * (12 * 1024)  # 3 MiB

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await read_request(reader)
        if framing == "chunked":
            writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            for i in range(0, len(payload), 100_000):
                piece = payload[i:i + 100_000]
                writer.write(b"%x\r\n" % len(piece) + piece + b"\r\n")
            writer.write(b"0\r\n\r\n")
        else:
            writer.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n" + payload)
        await writer.drain()
        if framing != "chunked":
            writer.close()

    async with scripted_server(handler) as (origin, _):
        pool = Pool(origin, 5, 2)
        response = await pool.request("GET", "/b/k", {})
        assert response.content_length is None
        body = await response.read_exactly(len(payload))
        assert len(body) == len(payload)
        assert bytes(body) == payload
        response.release()
        await pool.close()


async def test_a_silent_server_times_out() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await read_request(reader)
        await asyncio.sleep(3)

    async with scripted_server(handler) as (origin, _):
        pool = Pool(origin, 5, read_timeout=0.5)
        with pytest.raises(HTTPError, match="no answer in time"):  # the read timeout, not the server, ended it
            await get(pool)
        await pool.close()


async def test_connection_refused_is_connect_failed() -> None:
    pool = Pool(f"http://127.0.0.1:{free_port()}", 5, 5)
    with pytest.raises(ConnectFailed, match="cannot connect to 127.0.0.1"):
        await get(pool)


# -- TLS and proxies, end to end against rclone serve s3 over HTTPS ------------------------


@pytest.fixture(autouse=True)
def no_aws_ca_bundle(monkeypatch: pytest.MonkeyPatch) -> None:
    """AWS_CA_BUNDLE wins over SSL_CERT_FILE (as in botocore); machines often set it."""
    monkeypatch.delenv("AWS_CA_BUNDLE", raising=False)


@pytest.fixture(scope="module")
def tls_rclone(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RcloneServer]:
    server = RcloneServer(tls=self_signed(tmp_path_factory.mktemp("tls"))).start()
    yield server
    server.stop()


def bucket(server: RcloneServer, name: str, cls: type[BucketSettings] = BucketSettings,
           **extra: str) -> BucketSettings:
    """Settings for `name` on `server` (extra keys: acl, ca_bundle …)."""
    return cls(bucket=name, endpoint=server.endpoint, region="us-east-1", access_key_id=server.access_key,
               secret_access_key=server.secret_key, **extra)


@contextlib.asynccontextmanager
async def copy_between(server: RcloneServer) -> AsyncIterator[Callable[[], Awaitable[dict[str, str]]]]:
    """Seed a small and a multipart object; yield the copy (statuses by key); check the bytes after.

    The test's own boto3 client (seeding, reading back) is used only outside the yield, so
    it never goes through a proxy the test sets in the environment meanwhile.
    """
    src, dst = new_bucket(server, "tls-src"), new_bucket(server, "tls-dst")
    data = {"small.png": b"p" * 5000, "video.mp4": bytes(range(256)) * (80 * 1024)}  # 20 MiB
    for key, value in data.items():
        server.put(src, key, value, "image/png")
    destination = bucket(server, dst, DestinationSettings, acl="")

    async def copy() -> dict[str, str]:
        async with Bucket(bucket(server, src), 4) as s, Bucket(destination, 4) as d:
            copier = Copier(s, d, 8 << 20, 8 << 20, RetryPolicy(retries=2), MemoryBudget(64 << 20))
            return {key: (await copier.copy(key, key)).status for key in data}

    yield copy
    for key, value in data.items():
        assert server.get(dst, key)[0] == value


async def test_https_with_a_trusted_certificate(tls_rclone: RcloneServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SSL_CERT_FILE", str(certificate(tls_rclone)))
    async with copy_between(tls_rclone) as copy:
        assert await copy() == {"small.png": Status.COPIED, "video.mp4": Status.COPIED}


async def test_https_with_an_untrusted_certificate_fails_clearly(tls_rclone: RcloneServer) -> None:
    async with Bucket(bucket(tls_rclone, new_bucket(tls_rclone, "tls")), 4, label="source") as b:
        with pytest.raises(BucketError, match="TLS certificate is not trusted"):
            await b.check()


@contextlib.asynccontextmanager
async def http_proxy() -> AsyncIterator[tuple[str, list[str]]]:
    """An HTTP proxy: CONNECT tunnels, and absolute-form requests forwarded one per connection.

    Yields (its URL, what it was asked: "CONNECT host:port" or "GET http://host:port/…").
    """
    asked: list[str] = []

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        method, target, version = head.split(b"\r\n")[0].decode().split(" ")
        asked.append(f"{method} {target}")
        if method == "CONNECT":
            host, port = target.rsplit(":", 1)
            up_reader, up_writer = await asyncio.open_connection(host, int(port))
            writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
            await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
            return
        # Absolute form: forward to the origin with the path only, and close after the answer.
        url = urlsplit(target)
        up_reader, up_writer = await asyncio.open_connection(url.hostname, url.port or 80)
        path = url.path + (f"?{url.query}" if url.query else "")
        lines = [line for line in head.split(b"\r\n")[1:] if line and not line.lower().startswith(
            (b"connection:", b"proxy-", b"keep-alive:"))]
        up_writer.write(f"{method} {path} {version}\r\n".encode() + b"\r\n".join(
            [*lines, b"Connection: close"]) + b"\r\n\r\n")
        length = next((int(line.split(b":")[1]) for line in lines if line.lower().startswith(b"content-length:")), 0)
        if length:
            up_writer.write(await reader.readexactly(length))
        await up_writer.drain()
        await pipe(up_reader, writer)

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}", asked
    finally:
        server.close()


@pytest.mark.parametrize("scheme", ["https", "http"])
async def test_proxy_from_the_environment(scheme: str, tls_rclone: RcloneServer, rclone: RcloneServer,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """HTTPS endpoints through CONNECT; plain HTTP ones with absolute-form requests, which
    proxies such as Squid accept (many refuse CONNECT to ports other than 443)."""
    server = tls_rclone if scheme == "https" else rclone
    monkeypatch.setenv("SSL_CERT_FILE", str(certificate(tls_rclone)))
    for name in ("NO_PROXY", "no_proxy", "HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy"):
        monkeypatch.delenv(name, raising=False)
    variable = f"{scheme.upper()}_PROXY"
    async with http_proxy() as (proxy_url, asked), copy_between(server) as copy:
        monkeypatch.setenv(variable, proxy_url)
        assert await copy() == {"small.png": Status.COPIED, "video.mp4": Status.COPIED}
        monkeypatch.delenv(variable)
    authority = f"127.0.0.1:{server.port}"
    if scheme == "https":
        assert asked and set(asked) == {f"CONNECT {authority}"}
    else:
        assert asked and all(a.split(" ")[1].startswith(f"http://{authority}/") for a in asked), asked
        assert not any(a.startswith("CONNECT") for a in asked)
    async with http_proxy() as (proxy_url, asked), copy_between(server) as copy:
        monkeypatch.setenv(variable, proxy_url)
        monkeypatch.setenv("NO_PROXY", "127.0.0.1")
        await copy()
        monkeypatch.delenv(variable)
    assert asked == []


async def test_ca_bundle_per_side_and_from_aws_ca_bundle(tls_rclone: RcloneServer,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """The side's ca_bundle is trusted, else AWS_CA_BUNDLE; the system store alone is not enough."""
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    monkeypatch.delenv("AWS_CA_BUNDLE", raising=False)
    name = new_bucket(tls_rclone, "ca")
    async with Bucket(bucket(tls_rclone, name), 4, label="source") as b:
        with pytest.raises(BucketError, match="TLS certificate is not trusted"):
            await b.check()
    async with Bucket(bucket(tls_rclone, name, ca_bundle=str(certificate(tls_rclone))), 4, label="source") as b:
        await b.check()
    monkeypatch.setenv("AWS_CA_BUNDLE", str(certificate(tls_rclone)))
    async with Bucket(bucket(tls_rclone, name), 4, label="source") as b:
        await b.check()


def certificate(server: RcloneServer) -> Path:
    """The certificate a TLS server presents."""
    assert server.tls is not None
    return server.tls[0]
