"""A fault-injecting HTTP/1.1 proxy to put in front of an S3 server.

With a seeded random generator it answers a share of requests with 503 SlowDown or
500 InternalError, resets connections, truncates response bodies mid-stream and adds
latency; it can also refuse every connection ("down"). It can play an S3 that behaves
in other ways: answer chosen operations with an error (404 NoSuchUpload, 403
AccessDenied, 400 ExpiredToken), rewrite headers of object answers (an ETag that is no
MD5), insist on a region (x-amz-bucket-region) or a clock of its own
(RequestTimeTooSkewed), and send Retry-After with its SlowDowns. It counts requests by S3
operation so tests can assert what a client really sent. It runs its own event loop
in a thread, so it serves both in-process async tests and CLI subprocesses.
"""

from __future__ import annotations

import asyncio
import calendar
import collections
import email.utils
import random
import re
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import parse_qs, unquote, urlsplit

from tests.services.process import free_port


@dataclass
class Faults:
    """Shares of requests (0..1) that get each fault; decided in this order."""

    slowdown: float = 0.0  # 503 SlowDown
    internal: float = 0.0  # 500 InternalError
    reset: float = 0.0  # connection closed without an answer
    truncate: float = 0.0  # GET bodies cut in the middle, then the connection closed
    latency: float = 0.0  # seconds added …
    latency_share: float = 1.0  # … to this share of requests
    only_methods: tuple[str, ...] = ()  # faults only for these HTTP methods (empty: all)
    only_ops: tuple[str, ...] = ()  # … and only for these S3 operations (empty: all)
    error: float = 0.0  # answered with `error_answer` …
    error_answer: tuple[int, str] = (404, "NoSuchUpload")  # … (status, S3 error code)
    retry_after: float | None = None  # sent as Retry-After with each SlowDown


@dataclass
class Behaviour:
    """How this S3 differs from the upstream's, besides random faults."""

    response_headers: dict[str, str] = field(default_factory=dict)  # set on GET/HEAD object answers
    region: str | None = None  # the bucket's region: requests signed for another are redirected
    clock_offset: float = 0.0  # this server's clock minus the real one (seconds)


@dataclass
class Counters:
    operations: collections.Counter[str] = field(default_factory=collections.Counter)
    faults: collections.Counter[str] = field(default_factory=collections.Counter)
    put_bytes: int = 0
    headers: collections.Counter[str] = field(default_factory=collections.Counter)  # "Op header-name"
    stored: collections.Counter[str] = field(default_factory=collections.Counter)  # paths written (200)
    acl: dict[str, str | None] = field(default_factory=dict)  # path → x-amz-acl of its last write request
    targets: dict[str, str] = field(default_factory=dict)  # operation → target (path?query) of its last request
    timeline: list[tuple[float, str, int]] = field(default_factory=list)  # (time, op, status)
    # (time, requests in flight once this one arrived): what a client's pacing does, whatever
    # the machine's speed
    in_flight: list[tuple[float, int]] = field(default_factory=list)
    # The most body bytes being uploaded at once (PutObject, UploadPart): what a memory budget allows.
    most_upload_bytes_at_once: int = 0


UPLOADS = ("PutObject", "UploadPart")


def operation(method: str, target: str, headers: dict[str, str]) -> str:
    """The S3 operation of a request, from its method, query and headers."""
    query = parse_qs(urlsplit(target).query, keep_blank_values=True)
    path = urlsplit(target).path.strip("/")
    if method == "PUT":
        if "partNumber" in query:
            return "UploadPartCopy" if "x-amz-copy-source" in headers else "UploadPart"
        if "x-amz-copy-source" in headers:
            return "CopyObject"
        if "acl" in query:
            return "PutObjectAcl"
        return "PutObject" if "/" in path else "CreateBucket"
    if method == "POST":
        return "CreateMultipartUpload" if "uploads" in query else "CompleteMultipartUpload"
    if method == "DELETE":
        return "AbortMultipartUpload" if "uploadId" in query else "DeleteObject"
    if method == "HEAD":
        return "HeadObject" if "/" in path else "HeadBucket"
    if method == "GET":
        if "/" not in path:
            return "ListMultipartUploads" if "uploads" in query else "ListObjects"
        return "GetObject"
    return method


class FaultProxy:
    def __init__(self, upstream_port: int, seed: int = 1234, upstream_host: str = "127.0.0.1") -> None:
        self.upstream = (upstream_host, upstream_port)
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.faults = Faults()
        self.behaviour = Behaviour()
        self.counters = Counters()
        self.random = random.Random(seed)
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.Server | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True, name="faultproxy")
        self._writers: set[asyncio.StreamWriter] = set()
        self._in_flight = 0
        self._uploads = 0

    # -- control, from any thread ---------------------------------------------------

    def start(self) -> FaultProxy:
        self._thread.start()
        self._call(self._listen())
        return self

    def stop(self) -> None:
        self._call(self._close(drop=True))
        self._call(self._finish_clients())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)

    def set_faults(self, **shares: float | tuple[str, ...] | tuple[int, str]) -> None:
        with self._lock:
            self.faults = Faults(**shares)  # type: ignore[arg-type]

    def behave(self, **changes: object) -> None:
        with self._lock:
            self.behaviour = Behaviour(**changes)  # type: ignore[arg-type]

    def set_down(self, down: bool) -> None:
        """Down: the port refuses connections and open ones are reset."""
        self._call(self._close(drop=True) if down else self._listen())

    def reset_counters(self) -> None:
        with self._lock:
            self.counters = Counters()

    def count(self, *ops: str) -> int:
        with self._lock:
            return sum(self.counters.operations[o] for o in ops)

    def _call(self, coro) -> None:  # type: ignore[no-untyped-def]
        asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=10)

    async def _listen(self) -> None:
        if self._server is None:
            self._server = await asyncio.start_server(self._client, "127.0.0.1", self.port,
                                                      reuse_address=True)

    async def _close(self, drop: bool) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        if drop:
            for w in list(self._writers):
                _abort(w)

    async def _finish_clients(self) -> None:
        """End every connection's task, so none is left suspended when the loop stops."""
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # -- serving ---------------------------------------------------------------------

    def _decide(self, method: str, op: str = "") -> tuple[str | None, float]:
        with self._lock:
            f = self.faults
            delay = f.latency if f.latency and self.random.random() < f.latency_share else 0.0
            if f.only_methods and method not in f.only_methods:
                return None, delay
            if f.only_ops and op not in f.only_ops:
                return None, delay
            roll = self.random.random()
            for name, share in (("slowdown", f.slowdown), ("internal", f.internal),
                                ("reset", f.reset), ("truncate", f.truncate), ("error", f.error)):
                if roll < share:
                    return name, delay
                roll -= share
            return None, delay

    def _record(self, op: str, status: int, fault: str | None, put_bytes: int,
                headers: dict[str, str] | None = None, target: str = "", uploading: int = 0) -> None:
        with self._lock:
            self._in_flight -= 1  # every request is recorded once, when it is answered
            self._uploads -= uploading
            if status == 200 and op in ("PutObject", "CompleteMultipartUpload", "CopyObject"):
                self.counters.stored[unquote(urlsplit(target).path)] += 1
            for name in headers or ():
                self.counters.headers[f"{op} {name}"] += 1
            if headers is not None and op in ("PutObject", "CreateMultipartUpload", "CopyObject", "PutObjectAcl"):
                self.counters.acl[unquote(urlsplit(target).path)] = headers.get("x-amz-acl")
            self.counters.operations[op] += 1
            if target:
                self.counters.targets[op] = target
            if fault:
                self.counters.faults[fault] += 1
            self.counters.put_bytes += put_bytes
            self.counters.timeline.append((time.monotonic(), op, status))

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        up_reader = up_writer = None
        try:
            while True:
                head = await _read_head(reader)
                if head is None:
                    return
                request_line, headers, raw_head = head
                method, target, _ = request_line.split(" ", 2)
                op = operation(method, target, headers)
                with self._lock:
                    self._in_flight += 1
                    self.counters.in_flight.append((time.monotonic(), self._in_flight))
                    uploading = int(headers.get("content-length", 0) or 0) if op in UPLOADS else 0
                    if uploading:
                        self._uploads += uploading
                        self.counters.most_upload_bytes_at_once = max(self.counters.most_upload_bytes_at_once,
                                                                      self._uploads)
                if headers.get("expect", "").lower() == "100-continue":
                    # Answer the interim response here, so the upstream never sends one.
                    writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
                    raw_head = b"\r\n".join(
                        line for line in raw_head.split(b"\r\n")
                        if not line.lower().startswith(b"expect:")
                    )
                body = await _read_body(reader, headers)
                refusal = self._refuse(headers)
                if refusal is not None:
                    status, code, extra = refusal
                    self._record(op, status, code, 0, headers, target, uploading)
                    await _answer(writer, method, status, code, extra)
                    continue
                fault, delay = self._decide(method, op)
                if delay:
                    await asyncio.sleep(delay)
                if fault in ("slowdown", "internal", "error"):
                    f = self.faults
                    status, code = {"slowdown": (503, "SlowDown"), "internal": (500, "InternalError"),
                                    "error": f.error_answer}[fault]
                    extra = {"Retry-After": f"{f.retry_after:g}"} if fault == "slowdown" and f.retry_after else {}
                    self._record(op, status, fault, 0, uploading=uploading)
                    await _answer(writer, method, status, code, extra)
                    continue
                if fault == "reset":
                    self._record(op, 0, fault, 0, uploading=uploading)
                    _abort(writer)
                    return
                if up_writer is None or up_writer.is_closing():
                    up_reader, up_writer = await asyncio.open_connection(*self.upstream)
                up_writer.write(raw_head + body)
                await up_writer.drain()
                assert up_reader is not None
                cut = fault == "truncate" and method == "GET"

                put_bytes = len(body) if method == "PUT" else 0

                def record(status: int, op: str = op, put_bytes: int = put_bytes,
                           headers: dict[str, str] = headers, target: str = target, cut: bool = cut,
                           uploading: int = uploading) -> None:
                    # Counted before the client sees the answer, so tests never race the count.
                    self._record(op, status, "truncate" if cut else None, put_bytes, headers, target, uploading)

                rewrite = dict(self.behaviour.response_headers) if op in ("GetObject", "HeadObject") else {}
                if self.behaviour.clock_offset:  # every answer tells this server's (wrong) time
                    rewrite["Date"] = email.utils.formatdate(time.time() + self.behaviour.clock_offset, usegmt=True)
                status, keep = await self._relay_response(up_reader, writer, method, cut, record, rewrite)
                if not keep:
                    _abort(writer)
                    return
        except (ConnectionError, asyncio.IncompleteReadError, OSError):
            return
        finally:
            self._writers.discard(writer)
            if up_writer is not None:
                up_writer.close()
            if not writer.is_closing():
                writer.close()

    def _refuse(self, headers: dict[str, str]) -> tuple[int, str, dict[str, str]] | None:
        """An answer this S3 gives instead of the upstream's: wrong region, skewed clock."""
        b = self.behaviour
        scope = re.search(r"Credential=[^/]+/\d{8}/([^/]+)/", headers.get("authorization", ""))
        if b.region and scope and scope.group(1) != b.region:
            return 400, "AuthorizationHeaderMalformed", {"x-amz-bucket-region": b.region}
        if b.clock_offset:
            now = time.time() + b.clock_offset
            try:
                sent = calendar.timegm(time.strptime(headers.get("x-amz-date", ""), "%Y%m%dT%H%M%SZ"))
            except ValueError:
                sent = 0
            if abs(sent - now) > 900:
                return 403, "RequestTimeTooSkewed", {"Date": email.utils.formatdate(now, usegmt=True)}
        return None

    async def _relay_response(self, up: asyncio.StreamReader, writer: asyncio.StreamWriter,
                              method: str, cut: bool, record: Callable[[int], None],
                              rewrite: dict[str, str] | None = None) -> tuple[int, bool]:
        """Copy one response; with `cut`, send half the body and report the connection dead."""
        while True:
            head = await _read_head(up)
            if head is None:
                raise ConnectionResetError("upstream closed")
            status_line, headers, raw = head
            status = int(status_line.split(" ", 2)[1])
            if status == 200 and rewrite:
                raw = _rewrite_head(raw, rewrite)
            if status != 100:
                record(status)
            writer.write(raw)
            if status != 100:
                break
        if method == "HEAD" or status in (204, 304):
            await writer.drain()
            return status, True
        if "content-length" in headers:
            length = int(headers["content-length"])
            send = length // 2 if cut and length > 1 else length
            remaining = length
            while remaining:
                chunk = await up.read(min(65536, remaining))
                if not chunk:
                    raise ConnectionResetError("upstream body ended early")
                remaining -= len(chunk)
                if send > 0:
                    writer.write(chunk[:send])
                    send -= min(send, len(chunk))
                    await writer.drain()
            return status, not (cut and length > 1)
        if headers.get("transfer-encoding", "").lower() == "chunked":
            while True:
                size_line = await up.readline()
                writer.write(size_line)
                size = int(size_line.split(b";")[0].strip() or b"0", 16)
                data = await up.readexactly(size + 2)
                writer.write(data)
                await writer.drain()
                if size == 0:
                    return status, True
        while chunk := await up.read(65536):  # no length: until the upstream closes
            writer.write(chunk)
            await writer.drain()
        return status, False


async def _answer(writer: asyncio.StreamWriter, method: str, status: int, code: str,
                  extra: dict[str, str]) -> None:
    """An S3 error answer with `code`, and `extra` headers."""
    payload = (f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code>'
               f"<Message>injected by the test proxy</Message></Error>").encode()
    lines = [f"HTTP/1.1 {status} {REASONS.get(status, 'Error')}", "Content-Type: application/xml",
             f"Content-Length: {len(payload)}", *(f"{k}: {v}" for k, v in extra.items())]
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + (b"" if method == "HEAD" else payload))
    await writer.drain()


REASONS = {400: "Bad Request", 403: "Forbidden", 404: "Not Found", 500: "Internal Server Error",
           503: "Slow Down"}


def _rewrite_head(raw: bytes, replace: dict[str, str]) -> bytes:
    lines = raw.decode("latin-1").split("\r\n")
    names = {k.lower() for k in replace}
    kept = [line for line in lines[1:] if line and line.split(":", 1)[0].strip().lower() not in names]
    return ("\r\n".join([lines[0], *kept, *(f"{k}: {v}" for k, v in replace.items())]) + "\r\n\r\n").encode(
        "latin-1")


def _abort(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None:
        try:  # RST instead of FIN, like a real connection reset
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        except OSError:
            pass
    writer.transport.abort()


async def _read_head(reader: asyncio.StreamReader) -> tuple[str, dict[str, str], bytes] | None:
    try:
        raw = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        if exc.partial:
            raise
        return None
    lines = raw.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            k, v = line.split(":", 1)
            headers[k.strip().lower()] = v.strip()
    return lines[0], headers, raw


async def _read_body(reader: asyncio.StreamReader, headers: dict[str, str]) -> bytes:
    if "content-length" in headers:
        return await reader.readexactly(int(headers["content-length"]))
    if headers.get("transfer-encoding", "").lower() == "chunked":
        out = bytearray()
        while True:
            size_line = await reader.readline()
            out += size_line
            size = int(size_line.split(b";")[0].strip() or b"0", 16)
            out += await reader.readexactly(size + 2)
            if size == 0:
                return bytes(out)
    return b""
