"""Pieces that had no test of their own: the live display and its ETA, --since as a date or
with an offset, the resume watermark, and the memory bound that `run` uses."""

from __future__ import annotations

import asyncio
import io
from datetime import datetime

import pytest

from mastosync.display.progress import Display
from mastosync.engine.counters import RateWindow, Stats
from mastosync.errors import UsageError
from mastosync.request import parse_since
from mastosync.state.resume import TypeProgress


@pytest.mark.parametrize("text,expected", [
    ("2026-05-01", datetime(2026, 5, 1)),  # a date: its midnight, UTC
    ("2026-05-01T12:00:00Z", datetime(2026, 5, 1, 12)),
    ("2026-05-01T14:30:00+02:00", datetime(2026, 5, 1, 12, 30)),  # an offset: converted to UTC
    ("2026-05-01T07:00:00-05:00", datetime(2026, 5, 1, 12)),
    ("2026-05-01 12:00", datetime(2026, 5, 1, 12)),  # no zone: taken as UTC, as Mastodon stores times
    (" last ", "last"),
])
def test_since_as_a_date_or_with_an_offset(text: str, expected: datetime | str) -> None:
    assert parse_since(text) == expected


@pytest.mark.parametrize("text", ["yesterday", "2026-13-01", "12:00", ""])
def test_since_refuses_what_is_no_time(text: str) -> None:
    with pytest.raises(UsageError, match="ISO-8601"):
        parse_since(text)


def test_resume_watermark_moves_only_past_records_wholly_done() -> None:
    p = TypeProgress()
    p.begin(10, 2)
    p.begin(11, 1)
    p.begin(12, 0)  # a record without files is done at once, but waits for the ones before it
    assert p.done_through is None
    p.finish(11, True)  # out of order: 10 still has objects in flight
    assert p.done_through is None
    p.finish(10, True)
    assert p.done_through is None  # one of 10's two objects left
    p.finish(10, False)  # … which failed: 10 is remembered for the next run, and the mark moves on
    assert p.done_through == 12 and p.failed_ids == {10}
    again = TypeProgress(done_through=12, failed_ids={10})
    again.retrying = {10}
    again.begin(10, 1)
    again.finish(10, True)  # retried and copied: forgotten, and the mark does not go back
    assert again.failed_ids == set() and again.done_through == 12
    assert again.to_json() == {"done_through": 12, "failed_ids": []}


def test_eta_follows_the_slower_of_objects_and_bytes() -> None:
    s = Stats("media_attachments", objects_total=1000, bytes_total=1000 * 2**20)
    window = RateWindow(seconds=30)
    window.add(0.0, 0, 0)
    assert window.eta(s) is None  # one sample: no rate yet
    s.copied, s.bytes_done, s.estimated_done = 100, 10 * 2**20, 10 * 2**20
    window.add(10.0, 100, 10 * 2**20)
    # 10 objects/s → 90 s for the 900 left; 1 MiB/s → 990 s for the bytes left: the bytes decide.
    assert window.eta(s) == pytest.approx(990.0)
    for t in range(11, 100):  # samples older than the window are dropped: the rate follows the run
        window.add(float(t), 100 + (t - 10) * 10, 10 * 2**20 + (t - 10) * 10 * 2**20)
    s.copied, s.bytes_done = 990, 900 * 2**20
    s.estimated_done = s.bytes_done
    assert window.eta(s) == pytest.approx(10.0, abs=0.5)  # 10 MiB/s now, 100 MiB left
    s.ended = 1.0
    assert window.eta(s) is None


def test_live_display_draws_a_table_with_totals_bar_and_eta(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "80")  # the narrowest usual terminal: names are not cut
    out = io.StringIO()
    media = Stats("media_attachments", records_total=4, objects_total=4, bytes_total=4000)
    empty = Stats("imports", records_total=0, objects_total=0, bytes_total=0)
    display = Display([media, empty], interval=60, out=out, live=True)

    async def run() -> None:
        with display.running():
            media.copied, media.bytes_done, media.estimated_done, media.bytes = 2, 2000, 2000, 2000
            await asyncio.sleep(0.6)  # the live table refreshes four times a second

    asyncio.run(run())
    text = out.getvalue()
    assert "\x1b[" in text  # drawn for a terminal
    assert "media_attachments" in text and "2/4" in text and "2.0/3.9 KiB" in text
    assert "imports" not in text  # a type with nothing to do takes no room
    assert "50.0%" in text and "ETA" in text


def test_plain_lines_when_not_a_terminal() -> None:
    out = io.StringIO()
    media = Stats("media_attachments", records_total=4, objects_total=4, bytes_total=4000)
    display = Display([media], interval=60, out=out, live=False)
    media.copied, media.bytes_done, media.estimated_done = 1, 1000, 1000
    line = display.plain_line()
    assert "\x1b[" not in line and line.startswith("progress: 25.0% media_attachments 1/4 objects; copied 1")


def test_run_holds_at_most_its_memory_budget_of_object_bytes() -> None:
    """`run`'s budget is one object at the threshold plus one part, whatever the concurrency."""
    from mastosync.commands.run import memory_budget
    from mastosync.config.settings import SyncSettings
    from mastosync.config.units import MiB

    budget = memory_budget(SyncSettings(multipart_threshold=16 * MiB, part_size=8 * MiB))
    peak = 0

    async def hold(n: int) -> None:
        nonlocal peak
        held = await budget.acquire(n)
        peak = max(peak, budget.used)
        await asyncio.sleep(0.01)
        await budget.release(held)

    async def many() -> None:
        # 32 copies at once: small bodies, 16 MiB ones at the threshold, 8 MiB parts, and a
        # body larger than the whole budget (which waits for all of it).
        await asyncio.gather(*(hold(size) for size in [100_000] * 10 + [16 * MiB] * 8 + [8 * MiB] * 12 + [64 * MiB]))

    asyncio.run(many())
    assert budget.limit == 24 * MiB and 16 * MiB <= peak <= budget.limit and budget.used == 0


def test_where_a_side_lives_one_type_per_kind() -> None:
    """sides.py: the identity (the resume state's key, pinned: existing state files must keep
    their names), the place (two spellings of one endpoint), the public URL and the API URL."""
    from mastosync.config.settings import BucketSettings, SshSettings
    from mastosync.sides import LocalFolder, S3Side, SftpFolder, side_of

    ssh = SshSettings(host="h.example", user="u")
    s3 = side_of(BucketSettings(endpoint="https://S3.Example.com:443/", bucket="b", key_prefix="m/"), ssh)
    assert isinstance(s3, S3Side) and s3.identity() == ["https://S3.Example.com:443/", "b", "m/"]
    assert s3.place() == side_of(BucketSettings(endpoint="https://s3.example.com", bucket="b", key_prefix="m/"),
                                 ssh).place()
    assert s3.public_base() == "https://S3.Example.com:443/b/m//"  # kt-paperclip's prefix + "/" + key
    assert s3.url() == ("https://S3.Example.com:443", "/b/")
    folder = side_of(BucketSettings(kind="filesystem", root="/srv/system/"), ssh)
    assert isinstance(folder, LocalFolder) and folder.identity() == ["filesystem", "/srv/system/"]
    assert folder.place() == ("filesystem", "/srv/system", "") and folder.public_base() is None
    remote = side_of(BucketSettings(kind="sftp", root="/srv/system"), ssh)
    assert isinstance(remote, SftpFolder) and remote.identity() == ["sftp", "u@h.example:22", "/srv/system"]
    aws = side_of(BucketSettings(region="eu-west-1", bucket="b"), ssh)
    assert aws.place() == ("aws:eu-west-1", "b", "") and aws.public_base() == "https://s3.eu-west-1.amazonaws.com/b/"


@pytest.mark.parametrize("value", ["Sun, 06 Nov 1994 08:49:37 GMT", "Sat, 05 Dec 2026 13:40:01 GMT",
                                   "Sunday, 06-Nov-94 08:49:37 GMT", "Sun Nov  6 08:49:37 1994",
                                   "Sun, 06 Nov 1994 08:49:37 +0100", "Sun, 06 Xyz 1994 08:49:37 GMT", "garbage", ""])
def test_http_dates_read_fast_as_email_utils_reads_them(value: str) -> None:
    """Last-Modified of every answer: the IMF-fixdate fast path agrees with email.utils."""
    import email.utils

    from mastosync.storage.s3.answers import _http_time

    try:
        expected: float | None = email.utils.parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError):
        expected = None
    assert _http_time(value) == expected
