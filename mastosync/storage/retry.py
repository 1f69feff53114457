"""The one retry loop and the one pacer of storage calls.

RetryPolicy retries a call whose error is Transient, with exponential backoff and full
jitter; the copier (transfer.py) uses the same policy's delays for its whole-object
retries. Pacer decides how many requests an endpoint gets at once, and when it is down.
"""

from __future__ import annotations

import asyncio
import collections
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from mastosync.storage.base import Transient

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Exponential backoff with full jitter (AWS architecture blog, "Exponential Backoff And Jitter")."""

    retries: int = 8
    base: float = 0.1
    cap: float = 20.0
    throttled_cap: float = 1.0
    throttle_patience: float = 300.0  # seconds of throttling an object is given before it fails

    def delay(self, attempt: int, throttled: bool = False, retry_after: float | None = None) -> float:
        # Throttling is answered by the pacer, which lowers the requests in flight for the
        # whole endpoint; a throttled request itself is retried soon, and then waits its
        # turn at the pacer rather than asleep: when the throttling ends, every waiting
        # copy goes on at once, instead of sleeping out a long backoff.
        cap = min(self.cap, self.throttled_cap) if throttled else self.cap
        jittered = random.uniform(0, min(cap, self.base * 2 ** min(attempt - 1, 16)))
        # A server that says when to come back is believed (capped in _retry_after).
        return max(jittered, retry_after or 0.0)

    async def call(self, fn: Callable[[], Awaitable[T]], retry_unreachable: bool = True,
                   on_retry: Callable[[int, Exception], None] | None = None) -> T:
        """Call `fn`, retrying Transient errors with backoff; other errors pass through.

        With retry_unreachable=False, "cannot connect" is not retried (checks before a run:
        a wrong endpoint should fail at once, not after the backoff). `on_retry` hears of
        each retry (attempt, error) before its wait.
        """
        attempt = 0
        while True:
            attempt += 1
            try:
                return await fn()
            except Transient as exc:
                if attempt > self.retries or (exc.unreachable and not retry_unreachable):
                    raise
                if on_retry is not None:
                    on_retry(attempt, exc)
                await asyncio.sleep(self.delay(attempt, exc.throttled, exc.retry_after))


class Pacer:
    """How many requests an endpoint gets at once, and whether it is down.

    The requests allowed in flight follow the share of recent answers that were throttled
    (503 SlowDown, 429): with a share f, about max × (1 − f)², so one SlowDown in fifty
    costs 4% of the rate and a storm of them brings it down to one request at a time. The
    share is a moving average over about the last 64 answers, so the rate comes back
    within a few dozen answers of the throttling ending, and a limit lowered by a storm
    climbs back by at least a quarter request per success (as TCP). Errors and resets do
    not lower it: they are retried, not paced.

    The endpoint is declared down when nothing but failures (resets, timeouts, refused
    connections, 5xx other than throttling) has come back for `down_after` seconds; then
    the run stops instead of every object waiting through its retries.
    """

    WINDOW = 64  # answers the throttled share is averaged over

    def __init__(self, limit: int, down_after: float) -> None:
        self.max = float(limit)
        self.limit = float(limit)
        self.in_flight = 0
        self.down_after = down_after
        self.throttled_share = 0.0
        # Answers counted for --metrics: throttled ones, and failures (resets, timeouts, 5xx),
        # each of which the request is retried after.
        self.throttled_answers = 0
        self.failed_answers = 0
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        self._failing_since: float | None = None

    def _allowed(self) -> int:
        return max(1, int(self.limit))

    async def acquire(self) -> None:
        """Wait for a slot, first come first served."""
        if not self._waiters and self.in_flight < self._allowed():
            self.in_flight += 1
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter  # _wake counts the slot for us before waking us
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.release()  # woken and cancelled at once: hand the slot on
            else:
                self._waiters.remove(waiter)
            raise

    def release(self) -> None:
        self.in_flight -= 1
        self._wake()

    def _wake(self) -> None:
        while self._waiters and self.in_flight < self._allowed():
            waiter = self._waiters.popleft()
            if not waiter.done():
                self.in_flight += 1
                waiter.set_result(None)

    def _target(self) -> float:
        return max(1.0, self.max * (1.0 - self.throttled_share) ** 2)

    def answered(self) -> None:
        """An answer that is neither a success nor throttling (a 4xx): the endpoint is up."""
        self._failing_since = None
        self.throttled_share -= self.throttled_share / self.WINDOW

    def succeeded(self) -> None:
        self._failing_since = None
        self.throttled_share -= self.throttled_share / self.WINDOW
        if self.limit < self.max:
            self.limit = min(self._target(), self.limit + max(0.25, 1.0 / self.limit))
            self._wake()

    def throttled(self) -> None:
        self.throttled_answers += 1
        self._failing_since = None  # a throttling endpoint is up, only busy
        self.throttled_share += (1.0 - self.throttled_share) / self.WINDOW
        self.limit = min(self.limit, self._target())

    def failed(self) -> None:
        """A reset, a timeout, a refused connection or a server error: no sign of life."""
        self.failed_answers += 1
        if self._failing_since is None:
            self._failing_since = time.monotonic()

    @property
    def down(self) -> bool:
        since = self._failing_since
        return since is not None and time.monotonic() - since > self.down_after
