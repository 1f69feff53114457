"""The event loop every command runs on: uvloop where it is installed (Linux, macOS), else asyncio's.

uvloop (libuv under the same asyncio API) cuts the loop's own overhead per callback and per
socket read, which is most of a small object's CPU cost. MASTOSYNC_UVLOOP=0 turns it off,
to compare.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import threading
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, TypeVar

T = TypeVar("T")


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    if os.environ.get("MASTOSYNC_UVLOOP", "1").strip().lower() in ("0", "false", "no", "off"):
        return None
    try:
        import uvloop
    except ImportError:
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    """asyncio.run, on uvloop when there is one."""
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        return runner.run(coroutine)


@contextlib.contextmanager
def stopping_signals(handler: Callable[[int], None]) -> Iterator[None]:
    """SIGINT and SIGTERM call `handler(signum)` on the running loop while the body runs.

    Only the main thread can receive signals: a command run from another thread (the
    test suite calls the CLI in-process that way) runs without, and is stopped otherwise."""
    loop = asyncio.get_running_loop()
    here = threading.current_thread() is threading.main_thread()
    if here:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, handler, signum)
    try:
        yield
    finally:
        if here:
            for signum in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(signum)
