"""A source setting that points at the wrong place looks like a source that lost every file:
"0 copied, 5,691 missing", exit 0, and a verify that passes on an empty bucket. SourceWatch
tells the two apart from the outcomes as they come, and stops the command with one line
that names the setting, a key it expected and what the source holds instead."""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter

from mastosync.config.settings import BucketSettings
from mastosync.errors import SourceMisconfigured
from mastosync.storage import Store

FIRST = 50  # a type whose first this many objects are all absent stops the command at once
AT_END = 0.95  # … and one with at least MIN_OBJECTS objects, this share of them absent, at the end
MIN_OBJECTS = 10


class SourceWatch:
    """Counts, per type, objects found at the source and objects absent from it."""

    def __init__(self, accept: bool = False) -> None:
        # --accept-missing: the files are really gone (an earlier migration lost them): say
        # nothing, copy what is there.
        self.accept = accept
        self.found: Counter[str] = Counter()
        self.absent: Counter[str] = Counter()
        self.example: dict[str, str] = {}  # a source key that was absent, per type

    def saw(self, type_name: str, source_key: str, present: bool) -> None:
        if present:
            self.found[type_name] += 1
            return
        self.absent[type_name] += 1
        self.example.setdefault(type_name, source_key)
        if not self.accept and self.found[type_name] == 0 and self.absent[type_name] >= FIRST:
            raise SourceMisconfigured(f"the first {FIRST} objects of {type_name} are all absent at the source")

    def at_end(self) -> None:
        if self.accept:
            return
        for name, absent in self.absent.items():
            total = absent + self.found[name]
            if total >= MIN_OBJECTS and absent >= AT_END * total:
                raise SourceMisconfigured(f"{absent} of the {total} objects of {name} are absent at the source")

    def first_example(self) -> str | None:
        return next(iter(self.example.values()), None)


async def explain(error: SourceMisconfigured, watch: SourceWatch, side: BucketSettings, store: Store) -> None:
    """Complete the error's message: the setting to look at, an expected key, what is there."""
    setting = "source.root" if side.is_folder else "source.key_prefix (and source.bucket)"
    value = side.root if side.is_folder else repr(side.key_prefix)
    there = await first_keys(store)
    held = (", ".join(there) + (" …" if len(there) == 3 else "")) if there else "nothing at all"
    example = watch.first_example()
    expected = f"; expected for example {example}" if example else ""
    error.args = (f"{error.args[0]}: check {setting} (now {value}){expected}; the source holds {held} (if "
                  "those files are really gone, --accept-missing copies what there is)",)


async def first_keys(store: Store, n: int = 3, timeout: float = 20.0) -> list[str]:
    """The first keys at the store (a bucket's by name, a folder's first files), best effort."""
    found: list[str] = []

    async def look() -> None:
        async for page in store.list_pages(""):
            found.extend(key for key, *_ in page[:50])
            if any("/" in key for key in found) or len(found) >= 50:
                return

    with contextlib.suppress(Exception):
        await asyncio.wait_for(look(), timeout)
    # Keys in folders first: a root one folder too high holds robots.txt beside system/….
    return sorted(found, key=lambda key: "/" not in key)[:n]
