"""A lean TCP relay that holds every request for a fixed time: network latency, cheaply.

The fault proxy parses every request and answer in Python streams, about 0.22 ms of CPU
per request. On a two-core machine that shares its CPU with the S3 servers and the
client being measured, that alone moves a latency-bound benchmark. This relay (about
0.15 ms per request, mostly the event loop and the sockets) works on
raw bytes with asyncio protocols: what the client sends is passed on `latency` seconds
later (in order, so a request and its body are delayed once, together); answers go
back at once. It only scans request heads to count S3 operations. No faults: those are
the fault proxy's job. This kernel has no netem, else that would be the tool.
"""

from __future__ import annotations

import asyncio
import collections
import threading
import time
from dataclasses import dataclass, field

from tests.services.faultproxy import operation
from tests.services.process import free_port

HIGH_WATER = 1 << 20  # bytes buffered toward one side before the other side stops reading


@dataclass
class Counts:
    operations: collections.Counter[str] = field(default_factory=collections.Counter)
    timeline: list[tuple[float, str]] = field(default_factory=list)  # (time passed on, op)


class LatencyProxy:
    def __init__(self, upstream_port: int, latency: float = 0.0, upstream_host: str = "127.0.0.1") -> None:
        self.upstream = (upstream_host, upstream_port)
        self.latency = latency
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.counts = Counts()
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.Server | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True, name="latencyproxy")

    def start(self) -> LatencyProxy:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._listen(), self._loop).result(timeout=10)
        return self

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._close(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        self._loop.close()

    def reset_counters(self) -> None:
        # Swapped whole: the relay thread appends to whichever object is current.
        self.counts = Counts()

    async def _listen(self) -> None:
        self._server = await self._loop.create_server(lambda: _Client(self), "127.0.0.1", self.port,
                                                      reuse_address=True)

    async def _close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


class _Client(asyncio.Protocol):
    """The client's side of one relayed connection."""

    def __init__(self, proxy: LatencyProxy) -> None:
        self.proxy = proxy
        self.loop = proxy._loop
        self.transport: asyncio.Transport | None = None
        self.upstream: _Upstream | None = None
        self.held: collections.deque[tuple[float, bytes]] = collections.deque()
        self.held_bytes = 0
        self.paused = False  # reading paused because too much is held
        self.timer: asyncio.TimerHandle | None = None
        self.head = bytearray()  # an incomplete request head
        self.skip = 0  # body bytes still to pass before the next head
        self.counting = True

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.loop.create_task(self._connect())

    async def _connect(self) -> None:
        try:
            _, self.upstream = await self.loop.create_connection(lambda: _Upstream(self), *self.proxy.upstream)
        except OSError:
            self._close()
            return
        self._release()

    def data_received(self, data: bytes) -> None:
        if self.counting:
            self._count(data)
        self.held.append((self.loop.time() + self.proxy.latency, data))
        self.held_bytes += len(data)
        if self.timer is None:
            self.timer = self.loop.call_at(self.held[0][0], self._release)
        if self.held_bytes > HIGH_WATER and self.transport is not None and not self.paused:
            self.paused = True
            self.transport.pause_reading()

    def _release(self) -> None:
        """Pass on every chunk whose time has come; wake again for the next."""
        self.timer = None
        if self.upstream is None or self.upstream.transport is None:
            return  # still connecting: _connect releases when it is done
        now = self.loop.time()
        while self.held and self.held[0][0] <= now:
            data = self.held.popleft()[1]
            self.held_bytes -= len(data)
            self.upstream.transport.write(data)
        if self.held:
            self.timer = self.loop.call_at(self.held[0][0], self._release)
        if self.paused and self.held_bytes <= HIGH_WATER // 2 and self.transport is not None:
            self.paused = False
            self.transport.resume_reading()

    def _count(self, data: bytes) -> None:
        """Find request heads in the byte stream (Content-Length framing) and count them."""
        if self.skip >= len(data):
            self.skip -= len(data)
            return
        self.head += data[self.skip:]
        self.skip = 0
        while (end := self.head.find(b"\r\n\r\n")) >= 0:
            lines = self.head[:end].decode("latin-1").split("\r\n")
            headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
            if "chunked" in headers.get("transfer-encoding", ""):
                self.counting = False  # framing we do not follow: stop counting, keep relaying
                return
            method, target = lines[0].split(" ", 2)[:2]
            op, counts = operation(method, target, headers), self.proxy.counts
            counts.operations[op] += 1
            counts.timeline.append((time.monotonic() + self.proxy.latency, op))
            body = int(headers.get("content-length", "0"))
            rest = len(self.head) - end - 4
            if rest >= body:
                del self.head[:end + 4 + body]
            else:
                self.skip = body - rest
                self.head.clear()
                return

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        if self.timer is not None:
            self.timer.cancel()
        if self.upstream is not None and self.upstream.transport is not None:
            self.upstream.transport.close()

    def _close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    # Flow control: when the client reads slowly, stop reading the upstream's answers.
    def pause_writing(self) -> None:
        if self.upstream is not None and self.upstream.transport is not None:
            self.upstream.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.upstream is not None and self.upstream.transport is not None:
            self.upstream.transport.resume_reading()


class _Upstream(asyncio.Protocol):
    """The server's side: answers go straight back to the client."""

    def __init__(self, client: _Client) -> None:
        self.client = client
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self.client.transport is not None:
            self.client.transport.write(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self.client._close()

    def pause_writing(self) -> None:
        if self.client.transport is not None:
            self.client.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.client.transport is not None:
            self.client.transport.resume_reading()
