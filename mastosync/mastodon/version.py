"""Which Mastodon a database belongs to, from the migrations Rails recorded in schema_migrations.

Mastodon keeps its version in its code, not its database; the newest migration applied tells
the release instead. RELEASES lists, for each minor release, its newest migration: the one in
force when main moved on to the next version (read from mastodon/mastodon's history, where
lib/mastodon/version.rb changed minor). Stable branches rarely take a migration later, so a
database is "this release or a later patch of it".
"""

from __future__ import annotations

from mastosync.mastodon import records

RELEASES: tuple[tuple[int, str], ...] = (
    (20171010025614, "2.0"), (20171212195226, "2.1"), (20180106000232, "2.2"), (20180304013859, "2.3"),
    (20180514140000, "2.4"), (20180820232245, "2.5"), (20181026034033, "2.6"), (20190117114553, "2.7"),
    (20190409054914, "2.8"), (20190529143559, "2.9"), (20191001213028, "3.0"), (20200126203551, "3.1"),
    (20200628133322, "3.2"), (20201218054746, "3.3"), (20210507001928, "3.4"), (20220316233212, "3.5"),
    (20221104133904, "4.0"), (20221206114142, "4.1"), (20230803112520, "4.2"), (20240916190140, "4.3"),
    (20250627132728, "4.4"), (20251023210145, "4.5"), (20260611150940, "4.6"), (20260812154114, "4.7"),
)


def release_of(migration: int) -> str:
    """"4.3" for a database whose newest migration is 4.3's (or between 4.3's and 4.4's)."""
    found = "older than 2.0"
    for newest, release in RELEASES:
        if migration >= newest:
            found = release
    if migration > RELEASES[-1][0]:
        found = f"{RELEASES[-1][1]} or newer (a development version)"
    return found


def at_least(release: str, wanted: tuple[int, int]) -> bool:
    """Whether `release` (as release_of names it) is `wanted` or later."""
    try:
        major, minor = (int(part) for part in release.split(" ")[0].split(".")[:2])
    except ValueError:
        return False  # "older than 2.0"
    return (major, minor) >= wanted


async def mastodon_release(db: records.Database) -> tuple[int, str] | None:
    """(newest migration, release) of the database; None when it records none."""
    if not await db.columns("schema_migrations", optional=True):
        return None
    newest = await db.with_retry(lambda conn: conn.fetchval(
        "SELECT max(version::bigint) FROM schema_migrations WHERE version ~ '^[0-9]+$'"))
    return None if newest is None else (int(newest), release_of(int(newest)))
