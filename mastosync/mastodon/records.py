"""Reading Mastodon's tables: which columns exist, and the rows with files, in id order.

Rows stream from a server-side cursor inside a read-only transaction. The cursor is
re-opened after a bounded number of rows or seconds, continuing after the last id
handed out: no snapshot is held for hours on a live instance (which would hold back
vacuum), and the same step resumes after the connection drops (PostgreSQL restarted,
SSH tunnel cut). Memory does not depend on the table's size.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg

from mastosync.config.settings import DatabaseSettings
from mastosync.errors import DatabaseError
from mastosync.mastodon.layout import (
    DERIVED_ESTIMATE,
    NOTHING_HIDDEN,
    PRIVATE_IF_HIDDEN,
    REMOTE_ALWAYS,
    REMOTE_IF_DOMAIN,
    REMOTE_NEVER,
    Attachment,
    Hidden,
    ObjectType,
)
from mastosync.storage.retry import RetryPolicy

log = logging.getLogger(__name__)

# Errors after which a fresh connection may succeed.
CONNECTION_LOST = (
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.CannotConnectNowError,
    ConnectionError,
    OSError,
    asyncio.TimeoutError,
)
RECONNECT_ATTEMPTS = 8


@dataclass(frozen=True)
class Filters:
    """Which records of a type to read."""

    limit: int | None = None  # only the first N records by id
    since: datetime | None = None  # only attachments updated at or after
    include_remote: bool = True  # False: local records only
    ids: tuple[int, ...] | None = None  # only these ids (retrying earlier failures)
    shard: tuple[int, int] | None = None  # (K, N): only ids with id mod N = K - 1
    # Only media of these accounts or statuses (accounts, statuses): whose visibility changed.
    owned_by: tuple[tuple[int, ...], tuple[int, ...]] | None = None


EndpointFn = Callable[[], Awaitable[tuple[str, int]]]


class Database:
    """Connections to Mastodon's PostgreSQL, directly or through a tunnel's local port."""

    def __init__(self, settings: DatabaseSettings, endpoint: EndpointFn | None = None) -> None:
        self.settings = settings
        self._endpoint = endpoint
        self._conn: asyncpg.Connection | None = None
        self._columns: dict[str, set[str]] = {}

    async def _where(self) -> tuple[str, int]:
        if self._endpoint is not None:
            return await self._endpoint()
        return self.settings.host, self.settings.port

    def _describe(self) -> str:
        s = self.settings
        return f"{s.user}@{s.host}:{s.port}/{s.name}"

    def _tls(self) -> ssl.SSLContext | str | bool:
        """asyncpg's `ssl` for database.sslmode: libpq's mode names, and for the verifying modes a
        context on sslrootcert (else the system's CAs). A socket takes no TLS (libpq's rule too)."""
        s = self.settings
        if s.is_socket and self._endpoint is None:
            return False
        if s.sslmode not in ("verify-ca", "verify-full"):
            return s.sslmode
        context = ssl.create_default_context(cafile=s.sslrootcert or None)
        # Through the SSH tunnel the name connected to is the tunnel's 127.0.0.1: the chain is
        # still checked, the name cannot be.
        context.check_hostname = s.sslmode == "verify-full" and self._endpoint is None
        return context

    async def connection(self) -> asyncpg.Connection:
        """The open connection, connecting first if needed; errors become DatabaseError."""
        if self._conn is not None and not self._conn.is_closed():
            return self._conn
        host, port = await self._where()
        s = self.settings
        try:
            self._conn = await asyncpg.connect(
                host=host, port=port, user=s.user, password=s.password or None, database=s.name,
                timeout=s.connect_timeout, ssl=self._tls(),
                server_settings={"application_name": "mastosync"},
            )
        except ssl.SSLCertVerificationError as exc:
            raise DatabaseError(f"database {self._describe()}: the server's TLS certificate does not verify "
                                f"({exc.verify_message}); check database.sslrootcert (your provider's CA "
                                "certificate) and database.sslmode") from None
        except ssl.SSLError as exc:
            raise DatabaseError(f"database {self._describe()}: TLS failed ({exc.reason or exc}); check "
                                "database.sslmode") from None
        except asyncpg.InvalidPasswordError:
            raise DatabaseError(f"database {self._describe()}: password authentication failed") from None
        except asyncpg.InvalidCatalogNameError:
            raise DatabaseError(f"database {self._describe()}: database {s.name!r} does not exist") from None
        except asyncpg.InvalidAuthorizationSpecificationError as exc:
            hint = "; the server requires TLS: set database.sslmode" if "no encryption" in str(exc) else ""
            raise DatabaseError(f"database {self._describe()}: login refused: {exc}{hint}") from None
        except (TimeoutError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            reason = str(exc) or type(exc).__name__
            raise DatabaseError(f"database {self._describe()}: cannot connect: {reason}") from None
        return self._conn

    async def reset(self) -> None:
        """Forget the connection after a failure; the next use reconnects."""
        conn, self._conn = self._conn, None
        if conn is not None and not conn.is_closed():
            conn.terminate()

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None and not conn.is_closed():
            try:
                await asyncio.wait_for(conn.close(), 5)
            except Exception:  # closing a dead connection must not mask the real outcome
                conn.terminate()

    async def columns(self, table: str, optional: bool = False) -> set[str]:
        """The table's column names (older Mastodon versions lack some).

        A missing table is an error, unless `optional`: then it has no columns.
        """
        if table not in self._columns:
            conn = await self.connection()
            rows = await conn.fetch(
                "SELECT attname FROM pg_attribute WHERE attrelid = to_regclass($1) "
                "AND attnum > 0 AND NOT attisdropped",
                table,
            )
            if not rows and optional:
                return set()
            if not rows:
                raise DatabaseError(
                    f"database {self._describe()}: table {table!r} not found; is this Mastodon's database?"
                )
            if not await conn.fetchval("SELECT has_table_privilege(to_regclass($1), 'SELECT')", table):
                # Found now, in one line, rather than as a traceback halfway through a run.
                raise DatabaseError(f"database {self._describe()}: the role {self.settings.user!r} may not read "
                                    f"the table {table}; as its owner or a superuser: GRANT SELECT ON {table} TO "
                                    f"{self.settings.user};")
            self._columns[table] = {r["attname"] for r in rows}
        return self._columns[table]

    async def with_retry(self, what: Callable[[asyncpg.Connection], Awaitable[Any]]) -> Any:
        """Run `what` on a connection, reconnecting after a lost connection (bounded)."""
        for attempt in range(RECONNECT_ATTEMPTS + 1):
            try:
                return await what(await self.connection())
            except CONNECTION_LOST as exc:
                if attempt == RECONNECT_ATTEMPTS:
                    raise DatabaseError(f"database {self._describe()}: connection lost: {exc}") from None
                await self.reset()
                await asyncio.sleep(_backoff(attempt))
            except DatabaseError:
                if attempt == RECONNECT_ATTEMPTS:
                    raise
                await self.reset()
                await asyncio.sleep(_backoff(attempt))
        raise AssertionError("unreachable")


# Between reconnects: storage's backoff (full jitter), with a database's pace.
RECONNECT_BACKOFF = RetryPolicy(retries=RECONNECT_ATTEMPTS, base=0.25, cap=10.0)


def _backoff(attempt: int) -> float:
    return RECONNECT_BACKOFF.delay(attempt + 1)


@dataclass(frozen=True)
class Query:
    """The SQL that reads one type under some filters, built once per run."""

    select: str  # SELECT … FROM … WHERE …  (without the id-window and order)
    args: tuple[Any, ...]
    objects_sum: str  # SQL expression: how many objects a row stands for
    bytes_sum: str  # SQL expression: bytes of those objects (originals known, derived styles estimated)

    def window(self, after_id: int | None) -> tuple[str, tuple[Any, ...]]:
        """Rows after `after_id`, in id order."""
        if after_id is None:
            return f"SELECT * FROM ({self.select}) AS r ORDER BY id", self.args
        n = len(self.args) + 1
        return f"SELECT * FROM ({self.select}) AS r WHERE id > ${n} ORDER BY id", (*self.args, after_id)


def build_query(object_type: ObjectType, columns: set[str], filters: Filters) -> Query | None:
    """SQL for the rows of `object_type` that have files and match `filters`.

    Only the columns the layout needs are read, and only those the table has.
    Returns None when the filters exclude every record (e.g. preview cards, which are
    always remote, with include_remote false).
    """
    if not columns and object_type.optional:
        return None  # a table this Mastodon version does not have (imports after 4.4)
    if "id" not in columns:
        raise DatabaseError(f"table {object_type.table!r} has no id column")
    wanted = ["id", *(c for c in object_type.extra_columns if c in columns)]
    if filters.since is not None and "updated_at" in columns:
        wanted.append("updated_at")  # layout.updated_since reads it too
    has_file: list[str] = []
    args: list[Any] = []
    counts: list[str] = []
    sizes: list[str] = []
    for att in object_type.attachments:
        if att.file_name not in columns:
            continue
        # The attachment's timestamp only matters to --since (layout.updated_since): a
        # timestamp is one of the dearer columns to decode, read for every row.
        wanted += [c for c in att.columns() if c in columns and (filters.since is not None or c != att.updated_at)]
        condition = f"{att.file_name} <> ''"
        if filters.since is not None:
            since = _updated_since(att.updated_at, att.schema_version, columns, f"${len(args) + 1}")
            if since is None:
                continue  # no timestamp to compare: cannot be "updated since"
            args.append(filters.since)
            condition += f" AND ({since})"
        has_file.append(f"({condition})")
        derived = _derived_count(att, columns)
        size = f"coalesce({_quote(att.file_size)}, 0)" if att.file_size in columns else "0"
        counts.append(f"CASE WHEN {condition} THEN 1 + {derived} ELSE 0 END")
        sizes.append(f"CASE WHEN {condition} THEN {size} + least({size}, {DERIVED_ESTIMATE}) * {derived} ELSE 0 END")
    if not has_file:
        return None
    where = [" OR ".join(has_file)]
    if not filters.include_remote:
        local = _local_condition(object_type, columns)
        if local is None:
            return None
        where.append(local)
    if filters.ids is not None:
        args.append(list(filters.ids))
        where.append(f"id = ANY(${len(args)}::bigint[])")
    if filters.owned_by is not None:
        accounts, statuses = filters.owned_by
        owners = []
        for column, ids in (("account_id", accounts), ("status_id", statuses)):
            if ids and column in columns:
                args.append(list(ids))
                owners.append(f"{column} = ANY(${len(args)}::bigint[])")
        if not owners:
            return None
        where.append(" OR ".join(owners))
    if filters.shard is not None:
        # id mod N, not ranges of ids: snowflake ids are time-ordered and sparse, and their
        # low 16 bits are a hash and a sequence, so the shares are balanced; each shard still
        # pages in id order.
        k, n = filters.shard
        where.append(f"mod(id, {int(n)}) = {int(k) - 1}")
    table = _quote(object_type.table)
    select = f"SELECT {', '.join(_quote(c) for c in wanted)} FROM {table} WHERE " + " AND ".join(
        f"({w})" for w in where
    )
    if filters.limit is not None:
        select += f" ORDER BY id LIMIT {int(filters.limit)}"
    return Query(select, tuple(args), " + ".join(counts), " + ".join(sizes))


def _derived_count(att: Attachment, columns: set[str]) -> str:
    """SQL: how many derived styles a row's attachment has (layout's rule, by the same column)."""
    if att.styles_by not in columns or not att.derived:
        return str(len(att.derived_default))
    cases = " ".join(f"WHEN '{value.replace(chr(39), chr(39) * 2)}' THEN {len(styles)}"
                     for value, styles in att.derived.items())
    return f"(CASE {_quote(att.styles_by)} {cases} ELSE {len(att.derived_default)} END)"


def _updated_since(updated_at: str, schema_version: str, columns: set[str], param: str) -> str | None:
    """SQL for layout.updated_since: the attachment's timestamp, or the row's for files that
    `tootctl upgrade storage-schema` moved under cache/ (it saves the row, not the timestamp)."""
    found = []
    if updated_at in columns:
        found.append(f"{_quote(updated_at)} >= {param}")
    if "updated_at" in columns and schema_version in columns:
        found.append(f"(updated_at >= {param} AND coalesce({_quote(schema_version)}, 0) >= 1)")
    return " OR ".join(found) or None


def _local_condition(object_type: ObjectType, columns: set[str]) -> str | None:
    rule = object_type.remote_rule
    if rule == REMOTE_NEVER:
        return "TRUE"
    if rule == REMOTE_ALWAYS:
        return None
    if rule == REMOTE_IF_DOMAIN:
        return "domain IS NULL" if "domain" in columns else "TRUE"
    # Ruby's blank?: NULL, empty or only whitespace means local.
    return "coalesce(remote_url, '') !~ '[^[:space:]]'" if "remote_url" in columns else "TRUE"


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


async def query_for(db: Database, object_type: ObjectType, filters: Filters) -> Query | None:
    """Connects (errors surface at once, before any work) and builds the type's query."""
    return build_query(object_type, await db.columns(object_type.table, object_type.optional), filters)


async def hidden(db: Database, types: tuple[ObjectType, ...]) -> Hidden:
    """Which accounts are suspended and which removed posts are kept, when a type needs to know.

    Read once per run, into memory: both sets are small next to the tables (thousands of
    ids), and a join in the paged query would run again for every window of rows.
    """
    if not any(t.privacy == PRIVATE_IF_HIDDEN for t in types):
        return NOTHING_HIDDEN

    async def ids(table: str, column: str) -> frozenset[int]:
        if column not in await db.columns(table, optional=True):
            return frozenset()  # an older schema, or a test database without the table
        sql = f"SELECT id FROM {_quote(table)} WHERE {_quote(column)} IS NOT NULL"
        rows = await db.with_retry(lambda conn: conn.fetch(sql))
        return frozenset(r["id"] for r in rows)

    return Hidden(await ids("accounts", "suspended_at"), await ids("statuses", "deleted_at"))


async def hidden_since(db: Database, since: datetime) -> tuple[frozenset[int], frozenset[int]]:
    """Accounts and statuses whose visibility may have changed since `since`, from their
    timestamps: for a migration whose earlier runs did not record what they had hidden.
    Suspending or unsuspending saves the account (updated_at); removing a post sets deleted_at."""

    async def ids(table: str, condition: str, needed: set[str]) -> frozenset[int]:
        if not needed <= await db.columns(table, optional=True):
            return frozenset()
        sql = f"SELECT id FROM {_quote(table)} WHERE {condition}"
        rows = await db.with_retry(lambda conn: conn.fetch(sql, since))
        return frozenset(r["id"] for r in rows)

    return (await ids("accounts", "updated_at >= $1 OR suspended_at >= $1", {"updated_at", "suspended_at"}),
            await ids("statuses", "deleted_at >= $1", {"deleted_at"}))


async def clock(db: Database) -> datetime:
    """The database's time, naive UTC as Mastodon stores it: one clock for every run's start,
    whatever the clocks of the machines that run mastosync."""
    moment: datetime = await db.with_retry(lambda conn: conn.fetchval("SELECT now()"))
    return moment.astimezone(UTC).replace(tzinfo=None) if moment.tzinfo else moment


async def totals(db: Database, query: Query, after_id: int | None = None) -> tuple[int, int, int]:
    """(records, objects, bytes) still to go, for progress and ETA; the bytes of derived
    styles are estimated (layout.DERIVED_ESTIMATE), the database knows only the originals'."""
    sql, args = query.window(after_id)
    sql = (f"SELECT count(*), coalesce(sum({query.objects_sum}), 0)::bigint, "
           f"coalesce(sum({query.bytes_sum}), 0)::bigint FROM ({sql}) AS t")
    row = await db.with_retry(lambda conn: conn.fetchrow(sql, *args))
    return int(row[0]), int(row[1]), int(row[2])


async def stream(
    db: Database,
    query: Query,
    after_id: int | None = None,
    window_rows: int = 100_000,
    window_seconds: float = 60.0,
    prefetch: int = 2000,
) -> AsyncGenerator[asyncpg.Record, None]:
    """Rows of `query` in id order, each exactly once, across reconnects."""
    last = after_id
    failures = 0
    while True:
        sql, args = query.window(last)
        handed = 0
        started = time.monotonic()
        try:
            conn = await db.connection()
            async with conn.transaction(readonly=True):
                cursor = await conn.cursor(sql, *args)
                while True:
                    # Explicit batches: cheaper per row than iterating the cursor.
                    batch = await cursor.fetch(prefetch)
                    failures = 0
                    for row in batch:
                        last = row["id"]
                        yield row
                    if len(batch) < prefetch:
                        return  # the cursor is exhausted: every row was handed out
                    handed += len(batch)
                    if handed >= window_rows or time.monotonic() - started > window_seconds:
                        break
        except CONNECTION_LOST as exc:
            failures += 1
            if failures > RECONNECT_ATTEMPTS:
                raise DatabaseError(f"database connection lost and not regained: {exc}") from None
            log.warning("database connection lost (%s); reconnecting after id %s", exc, last)
            await db.reset()
            await asyncio.sleep(_backoff(failures))
        except DatabaseError:
            failures += 1
            if failures > RECONNECT_ATTEMPTS:
                raise
            await db.reset()
            await asyncio.sleep(_backoff(failures))
