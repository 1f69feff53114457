"""`--metrics ADDR`: Prometheus metrics of a run, served at http://ADDR/metrics.

Nothing is counted twice: a collector reads the run's own counters (the display's Stats, each
endpoint's Pacer) when Prometheus scrapes, so the per-object path pays nothing for it and
the metrics always equal the summary. prometheus_client adds the process's own metrics
(process_resident_memory_bytes, CPU seconds) and serves the exposition format.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, ProcessCollector, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily
from prometheus_client.registry import Collector

from mastosync import __version__
from mastosync.display.progress import Display
from mastosync.engine.counters import Stats, total_of
from mastosync.errors import UsageError
from mastosync.loop import stopping_signals
from mastosync.storage.retry import Pacer

OUTCOMES = ("copied", "skipped", "missing", "failed")


@dataclass
class RunState:
    """What the collector reads at each scrape; filled in as the run sets up."""

    stats: list[Stats] = field(default_factory=list)
    pacers: dict[str, Pacer | None] = field(default_factory=dict)  # side → its endpoint's pacer
    display: Display | None = None
    in_flight: Callable[[], int] = lambda: 0
    mastodon: str = ""
    interrupted: Callable[[], bool] = lambda: False  # stopped by a signal: no lingering then


class RunCollector(Collector):
    def __init__(self, state: RunState) -> None:
        self.state = state

    def collect(self) -> Iterator[Any]:
        state = self.state
        objects = CounterMetricFamily("mastosync_objects", "Objects done, by type and outcome",
                                      labels=["type", "outcome"])
        moved = CounterMetricFamily("mastosync_bytes", "Object bytes copied, by type", labels=["type"])
        expected_objects = GaugeMetricFamily("mastosync_objects_expected", "Objects this run is to go through, by type "
                                             "(from the database)", labels=["type"])
        expected_bytes = GaugeMetricFamily("mastosync_bytes_expected", "Bytes this run is to go through, by type "
                                           "(originals known, derived styles estimated)", labels=["type"])
        for s in state.stats:
            for outcome in OUTCOMES:
                objects.add_metric([s.name, outcome], getattr(s, outcome))
            moved.add_metric([s.name], s.bytes)
            if s.objects_total is not None:
                expected_objects.add_metric([s.name], s.objects_total)
            if s.bytes_expected is not None:
                expected_bytes.add_metric([s.name], s.bytes_expected)
        yield from (objects, moved, expected_objects, expected_bytes)
        retries = CounterMetricFamily("mastosync_retries", "Requests answered with a failure or throttled, and "
                                      "retried, by side", labels=["side"])
        throttled = CounterMetricFamily("mastosync_throttled", "Requests answered 503 SlowDown or 429, by side",
                                        labels=["side"])
        limit = GaugeMetricFamily("mastosync_pacer_limit", "Requests the pacer allows in flight to each side",
                                  labels=["side"])
        for side, pacer in state.pacers.items():
            if pacer is None:
                continue
            retries.add_metric([side], pacer.throttled_answers + pacer.failed_answers)
            throttled.add_metric([side], pacer.throttled_answers)
            limit.add_metric([side], pacer.limit)
        yield from (retries, throttled, limit)
        yield GaugeMetricFamily("mastosync_in_flight", "Objects being copied now", value=state.in_flight())
        total = total_of(state.stats) if state.stats else None
        if total is not None and state.display is not None:
            window = state.display.window
            rate = window.bytes_rate()
            if rate is not None:
                yield GaugeMetricFamily("mastosync_bytes_per_second", "Bytes done per second, over the last 30 s",
                                        value=rate)
            eta = window.eta(total)
            if eta is not None:
                yield GaugeMetricFamily("mastosync_eta_seconds", "Seconds left, at the rate of the last 30 s",
                                        value=eta)
        info = InfoMetricFamily("mastosync_build", "mastosync's version and the Mastodon release of the database")
        info.add_metric([], {"version": __version__, "mastodon": state.mastodon or "unknown"})
        yield info


@contextlib.asynccontextmanager
async def serving(addr: str, state: RunState, linger: float, say: Callable[[str], None]) -> AsyncIterator[None]:
    """Metrics at http://ADDR/metrics while the block runs, and `linger` seconds after it ends
    well (a Ctrl-C or SIGTERM then ends the wait, not the run's outcome)."""
    if not addr:
        yield
        return
    host, _, port = addr.rpartition(":")
    registry = CollectorRegistry()
    registry.register(RunCollector(state))
    registry.register(ProcessCollector(registry=None))
    try:
        server, thread = start_http_server(int(port), addr=host.strip("[]") or "0.0.0.0", registry=registry)
    except OSError as exc:
        raise UsageError(f"--metrics {addr}: cannot listen there ({exc.strerror})") from None
    say(f"mastosync: metrics at http://{addr}/metrics")
    try:
        yield
        if linger and not state.interrupted():
            say(f"mastosync: metrics stay up {linger:g}s for the last scrape (sync.metrics_linger; Ctrl-C ends it)")
            await _wait_or_signal(linger)
    finally:
        server.shutdown()
        thread.join(timeout=5)


async def _wait_or_signal(seconds: float) -> None:
    stop = asyncio.Event()
    with stopping_signals(lambda signum: stop.set()), contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)
