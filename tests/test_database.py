"""Real installations' databases (issue 29): TLS as managed PostgreSQL requires it, the Unix
socket of the standard install (here and through the SSH tunnel), and a role that may not
read a table. Each through the CLI against a real PostgreSQL."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from tests.conftest import DB_PASSWORD, DB_USER, MastodonDb, make_db, run_cli, write_config
from tests.services.postgres import PostgresServer
from tests.services.ssh import AsyncsshServer
from tests.services.tls import ca_and_server
from tests.test_tunnel import tunnel_config

BUCKETS = {"source": {"bucket": "old"}, "destination": {"bucket": "new"}}


@pytest.fixture(scope="module")
def tls_postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[PostgresServer, Path, Path]]:
    """A PostgreSQL that takes TCP logins over TLS only, with a certificate from a CA made here
    (valid for 127.0.0.1, not for "localhost"); and a CA that did not sign it."""
    folder = tmp_path_factory.mktemp("pg-tls")
    ca, cert, key = ca_and_server(folder)
    other = folder / "other"
    other.mkdir()
    other_ca, _, _ = ca_and_server(other)
    server = PostgresServer(tls=(cert, key)).start()
    server.psql(f"CREATE ROLE {DB_USER} LOGIN PASSWORD '{DB_PASSWORD}'")
    try:
        yield server, ca, other_ca
    finally:
        server.stop()


async def seeded_db(server: PostgresServer) -> MastodonDb:
    import ssl

    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    admin = await asyncpg.connect(server.dsn(), ssl=context if server.tls else None)
    name = f"mastodon_{uuid.uuid4().hex[:10]}"
    try:
        await admin.execute(f"CREATE DATABASE {name} OWNER {DB_USER}")
    finally:
        await admin.close()
    from tests.services.schema import insert_rows, schema_sql

    conn = await asyncpg.connect(server.dsn(name, DB_USER, DB_PASSWORD), ssl=context if server.tls else None)
    try:
        await conn.execute(schema_sql("4.6"))
        await insert_rows(conn, "custom_emojis", [{"id": 1, "shortcode": "a", "image_file_name": "a.png",
                                                   "image_content_type": "image/png", "image_file_size": 10}])
    finally:
        await conn.close()
    return MastodonDb(server, name, "4.6")


def dry_run(config: Path) -> tuple[int, str, str]:
    result = run_cli("dry-run", "--type", "custom_emojis", config=config)
    return result.returncode, result.stdout, result.stderr


@pytest.mark.parametrize("mode,ca,host,works", [
    ("verify-full", "right", "127.0.0.1", True),
    ("verify-ca", "right", "127.0.0.1", True),
    ("require", None, "127.0.0.1", True),
    ("prefer", None, "127.0.0.1", True),
    ("verify-full", "other", "127.0.0.1", False),  # signed by a CA we were not given
    ("verify-full", "right", "localhost", False),  # the right CA, the wrong name
    ("disable", None, "127.0.0.1", False),  # the server takes no login without TLS
])
async def test_tls_to_postgresql(tmp_path: Path, tls_postgres: tuple[PostgresServer, Path, Path], mode: str,
                                 ca: str | None, host: str, works: bool) -> None:
    server, right_ca, other_ca = tls_postgres
    db = await seeded_db(server)
    database = {"sslmode": mode, "host": host}
    if ca is not None:
        database["sslrootcert"] = str(right_ca if ca == "right" else other_ca)
    config = write_config(tmp_path / "config.toml", db=db, extra={**BUCKETS, "database": database})
    code, out, err = dry_run(config)
    if works:
        assert code == 0 and "custom_emojis/images/000/000/001/original/a.png" in out, err
        return
    assert code == 2, out + err
    (line,) = err.strip().splitlines()  # one line, no traceback
    if ca is not None:
        assert "TLS certificate does not verify" in line and "database.sslrootcert" in line, line
    else:
        assert "the server requires TLS: set database.sslmode" in line, line


async def test_a_missing_sslrootcert_is_a_configuration_error(tmp_path: Path, mastodon_db: MastodonDb) -> None:
    config = write_config(tmp_path / "config.toml", db=mastodon_db,
                          extra={**BUCKETS, "database": {"sslmode": "verify-full",
                                                         "sslrootcert": str(tmp_path / "nope.pem")}})
    code, _, err = dry_run(config)
    assert code == 2 and "database.sslrootcert: no such file" in err


async def test_unix_socket_here_and_through_ssh(tmp_path: Path, postgres: PostgresServer,
                                                ssh_server: AsyncsshServer) -> None:
    """DB_HOST=/var/run/postgresql, the standard install: the socket's folder as database.host,
    locally, and on the SSH host (forwarded to the socket's path)."""
    db = await make_db(postgres, "4.6")
    await db.insert("custom_emojis", [{"id": 1, "shortcode": "a", "image_file_name": "a.png",
                                       "image_content_type": "image/png", "image_file_size": 10}])
    socket = {"host": str(postgres.root), "port": postgres.port, "password": ""}  # the socket trusts local users
    local = write_config(tmp_path / "local.toml", db=db, extra={**BUCKETS, "database": socket})
    code, out, err = dry_run(local)
    assert code == 0 and "original/a.png" in out, err
    via_ssh = tunnel_config(tmp_path, db, ssh_server, buckets={"extra": {**BUCKETS, "database": socket}})
    code, out, err = dry_run(via_ssh)
    assert code == 0 and "original/a.png" in out, err


async def test_a_role_that_may_not_read_a_table(tmp_path: Path, postgres: PostgresServer,
                                                mastodon_db: MastodonDb) -> None:
    role = f"reader_{uuid.uuid4().hex[:6]}"
    postgres.psql(f"CREATE ROLE {role} LOGIN PASSWORD 'reader-pw'")
    postgres.psql(f"GRANT SELECT ON ALL TABLES IN SCHEMA public TO {role}; "
                  f"REVOKE SELECT ON site_uploads FROM {role}", database=mastodon_db.name)
    config = write_config(tmp_path / "config.toml", db=mastodon_db,
                          extra={**BUCKETS, "database": {"user": role, "password": "reader-pw"}})
    result = run_cli("dry-run", config=config)
    assert result.returncode == 2, result.stdout + result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert "may not read the table site_uploads" in line and f"GRANT SELECT ON site_uploads TO {role};" in line
