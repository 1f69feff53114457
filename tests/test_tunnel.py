"""Reaching PostgreSQL through an SSH tunnel: asyncssh's server always, OpenSSH's sshd too."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT, MastodonDb, new_bucket, run_cli, write_config
from tests.services import instance
from tests.services.faultproxy import FaultProxy
from tests.services.process import free_port
from tests.services.s3 import S3Server
from tests.services.ssh import FORBIDDEN_PORT, AsyncsshServer, OpenSshServer, SshServerBase, sshd_binary


def tunnel_config(tmp_path: Path, db: MastodonDb, ssh: SshServerBase, buckets: dict[str, Any] | None = None,
                  **ssh_extra: Any) -> Path:
    settings = {"enabled": True, "host": ssh.host, "port": ssh.port, "user": ssh.user,
                "key_file": str(ssh.client_key), "known_hosts": str(ssh.known_hosts()), **ssh_extra}
    # database.host/port are as seen from the SSH server.
    buckets = buckets or {"extra": {"source": {"bucket": "old"}, "destination": {"bucket": "new"}}}
    extra = {"ssh": settings, **buckets.pop("extra", {})}
    return write_config(tmp_path / "config.toml", db=db, extra=extra, **buckets)


async def seeded(db: MastodonDb) -> instance.Instance:
    inst = instance.build(db.shape, video_size=1000)
    for table, rows in inst.rows.items():
        await db.insert(table, rows)
    return inst


def dry_run_keys(result: subprocess.CompletedProcess[str]) -> set[str]:
    assert result.returncode == 0, result.stderr
    return {json.loads(line)["source_key"] for line in result.stdout.splitlines()}


async def test_dry_run_through_the_tunnel(tmp_path: Path, mastodon_db: MastodonDb, ssh_server: AsyncsshServer) -> None:
    inst = await seeded(mastodon_db)
    result = run_cli("dry-run", "--json", config=tunnel_config(tmp_path, mastodon_db, ssh_server))
    assert dry_run_keys(result) == set(inst.computed())


async def test_password_authentication(tmp_path: Path, mastodon_db: MastodonDb, ssh_server: AsyncsshServer) -> None:
    inst = await seeded(mastodon_db)
    config = tunnel_config(tmp_path, mastodon_db, ssh_server, key_file="", password=ssh_server.password)
    assert dry_run_keys(run_cli("dry-run", "--json", config=config,
                                env={"HOME": str(tmp_path)})) == set(inst.computed())


async def test_wrong_host_key_stops_with_exit_2(tmp_path: Path, mastodon_db: MastodonDb,
                                                 ssh_server: AsyncsshServer) -> None:
    config = tunnel_config(tmp_path, mastodon_db, ssh_server,
                           known_hosts=str(ssh_server.known_hosts(wrong=True)))
    result = run_cli("dry-run", config=config)
    assert result.returncode == 2
    line = result.stderr.strip()
    assert len(line.splitlines()) == 1 and "Traceback" not in line
    assert f"{ssh_server.host}:{ssh_server.port}" in line and "host key not trusted" in line
    assert "ssh-keyscan" in line  # says what to do


async def test_authentication_failure_exit_2(tmp_path: Path, mastodon_db: MastodonDb,
                                             ssh_server: AsyncsshServer) -> None:
    config = tunnel_config(tmp_path, mastodon_db, ssh_server, key_file="", password="wrong-ssh-pw-9")
    result = run_cli("dry-run", config=config, env={"HOME": str(tmp_path), "SSH_AUTH_SOCK": ""})
    assert result.returncode == 2
    assert "authentication failed" in result.stderr and "wrong-ssh-pw-9" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


async def test_checking_off_warns(tmp_path: Path, mastodon_db: MastodonDb, ssh_server: AsyncsshServer) -> None:
    inst = await seeded(mastodon_db)
    result = run_cli("dry-run", "--json", config=tunnel_config(tmp_path, mastodon_db, ssh_server, known_hosts=""))
    assert dry_run_keys(result) == set(inst.computed())
    assert "host key checking is off" in result.stderr


async def test_an_encrypted_key(tmp_path: Path, mastodon_db: MastodonDb, ssh_server: AsyncsshServer) -> None:
    """The client key with a passphrase: from MASTOSYNC_SSH_PASSPHRASE; without it (no terminal
    to ask on) or wrong, one line that says which, and the passphrase never shown."""
    import asyncssh

    inst = await seeded(mastodon_db)
    encrypted = tmp_path / "encrypted_key"
    asyncssh.read_private_key(str(ssh_server.client_key)).write_private_key(str(encrypted),
                                                                              "pkcs8-pem", passphrase="pp-secret-41")
    encrypted.chmod(0o600)
    config = tunnel_config(tmp_path, mastodon_db, ssh_server, key_file=str(encrypted))
    ok = run_cli("dry-run", "--json", config=config, env={"MASTOSYNC_SSH_PASSPHRASE": "pp-secret-41"})
    assert dry_run_keys(ok) == set(inst.computed())
    for env, says in (({}, "is encrypted and no passphrase was given (set MASTOSYNC_SSH_PASSPHRASE)"),
                      ({"MASTOSYNC_SSH_PASSPHRASE": "pp-wrong-42"}, "is encrypted and the passphrase is wrong")):
        failed = run_cli("dry-run", config=config, env=env)
        assert failed.returncode == 2 and failed.stderr.strip().splitlines() == [
            f"mastosync: error: SSH: ssh.key_file {encrypted} {says}"], failed.stderr
        assert "pp-wrong-42" not in failed.stderr


async def test_a_missing_known_hosts_file(tmp_path: Path, mastodon_db: MastodonDb,
                                          ssh_server: AsyncsshServer) -> None:
    missing = tmp_path / "nowhere" / "known_hosts"
    result = run_cli("dry-run", config=tunnel_config(tmp_path, mastodon_db, ssh_server, known_hosts=str(missing)))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and f"known_hosts file {missing} not found" in lines[0]
    assert f"ssh-keyscan -p {ssh_server.port} {ssh_server.host} >> {missing}" in lines[0]  # says what to do


async def test_connection_refused_nothing_listening_and_forward_refused(tmp_path: Path, mastodon_db: MastodonDb,
                                                      ssh_server: AsyncsshServer) -> None:
    config = tunnel_config(tmp_path, mastodon_db, ssh_server, port=free_port())
    refused = run_cli("dry-run", config=config)
    assert refused.returncode == 2 and "cannot connect" in refused.stderr
    config = tunnel_config(tmp_path, mastodon_db, ssh_server)
    closed = run_cli("dry-run", config=config, env={"MASTOSYNC_DATABASE_PORT": str(free_port())})
    assert closed.returncode == 2 and "cannot reach the database" in closed.stderr  # forwarding was allowed
    forbidden = run_cli("dry-run", config=config, env={"MASTOSYNC_DATABASE_PORT": str(FORBIDDEN_PORT)})
    assert forbidden.returncode == 2 and "refused to forward" in forbidden.stderr
    assert "AllowTcpForwarding" in forbidden.stderr
    unknown = run_cli("dry-run", config=config, env={"MASTOSYNC_SSH_HOST": "no-such-host.invalid"})
    assert unknown.returncode == 2 and "cannot resolve" in unknown.stderr


async def test_run_survives_a_dropped_tunnel(tmp_path: Path, mastodon_db: MastodonDb, moto: S3Server,
                                             ssh_server: AsyncsshServer) -> None:
    rows = [{"id": i, "file_file_name": f"{i}.mp3", "file_content_type": "audio/mpeg"} for i in range(1, 301)]
    await mastodon_db.insert("media_attachments", rows)
    src, dst = new_bucket(moto, "src"), new_bucket(moto, "dst")
    keys = [f"media_attachments/files/000/000/{i:03d}/original/{i}.mp3" for i in range(1, 301)]
    for key in keys:
        moto.put(src, key, key.encode() * 3, "audio/mpeg")
    proxy = FaultProxy(moto.port).start()
    proxy.set_faults(latency=0.01)
    try:
        config = tunnel_config(tmp_path, mastodon_db, ssh_server, buckets={
            "source": (moto, src), "destination": (moto, dst), "destination_endpoint": proxy.endpoint,
            # small database batches: the cursor is still open when the tunnel drops
            "extra": {"sync": {"concurrency": 4, "db_batch": 20}}})
        env = {k: v for k, v in os.environ.items() if not k.startswith("MASTOSYNC_")}
        proc = subprocess.Popen([sys.executable, "-m", "mastosync", "run", "--config", str(config)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT, env=env)
        deadline = time.monotonic() + 60
        while sum(proxy.counters.stored.values()) < 80:
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline
            time.sleep(0.02)
        ssh_server.drop_connections()
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        assert "re-established" in err
        assert moto.keys(dst) == set(keys)
        stored = proxy.counters.stored
        assert all(n == 1 for n in stored.values()) and len(stored) == len(keys)  # each copied exactly once
    finally:
        proxy.stop()


def openssh_available() -> bool:
    if sshd_binary():
        return True
    if os.environ.get("CI"):
        pytest.fail("sshd is not installed on CI: .ci/run should have installed openssh-server")
    return False


@pytest.mark.skipif(not sshd_binary() and not os.environ.get("CI"),
                    reason="OpenSSH sshd not installed (apt-get install openssh-server); CI installs it")
async def test_dry_run_through_openssh(tmp_path: Path, mastodon_db: MastodonDb) -> None:
    assert openssh_available()
    server = OpenSshServer().start()
    try:
        inst = await seeded(mastodon_db)
        result = run_cli("dry-run", "--json", config=tunnel_config(tmp_path, mastodon_db, server))
        assert dry_run_keys(result) == set(inst.computed()), server.process.log() if server.process else ""
    finally:
        server.stop()
