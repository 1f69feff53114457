"""Session-wide real servers and per-test databases, buckets and configurations."""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from tests.services.postgres import PostgresServer
from tests.services.s3 import E2E_SERVERS, SERVERS, S3Server
from tests.services.schema import schema_sql
from tests.services.ssh import AsyncsshServer

ROOT = Path(__file__).resolve().parents[1]
DB_USER = "mastodon"
DB_PASSWORD = "db-test-password-7f3a"


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    server = PostgresServer().start()
    server.psql(f"CREATE ROLE {DB_USER} LOGIN PASSWORD '{DB_PASSWORD}'")
    try:
        yield server
    finally:
        server.stop()


@dataclass
class MastodonDb:
    """A fresh database with Mastodon's media tables, owned by the `mastodon` role."""

    server: PostgresServer
    name: str
    shape: str
    user: str = DB_USER
    password: str = DB_PASSWORD

    @property
    def dsn(self) -> str:
        return self.server.dsn(self.name, self.user, self.password)

    async def connect(self) -> asyncpg.Connection:
        return await asyncpg.connect(self.dsn)

    async def insert(self, table: str, rows: list[dict[str, Any]]) -> None:
        from tests.services.schema import insert_rows

        conn = await self.connect()
        try:
            await insert_rows(conn, table, rows)
        finally:
            await conn.close()


async def make_db(server: PostgresServer, shape: str) -> MastodonDb:
    name = f"mastodon_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(server.dsn())
    try:
        await admin.execute(f"CREATE DATABASE {name} OWNER {DB_USER}")
    finally:
        await admin.close()
    db = MastodonDb(server, name, shape)
    conn = await db.connect()
    try:
        await conn.execute(schema_sql(shape))
    finally:
        await conn.close()
    return db


@pytest.fixture
async def mastodon_db(postgres: PostgresServer, request: pytest.FixtureRequest) -> MastodonDb:
    """A Mastodon 4.6 database; parametrize indirectly with "4.2" for the older shape."""
    return await make_db(postgres, getattr(request, "param", "4.6"))


_servers: dict[str, S3Server] = {}


@pytest.fixture(scope="session")
def s3_servers() -> Iterator[dict[str, S3Server]]:
    try:
        yield _servers
    finally:
        for server in _servers.values():
            server.stop()


def start_server(kind: str, pool: dict[str, S3Server]) -> S3Server:
    """The session's server of this kind, started on first use. One that is not installed
    (s3rver without npm) skips its tests with the reason, except on CI, where it fails them."""
    if kind not in pool:
        try:
            pool[kind] = SERVERS[kind]().start()
        except FileNotFoundError as exc:
            if os.environ.get("CI"):
                raise
            pytest.skip(f"{kind} is not installed: {exc}")
    return pool[kind]


@pytest.fixture(params=list(E2E_SERVERS))
def s3(request: pytest.FixtureRequest, s3_servers: dict[str, S3Server]) -> S3Server:
    """moto and rclone serve s3 in turn: the end-to-end suites run against both. The storage
    suites override this fixture to run against every server (s3rver too)."""
    return start_server(request.param, s3_servers)


@pytest.fixture
def moto(s3_servers: dict[str, S3Server]) -> S3Server:
    return start_server("moto", s3_servers)


@pytest.fixture
def rclone(s3_servers: dict[str, S3Server]) -> S3Server:
    return start_server("rclone", s3_servers)


def new_bucket(server: S3Server, label: str) -> str:
    return server.create_bucket(f"{label}-{uuid.uuid4().hex[:12]}")


@pytest.fixture(scope="session")
def ssh_server() -> Iterator[AsyncsshServer]:
    server = AsyncsshServer().start()
    try:
        yield server
    finally:
        server.stop()


# -- running the CLI as a user does -----------------------------------------------------


def write_config(path: Path, *, db: MastodonDb | None = None, source: tuple[S3Server, str] | None = None,
                 destination: tuple[S3Server, str] | None = None,
                 source_endpoint: str | None = None, destination_endpoint: str | None = None,
                 extra: dict[str, dict[str, Any]] | None = None) -> Path:
    """A mastosync config file for the given test services; `extra` adds or overrides keys."""
    sections: dict[str, dict[str, Any]] = {}
    if db is not None:
        sections["database"] = {"host": db.server.host, "port": db.server.port, "name": db.name,
                                "user": db.user, "password": db.password}
    for name, side, endpoint in (("source", source, source_endpoint),
                                 ("destination", destination, destination_endpoint)):
        if side is not None:
            server, bucket = side
            sections[name] = {"endpoint": endpoint or server.endpoint, "region": "us-east-1",
                              "bucket": bucket, "access_key_id": server.access_key,
                              "secret_access_key": server.secret_key}
    sections.setdefault("sync", {})["state_dir"] = str(path.parent / "state")
    for name, values in (extra or {}).items():
        sections.setdefault(name, {}).update(values)
    path.write_text(to_toml(sections))
    return path


def to_toml(sections: dict[str, dict[str, Any]]) -> str:
    import json

    lines = []
    for name, values in sections.items():
        lines.append(f"[{name}]")
        for key, value in values.items():
            if isinstance(value, bool):
                text = "true" if value else "false"
            elif isinstance(value, int | float):
                text = str(value)
            else:
                text = json.dumps(str(value))
            lines.append(f"{key} = {text}")
        lines.append("")
    return "\n".join(lines)


# MASTOSYNC_TEST_SUBPROCESS=1: every CLI call in a process of its own, as before (slower).
ALWAYS_ISOLATED = os.environ.get("MASTOSYNC_TEST_SUBPROCESS") == "1"
_IN_PROCESS = threading.Lock()


def run_cli(*args: str, config: Path | None = None, env: dict[str, str] | None = None,
            timeout: float = 300, cwd: Path | None = None, isolated: bool = False) -> subprocess.CompletedProcess[str]:
    """Run `mastosync ARGS` as a user would (stdout not a terminal), and what it said and exited with.

    In this process (cli.main on a thread of its own, stdout and stderr captured, the
    environment and folder set for the call): half a second of imports saved per call, and
    calls are most of the suite. `isolated`: in a subprocess, `python -m mastosync`, for what
    only a process of its own shows (signals, its memory, its start-up)."""
    argv = ["mastosync", *args]
    if config is not None and args:
        argv[2:2] = ["--config", str(config)]  # after the command name
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("MASTOSYNC_")}
    full_env.update(env or {})
    if isolated or ALWAYS_ISOLATED:
        return subprocess.run([sys.executable, "-m", *argv], capture_output=True, text=True, timeout=timeout,
                              env=full_env, cwd=str(cwd or ROOT))
    return _in_process(argv, full_env, timeout, cwd or ROOT)


def _in_process(argv: list[str], env: dict[str, str], timeout: float, cwd: Path) -> subprocess.CompletedProcess[str]:
    from mastosync import cli

    out, err = io.StringIO(), io.StringIO()
    exit_code: list[int] = []

    def call() -> None:
        try:
            cli.main(argv[1:])
        except SystemExit as exc:
            exit_code.append(exc.code if isinstance(exc.code, int) else 1 if exc.code else 0)

    with _IN_PROCESS, contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), contextlib.chdir(cwd):
        saved = dict(os.environ)
        os.environ.clear()
        os.environ.update(env)
        try:
            thread = threading.Thread(target=call, name="mastosync-cli", daemon=True)
            thread.start()
            thread.join(timeout)
        finally:
            os.environ.clear()
            os.environ.update(saved)
    if thread.is_alive():
        raise subprocess.TimeoutExpired(argv, timeout, out.getvalue(), err.getvalue())
    return subprocess.CompletedProcess(argv, exit_code[0] if exit_code else 0, out.getvalue(), err.getvalue())


@pytest.fixture
async def db_conn(mastodon_db: MastodonDb) -> AsyncIterator[asyncpg.Connection]:
    conn = await mastodon_db.connect()
    try:
        yield conn
    finally:
        await conn.close()
