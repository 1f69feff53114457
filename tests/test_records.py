"""Reading the real PostgreSQL: column introspection, paging, filters, and `dry-run` output."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from mastosync.config.settings import DatabaseSettings
from mastosync.mastodon import layout, records
from tests.conftest import MastodonDb, make_db, run_cli, write_config
from tests.services import instance
from tests.services.postgres import PostgresServer


def settings_for(db: MastodonDb) -> DatabaseSettings:
    return DatabaseSettings(host=db.server.host, port=db.server.port, name=db.name, user=db.user,
                            password=db.password)


async def read_objects(db: MastodonDb, filters: records.Filters, types: tuple[str, ...] = layout.TYPE_NAMES,
                       **kw: Any) -> list[layout.MediaObject]:
    database = records.Database(settings_for(db))
    found: list[layout.MediaObject] = []
    try:
        hidden = await records.hidden(database, tuple(layout.TYPES[name] for name in types))
        for name in types:
            object_type = layout.TYPES[name]
            query = await records.query_for(database, object_type, filters)
            if query is None:
                continue
            async for row in records.stream(database, query, **kw):
                found += layout.objects_of(object_type, row, filters.since, hidden)
    finally:
        await database.close()
    return found


async def read_keys(db: MastodonDb, filters: records.Filters, types: tuple[str, ...] = layout.TYPE_NAMES,
                    **kw: Any) -> set[str]:
    return {o.key for o in await read_objects(db, filters, types, **kw)}


@pytest.mark.parametrize("shape", ["4.6", "4.2"])
async def test_exact_keys_for_hand_built_rows(postgres: PostgresServer, shape: str) -> None:
    db = await make_db(postgres, shape)
    inst = instance.build(shape)
    for table, rows in inst.rows.items():
        await db.insert(table, rows)
    assert await read_keys(db, records.Filters()) == set(inst.computed())


@pytest.mark.parametrize("shape", ["4.6", "4.2"])
async def test_every_table_with_files_is_read(postgres: PostgresServer, shape: str) -> None:
    """Seven tables on 4.4+; imports too on older databases, and no error where it was dropped."""
    db = await make_db(postgres, shape)
    inst = instance.build(shape)
    for table, rows in inst.rows.items():
        await db.insert(table, rows)
    found = await read_objects(db, records.Filters())
    types = {o.type for o in found}
    assert types == set(layout.TYPE_NAMES) - ({"imports"} if shape == "4.6" else set())
    assert {o.key for o in found if o.private} == {k for k, o in inst.computed().items() if o.private}
    assert {o.key for o in found if o.type in ("backups", "imports")} <= {o.key for o in found if o.private}


async def test_suspension_and_removed_posts_are_read_once(mastodon_db: MastodonDb) -> None:
    inst = instance.build()
    for table, rows in inst.rows.items():
        await mastodon_db.insert(table, rows)
    database = records.Database(settings_for(mastodon_db))
    try:
        hidden = await records.hidden(database, (layout.TYPES["media_attachments"],))
        assert hidden == layout.Hidden(frozenset({instance.SNOW + 4}), frozenset({instance.SNOW + 100}))
        # a selection without media needs neither set
        assert await records.hidden(database, (layout.TYPES["accounts"],)) == layout.NOTHING_HIDDEN
    finally:
        await database.close()


async def test_window_reopen_hands_out_every_row_once(mastodon_db: MastodonDb) -> None:
    rows = [{"id": i, "file_file_name": f"{i}.mp3", "file_content_type": "audio/mpeg"} for i in range(1, 501)]
    await mastodon_db.insert("media_attachments", rows)
    database = records.Database(settings_for(mastodon_db))
    query = await records.query_for(database, layout.TYPES["media_attachments"], records.Filters())
    assert query is not None
    ids = [r["id"] async for r in records.stream(database, query, window_rows=37, prefetch=10)]
    assert ids == list(range(1, 501))
    resumed = [r["id"] async for r in records.stream(database, query, after_id=450)]
    assert resumed == list(range(451, 501))
    assert await records.totals(database, query) == (500, 500, 0)  # audio: one object each, no size known
    assert (await records.totals(database, query, after_id=450))[0] == 50
    await database.close()


async def test_stream_survives_postgres_restart(postgres: PostgresServer) -> None:
    db = await make_db(postgres, "4.6")
    rows = [{"id": i, "file_file_name": f"{i}.mp3", "file_content_type": "audio/mpeg"} for i in range(1, 3001)]
    await db.insert("media_attachments", rows)
    database = records.Database(settings_for(db))
    query = await records.query_for(database, layout.TYPES["media_attachments"], records.Filters())
    assert query is not None
    ids = []
    async for row in records.stream(database, query, prefetch=100):
        ids.append(row["id"])
        if len(ids) == 1000:
            postgres.restart()  # every connection is dropped mid-cursor
    assert ids == list(range(1, 3001))
    await database.close()


async def test_limit_is_first_n_records_by_id(mastodon_db: MastodonDb) -> None:
    inst = instance.build()
    for table, rows in inst.rows.items():
        await mastodon_db.insert(table, rows)
    got = await read_keys(mastodon_db, records.Filters(limit=2), types=("media_attachments",))
    # ids 1 and 2 are the two lowest ids with files
    assert got == {k for k, o in inst.computed().items() if o.type == "media_attachments" and o.id in (1, 2)}


async def test_since_and_include_remote(mastodon_db: MastodonDb) -> None:
    inst = instance.build()
    for table, rows in inst.rows.items():
        await mastodon_db.insert(table, rows)
    since = await read_keys(mastodon_db, records.Filters(since=datetime(2026, 5, 1)))
    assert since == {k for k, o in inst.computed().items() if o.updated_at >= datetime(2026, 5, 1)}
    local = await read_keys(mastodon_db, records.Filters(include_remote=False))
    assert local == {k for k, o in inst.computed().items() if o.local}
    assert not any(k.startswith("cache/") for k in local)


async def test_missing_table_is_a_clear_error(postgres: PostgresServer) -> None:
    from mastosync.errors import DatabaseError

    db = await make_db(postgres, "4.6")
    conn = await db.connect()
    await conn.execute("DROP TABLE preview_cards")
    await conn.close()
    database = records.Database(settings_for(db))
    with pytest.raises(DatabaseError, match="table 'preview_cards' not found"):
        await records.query_for(database, layout.TYPES["preview_cards"], records.Filters())
    await database.close()


# -- dry-run through the CLI ------------------------------------------------------------


def dry_config(tmp_path: Path, db: MastodonDb, **extra: Any) -> Path:
    # No credentials anywhere: dry-run must not need them.
    return write_config(tmp_path / "config.toml", db=db, extra={
        "source": {"bucket": "old", "key_prefix": "src-prefix"},
        "destination": {"bucket": "new", **extra},
    })


async def test_dry_run_json_lists_every_object(tmp_path: Path, mastodon_db: MastodonDb) -> None:
    inst = instance.build()
    for table, rows in inst.rows.items():
        await mastodon_db.insert(table, rows)
    result = run_cli("dry-run", "--json", config=dry_config(tmp_path, mastodon_db, key_prefix="dst"))
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    # The totals, from the database alone, on stderr: stdout stays the plan.
    assert result.stderr.startswith(f"dry-run: {len(inst.objects)} objects, about "), result.stderr
    assert {line["source_key"] for line in lines} == {f"src-prefix/{k}" for k in inst.computed()}
    assert {line["destination_key"] for line in lines} == {f"dst/{k}" for k in inst.computed()}
    assert len(lines) == len(inst.objects)
    assert {line["type"] for line in lines} == {o.type for o in inst.objects}
    assert all(isinstance(line["id"], int) for line in lines)
    private = {line["destination_key"] for line in lines if line["private"]}
    assert private == {f"dst/{k}" for k, o in inst.computed().items() if o.private}
    fallbacks = {line["fallback_source_key"] for line in lines if "fallback_source_key" in line}
    assert fallbacks == {"src-prefix/media_attachments/files/000/000/004/small/old.gif",  # every GIF small
                         "src-prefix/media_attachments/files/105/105/582/134/970/667/small/e.gif"}


async def test_dry_run_key_prefix_with_a_trailing_slash(tmp_path: Path, mastodon_db: MastodonDb) -> None:
    """S3_KEY_PREFIX=mastodon/ makes Mastodon write mastodon//accounts/…: so must we."""
    inst = instance.build()
    for table, rows in inst.rows.items():
        await mastodon_db.insert(table, rows)
    config = write_config(tmp_path / "config.toml", db=mastodon_db, extra={
        "source": {"bucket": "old", "key_prefix": "mastodon/"}, "destination": {"bucket": "new"}})
    result = run_cli("dry-run", "--type", "custom_emojis", "--limit", "1", config=config)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == (
        "custom_emojis\t1\tmastodon//custom_emojis/images/000/000/001/original/blobcat.png"
        "\tcustom_emojis/images/000/000/001/original/blobcat.png")


async def test_dry_run_text_type_and_limit(tmp_path: Path, mastodon_db: MastodonDb) -> None:
    inst = instance.build()
    for table, rows in inst.rows.items():
        await mastodon_db.insert(table, rows)
    result = run_cli("dry-run", "--type", "custom_emojis", "--limit", "1", config=dry_config(tmp_path, mastodon_db))
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "custom_emojis\t1\tsrc-prefix/custom_emojis/images/000/000/001/original/blobcat.png"
        "\tcustom_emojis/images/000/000/001/original/blobcat.png",
        "custom_emojis\t1\tsrc-prefix/custom_emojis/images/000/000/001/static/blobcat.png"
        "\tcustom_emojis/images/000/000/001/static/blobcat.png",
    ]


async def test_dry_run_unreachable_database_is_one_line(tmp_path: Path, mastodon_db: MastodonDb) -> None:
    config = dry_config(tmp_path, mastodon_db)
    wrong = run_cli("dry-run", config=config, env={"MASTOSYNC_DATABASE_PASSWORD": "wrong-pw-123"})
    assert wrong.returncode == 2
    assert "password authentication failed" in wrong.stderr and "wrong-pw-123" not in wrong.stderr
    assert len(wrong.stderr.strip().splitlines()) == 1
    from tests.services.process import free_port

    closed = run_cli("dry-run", config=config, env={"MASTOSYNC_DATABASE_PORT": str(free_port())})
    assert closed.returncode == 2 and "cannot connect" in closed.stderr
    assert "Traceback" not in closed.stderr + wrong.stderr


@pytest.mark.parametrize("shape", ["4.6", "4.2"])
async def test_totals_count_every_object_before_the_copy(postgres: PostgresServer, shape: str) -> None:
    """Objects per type from SQL alone equal the objects the layout expands the rows into."""
    db = await make_db(postgres, shape)
    inst = instance.build(shape)
    for table, rows in inst.rows.items():
        await db.insert(table, rows)
    database = records.Database(settings_for(db))
    try:
        for name in layout.TYPE_NAMES:
            query = await records.query_for(database, layout.TYPES[name], records.Filters())
            expected = [o for o in inst.computed().values() if o.type == name]
            if query is None:
                assert not expected
                continue
            count, objects, size = await records.totals(database, query)
            assert objects == len(expected), name
            found = await read_objects(db, records.Filters(), types=(name,))
            assert size == sum(o.estimate for o in found), name  # originals' sizes, derived styles estimated
    finally:
        await database.close()


async def test_a_stopped_feed_ends_its_cursor_at_once(mastodon_db: MastodonDb) -> None:
    """The pool closes the feed when a run stops; the cursor's transaction must end then, not
    whenever the loop finalises a generator left open, before the connection is used again
    (the run's history and summary ask the database for its clock)."""
    import contextlib

    from mastosync.engine.counters import Stats
    from mastosync.engine.plan import Feed
    from mastosync.state.resume import TypeProgress

    await mastodon_db.insert("media_attachments", [
        {"id": n, "file_file_name": f"{n}.png", "file_content_type": "image/png"} for n in range(1, 51)])
    database = records.Database(settings_for(mastodon_db))
    try:
        query = await records.query_for(database, layout.TYPES["media_attachments"], records.Filters())
        feed = Feed(database, ("media_attachments",), {"media_attachments": query}, {},
                    {"media_attachments": TypeProgress()}, {"media_attachments": Stats("media_attachments")},
                    ("", ""), db_batch=10)
        async with contextlib.aclosing(feed.jobs()) as jobs:
            async for _ in jobs:
                break  # stopped after the first job, as the pool stops
        connection = await database.connection()
        assert not connection.is_in_transaction(), "the feed's cursor was left open"
        assert await records.clock(database) is not None
    finally:
        await database.close()
