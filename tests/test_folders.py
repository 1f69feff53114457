"""Folders as source or destination, end to end through the CLI: Mastodon's local storage
(public/system) to a bucket and back, folder to folder, and a folder on the SSH host (SFTP).

Real folders, real S3 servers (moto and rclone serve s3), the asyncssh SFTP server and
OpenSSH's sftp-server; the files are written by the instance fixture as Mastodon's local
storage keeps them.
"""

from __future__ import annotations

import os
import shutil
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mastosync.storage.base import ObjectAttrs
from tests.conftest import ROOT, MastodonDb, new_bucket, run_cli, write_config
from tests.reliability.helpers import summary_row
from tests.services import instance
from tests.services.faultproxy import FaultProxy
from tests.services.s3 import S3Server
from tests.services.ssh import AsyncsshServer, OpenSshServer, sshd_binary

MASTODON_CC = "public, max-age=315576000, immutable"


def files_under(root: Path) -> dict[str, Path]:
    return {str(p.relative_to(root)): p for p in root.rglob("*") if p.is_file()}


def folder(root: Path, kind: str = "filesystem", **more: Any) -> dict[str, Any]:
    return {"kind": kind, "root": str(root), **more}


def config_for(tmp_path: Path, db: MastodonDb, source: dict[str, Any] | tuple[S3Server, str],
               destination: dict[str, Any] | tuple[S3Server, str], extra: dict[str, dict[str, Any]] | None = None,
               destination_endpoint: str | None = None) -> Path:
    """A configuration with folder sides (dicts) and bucket sides ((server, bucket))."""
    sections: dict[str, dict[str, Any]] = {"sync": {"progress_interval": 0.5}}
    for name, side in (("source", source), ("destination", destination)):
        if isinstance(side, dict):
            sections[name] = side
    if isinstance(destination, dict) and destination.get("kind") == "filesystem" and os.geteuid() == 0:
        # As root, a folder destination needs an owner said out loud (see test_installations).
        sections["destination"] = {"owner": "root", **destination}
    for name, values in (extra or {}).items():
        sections.setdefault(name, {}).update(values)
    return write_config(tmp_path / "config.toml", db=db,
                        source=source if isinstance(source, tuple) else None,
                        destination=destination if isinstance(destination, tuple) else None,
                        destination_endpoint=destination_endpoint, extra=sections)


def sniffed(obj: instance.Obj) -> str:
    """The Content-Type Mastodon's own upload of this file would have sent: libmagic's."""
    return instance.SNIFFED.get(obj.content_type, obj.content_type)


def assert_folder_holds(root: Path, inst: instance.Instance) -> None:
    """Byte for byte, with Mastodon's modes, nothing else (no orphan, no partial file)."""
    expected = inst.expected(present=True)
    assert set(files_under(root)) == set(expected)
    for key, obj in expected.items():
        path = root / key
        assert path.read_bytes() == obj.data, key
        hidden = obj.private and obj.type == "media_attachments"
        assert stat.S_IMODE(path.stat().st_mode) == (0o600 if hidden else 0o644), key


@pytest.fixture
def proxy(s3: S3Server) -> Iterator[FaultProxy]:
    p = FaultProxy(s3.port).start()
    yield p
    p.stop()


async def test_folder_to_bucket(tmp_path: Path, mastodon_db: MastodonDb, s3: S3Server, proxy: FaultProxy) -> None:
    """Mastodon's public/system into a bucket: headers as Mastodon's upload sends them."""
    inst = instance.build(mastodon_db.shape, video_size=20 * 2**20)
    await instance.seed(inst, mastodon_db, None, "")
    system = tmp_path / "public" / "system"
    instance.seed_folder(inst, system)
    dst = new_bucket(s3, "dst")
    config = config_for(tmp_path, mastodon_db, folder(Path("public/system")), (s3, dst),  # relative root
                        destination_endpoint=proxy.endpoint,
                        extra={"sync": {"multipart_threshold": "5MiB", "part_size": "5MiB"}})
    result = run_cli("run", "--all", config=config, cwd=tmp_path.parent)  # root taken from the config's folder
    assert result.returncode == 0, result.stdout + result.stderr
    expected = inst.expected(present=True)
    assert s3.keys(dst) == set(expected)  # orphans left behind, cache/ kept
    assert any(k.startswith("cache/") for k in expected)
    acl_sent = {path.removeprefix(f"/{dst}/"): acl for path, acl in proxy.counters.acl.items()}
    for key, obj in expected.items():
        data, resp = s3.get(dst, key)
        assert data == obj.data, key
        assert resp["ContentType"] == sniffed(obj), key  # from the bytes: a GIF's small .png is image/gif
        assert resp["CacheControl"] == MASTODON_CC, key
        assert acl_sent[key] == ("private" if obj.private else "public-read"), key
    assert proxy.count("UploadPart") >= 4  # the 20 MiB video went in 5 MiB parts
    assert s3.open_uploads(dst) == []

    proxy.reset_counters()
    again = run_cli("run", "--all", config=config)
    assert again.returncode == 0 and proxy.count("PutObject", "UploadPart") == 0, again.stdout + again.stderr
    verified = run_cli("verify", "--all", config=config)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert f"S3_BUCKET={dst}" in verified.stdout and "location /system/ {" in verified.stdout

    lost = next(iter(expected))
    (system / lost).unlink()  # lost at the source after the copy: verify reports it missing, exit 0
    found = run_cli("verify", "--all", config=config)
    assert found.returncode == 0, found.stdout + found.stderr
    assert any(line.startswith("missing\t") and line.split("\t")[3] == lost for line in found.stdout.splitlines())


async def test_bucket_to_folder(tmp_path: Path, mastodon_db: MastodonDb, s3: S3Server) -> None:
    """From a bucket to local storage: files byte for byte, modes as Mastodon's, nothing else."""
    inst = instance.build(mastodon_db.shape, video_size=12 * 2**20)
    src = new_bucket(s3, "src")
    await instance.seed(inst, mastodon_db, s3, src)
    system = tmp_path / "system"
    system.mkdir()
    config = config_for(tmp_path, mastodon_db, (s3, src), folder(system),
                        extra={"sync": {"multipart_threshold": "5MiB", "part_size": "5MiB"}})
    result = run_cli("run", "--all", config=config)
    assert result.returncode == 0, result.stdout + result.stderr
    assert_folder_holds(system, inst)
    mtimes = {k: p.stat().st_mtime_ns for k, p in files_under(system).items()}
    again = run_cli("run", "--all", config=config)
    assert again.returncode == 0 and summary_row(again.stdout)["skipped"] == str(len(inst.expected()))
    assert {k: p.stat().st_mtime_ns for k, p in files_under(system).items()} == mtimes  # nothing rewritten
    assert run_cli("verify", "--all", config=config).returncode == 0
    cutover = run_cli("cutover", config=config)
    assert "S3_ENABLED=false" in cutover.stdout and str(system) in cutover.stdout

    victim = next(k for k, o in inst.expected().items() if o.size > 100)
    (system / victim).write_bytes(b"short")
    gaps = run_cli("verify", "--all", config=config)
    assert gaps.returncode == 1 and victim in gaps.stdout


def start(config: Path, *args: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MASTOSYNC_")}
    return subprocess.Popen([sys.executable, "-m", "mastosync", *args, "--config", str(config)], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


async def test_folder_to_folder_resumes_after_sigint(tmp_path: Path, mastodon_db: MastodonDb) -> None:
    inst = instance.build(mastodon_db.shape, video_size=30 * 2**20)
    instance.add_bulk(inst, media=200, accounts=60)
    await instance.seed(inst, mastodon_db, None, "")
    old, new = tmp_path / "old", tmp_path / "new"
    instance.seed_folder(inst, old)
    new.mkdir()
    config = config_for(tmp_path, mastodon_db, folder(old), folder(new),
                        extra={"sync": {"concurrency": 2, "multipart_threshold": "5MiB", "part_size": "5MiB",
                                        "db_batch": 50}})
    proc = start(config, "run", "--all")
    deadline = time.monotonic() + 60
    while len(files_under(new)) < 40 and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, out + err
    done = len(files_under(new))
    assert 0 < done < len(inst.expected(present=True))
    assert not [k for k in files_under(new) if k.rpartition("/")[2].startswith(".")]  # no partial file left

    resumed = run_cli("run", "--all", config=config)
    assert resumed.returncode == 0 and "resuming" in resumed.stdout, resumed.stdout + resumed.stderr
    assert_folder_holds(new, inst)
    assert run_cli("verify", "--all", config=config).returncode == 0


def kill_mid_write(config: Path, new: Path, name: str) -> None:
    """SIGKILL a run while it writes the file `name`: its partial file is left for the next run."""
    proc = start(config, "run", "--all")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not any(
            p.name.startswith(f".{name}.") and p.stat().st_size > 0 for p in files_under(new).values()):
        time.sleep(0.005)
    proc.kill()
    proc.communicate()


async def test_a_partial_file_left_by_a_crash_is_removed(tmp_path: Path, mastodon_db: MastodonDb) -> None:
    inst = instance.build(mastodon_db.shape, video_size=60 * 2**20)
    await instance.seed(inst, mastodon_db, None, "")
    old, new = tmp_path / "old", tmp_path / "new"
    instance.seed_folder(inst, old)
    new.mkdir()
    config = config_for(tmp_path, mastodon_db, folder(old), folder(new),
                        extra={"sync": {"concurrency": 1, "multipart_threshold": "5MiB", "part_size": "5MiB"}})
    video = max(inst.expected().values(), key=lambda o: o.size).key
    folder_of_video, _, name = video.rpartition("/")
    kill_mid_write(config, new, name)
    partial = [k for k in files_under(new) if k.startswith(f"{folder_of_video}/.{name}.")]
    assert len(partial) == 1 and partial[0].endswith(".mastosync-partial")
    assert video not in files_under(new)  # never a half file under the real name
    result = run_cli("run", "--all", config=config)
    assert result.returncode == 0 and "aborted 1 of 1" in result.stdout + result.stderr, result.stdout + result.stderr
    assert_folder_holds(new, inst)


def sftp_config(ssh: AsyncsshServer | OpenSshServer) -> dict[str, Any]:
    return {"host": ssh.host, "port": ssh.port, "user": ssh.user, "key_file": str(ssh.client_key),
            "known_hosts": str(ssh.known_hosts())}


@pytest.fixture(params=["asyncssh", "openssh"])
def sftp_server(request: pytest.FixtureRequest, ssh_server: AsyncsshServer) -> Any:
    if request.param == "asyncssh":
        yield ssh_server
        return
    if not sshd_binary():
        reason = "OpenSSH sshd not installed (apt-get install openssh-server; make test does it as root)"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    server = OpenSshServer().start()
    try:
        yield server
    finally:
        server.stop()


async def test_sftp_to_bucket_and_back(tmp_path: Path, mastodon_db: MastodonDb, moto: S3Server,
                                       sftp_server: Any) -> None:
    """The Mastodon host's public/system over the SSH login: into a bucket, and (asyncssh's server)
    from it into another folder there."""
    inst = instance.build(mastodon_db.shape, video_size=6 * 2**20)
    await instance.seed(inst, mastodon_db, None, "")
    system = tmp_path / "remote" / "system"
    instance.seed_folder(inst, system)
    dst = new_bucket(moto, "dst")
    ssh = sftp_config(sftp_server)
    config = config_for(tmp_path, mastodon_db, folder(system, "sftp"), (moto, dst),
                        extra={"ssh": ssh, "sync": {"multipart_threshold": "5MiB", "part_size": "5MiB"}})
    result = run_cli("run", "--all", config=config)
    assert result.returncode == 0, result.stdout + result.stderr
    expected = inst.expected(present=True)
    assert moto.keys(dst) == set(expected)
    for key, obj in expected.items():
        data, resp = moto.get(dst, key)
        assert data == obj.data and resp["ContentType"] == sniffed(obj), key
        assert moto.public_read(dst, key) == (not obj.private), key
    assert run_cli("verify", "--all", config=config).returncode == 0
    if isinstance(sftp_server, OpenSshServer):
        return  # reading is what an OpenSSH host is used for; writing is tested once, below

    back = tmp_path / "remote" / "restored"
    back.mkdir()
    (tmp_path / "state").rename(tmp_path / "state-1")
    config = config_for(tmp_path, mastodon_db, (moto, dst), folder(back, "sftp"), extra={"ssh": ssh})
    result = run_cli("run", "--all", config=config)
    assert result.returncode == 0, result.stdout + result.stderr
    assert_folder_holds(back, inst)
    assert run_cli("verify", "--all", config=config).returncode == 0


@pytest.mark.parametrize("case", ["missing", "a file", "sftp missing"])
async def test_bad_roots_are_one_line(tmp_path: Path, mastodon_db: MastodonDb, moto: S3Server,
                                      ssh_server: AsyncsshServer, case: str) -> None:
    dst = new_bucket(moto, "dst")
    (tmp_path / "plain").write_text("x")
    root = {"missing": folder(tmp_path / "nowhere"), "a file": folder(tmp_path / "plain"),
            "sftp missing": folder(tmp_path / "nowhere", "sftp")}[case]
    config = config_for(tmp_path, mastodon_db, root, (moto, dst), extra={"ssh": sftp_config(ssh_server)})
    result = run_cli("run", "--all", config=config)
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "source.root" in lines[0], result.stderr
    assert ("not a folder" if case == "a file" else "does not exist") in lines[0]


def test_folder_configuration_errors(tmp_path: Path) -> None:
    from mastosync import config
    from mastosync.errors import ConfigError
    from tests.conftest import to_toml

    cases = [
        ({"kind": "filesystem"}, "source.root: required"),
        ({"kind": "filesystem", "root": "/x", "bucket": "b"}, "source.bucket: applies to kind = \"s3\""),
        ({"kind": "sftp", "root": "/x"}, "source.kind: \"sftp\" reads the folder over the [ssh] connection"),
        ({"kind": "ftp", "root": "/x"}, "source.kind: expected one of"),
        ({"bucket": "b", "root": "/x"}, "source.root: applies to kind"),
        ({"kind": "filesystem", "root": str(tmp_path)}, "same folder as the source"),
    ]
    path = tmp_path / "c.toml"
    for source, message in cases:
        path.write_text(to_toml({"source": source, "destination": {"kind": "filesystem", "root": f"{tmp_path}/"}}))
        with pytest.raises(ConfigError) as error:
            config.load(path, environ={})
        assert message in str(error.value), source
    path.write_text(to_toml({"source": {"kind": "filesystem"}, "destination": {"kind": "filesystem", "root": "/y"}}))
    result = run_cli("dry-run", "--all", config=path)  # as the admin sees it: one line, exit 2
    assert result.returncode == 2 and result.stderr.strip().splitlines() == [
        "mastosync: error: configuration: source.root: required for kind = 'filesystem': the folder holding "
        "Mastodon's files (public/system, or PAPERCLIP_ROOT_PATH)"]


async def test_a_destination_that_cannot_be_written(tmp_path: Path, mastodon_db: MastodonDb,
                                                    moto: S3Server) -> None:
    """A folder mounted read-only (in a mount namespace of its own): one line, exit 2, nothing read."""
    inst = instance.build(mastodon_db.shape, video_size=100_000)
    src = new_bucket(moto, "src")
    await instance.seed(inst, mastodon_db, moto, src)
    locked = tmp_path / "locked"
    locked.mkdir()
    config = config_for(tmp_path, mastodon_db, (moto, src), folder(locked))
    env = {k: v for k, v in os.environ.items() if not k.startswith("MASTOSYNC_")}
    script = (f"mount --bind {locked} {locked} && mount -o remount,bind,ro {locked} && "
              f"exec {sys.executable} -m mastosync run --all --config {config}")
    result = subprocess.run(["unshare", "--map-root-user", "--mount", "sh", "-c", script], capture_output=True,
                            text=True, env=env, cwd=ROOT, timeout=120)
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "destination.root" in lines[0] and "cannot be written" in lines[0], result.stderr
    assert "Read-only file system" in lines[0]


async def test_a_full_disk_stops_the_run_and_keeps_what_is_complete(tmp_path: Path, mastodon_db: MastodonDb,
                                                                    moto: S3Server) -> None:
    """ENOSPC on a real (small tmpfs) file system, mounted in a mount namespace of its own."""
    inst = instance.build(mastodon_db.shape, video_size=6 * 2**20)
    src = new_bucket(moto, "src")
    await instance.seed(inst, mastodon_db, moto, src)
    small = tmp_path / "small"
    small.mkdir()
    config = config_for(tmp_path, mastodon_db, (moto, src), folder(small),
                        extra={"sync": {"concurrency": 1, "multipart_threshold": "5MiB", "part_size": "5MiB"}})
    listing = tmp_path / "listing.txt"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MASTOSYNC_")}
    script = (f"mount -t tmpfs -o size=3m tmpfs {small} && "
              f"{sys.executable} -m mastosync run --all --config {config}; rc=$?; "
              f"find {small} -type f -printf '%P %s\\n' > {listing}; exit $rc")
    result = subprocess.run(["unshare", "--map-root-user", "--mount", "sh", "-c", script], capture_output=True,
                            text=True, env=env, cwd=ROOT, timeout=120)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "full" in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
    written = dict(line.rsplit(" ", 1) for line in listing.read_text().splitlines())
    expected = inst.expected(present=True)
    assert written and not [k for k in written if k.endswith(".mastosync-partial")]  # the partial file removed
    for key, size in written.items():
        assert int(size) == expected[key].size, key  # what is there is complete
    assert len(written) < len(expected)
    shutil.rmtree(small, ignore_errors=True)


@pytest.mark.parametrize("head,expected", [
    (b"\xff\xd8\xff\xe0\x00\x10JFIF", "image/jpeg"), (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"GIF87a", "image/gif"), (b"GIF89a", "image/gif"), (b"RIFF\x10\x00\x00\x00WEBPVP8 ", "image/webp"),
    (b"\x00\x00\x00\x1cftypavif", "image/avif"), (b"\x00\x00\x00\x18ftypheic", "image/heic"),
    (b"\x00\x00\x00\x18ftypmp42", "video/mp4"), (b"\x00\x00\x00\x14ftypqt  ", "video/quicktime"),
    (b"\x1a\x45\xdf\xa3\x9fB\x86\x81\x01B\xf7\x81\x01B\xf2\x81\x04B\xf3\x81\x08B\x82\x84webm", "video/webm"),
    (b"OggS\x00\x02" + bytes(22) + b"\x01vorbis", "audio/ogg"), (b"OggS\x00\x02" + bytes(22) + b"\x80theora",
                                                                  "video/ogg"),
    (b"ID3\x04\x00", "audio/mpeg"), (b"\xff\xfb\x90\x64", "audio/mpeg"), (b"\xff\xf1\x50\x80", "audio/aac"),
    (b"RIFF\x24\x00\x00\x00WAVEfmt ", "audio/x-wav"), (b"fLaC\x00\x00\x00\x22", "audio/flac"),
    (b"PK\x03\x04\x14\x00", "application/zip"), (b"\x00\x00\x01\x00\x01\x00", "image/vnd.microsoft.icon"),
    (b"username,domain\n", None), (b"", None),
])
def test_content_type_from_the_bytes(head: bytes, expected: str | None) -> None:
    from mastosync.storage.sniff import content_type

    assert content_type(head) == expected


async def test_listing_a_folder_walks_only_the_range_and_clears_stale_partials(tmp_path: Path) -> None:
    from mastosync.storage.folders import STALE_PARTIAL, FolderStore
    from mastosync.storage.localfiles import LocalFiles

    keys = [f"media_attachments/files/000/{a:03d}/{b:03d}/original/f{b}.png" for a in range(5) for b in range(20)]
    for key in keys:
        (tmp_path / key).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / key).write_bytes(b"x" * len(key))
    stale = tmp_path / "media_attachments/files/000/002/005/original/.f5.png.0a1b2c3d.mastosync-partial"
    fresh = tmp_path / "media_attachments/files/000/002/006/original/.f6.png.0a1b2c3d.mastosync-partial"
    for p in (stale, fresh):
        p.write_bytes(b"half")
    os.utime(stale, (time.time() - STALE_PARTIAL - 60,) * 2)
    files = LocalFiles(str(tmp_path), "destination", 4)
    read: list[str] = []
    original = files.entries

    async def entries(key: str) -> Any:
        read.append(key)
        return await original(key)

    files.entries = entries  # type: ignore[method-assign]
    async with FolderStore(files, "destination") as store:
        first, last = keys[41], keys[58]  # 000/002/001 … 000/002/018
        sizes = await store.sizes_between("media_attachments/files/", first, last, max_pages=1)
        assert sizes == {k: len(k) for k in keys[41:59]}
        assert not any(k.startswith("media_attachments/files/000/001/") or "/000/003/" in k for k in read)
        assert not stale.exists() and fresh.exists()  # a write in progress is left alone
        assert await store.sizes_between("media_attachments/files/", keys[0], keys[-1], max_pages=0) is None


async def test_owner_of_written_files(tmp_path: Path, ssh_server: AsyncsshServer) -> None:
    """destination.owner: files and the folders made for them go to that user, locally and over SFTP."""
    import pwd

    from mastosync.config.settings import SshSettings
    from mastosync.errors import FolderError
    from mastosync.storage.folders import FolderStore
    from mastosync.storage.localfiles import LocalFiles
    from mastosync.storage.sftpfiles import SftpFiles
    from mastosync.tunnel import Tunnel

    nobody = pwd.getpwnam("nobody")
    key = "accounts/avatars/000/000/001/original/a.png"
    local = LocalFiles(str(tmp_path), "destination", 2, owner="nobody")
    if os.geteuid() != 0:
        with pytest.raises(FolderError, match="needs mastosync to run as root"):
            await local.check(write=True)
        pytest.skip("giving files to another user needs root (checked: refused without it)")
    async with FolderStore(local, "destination") as store:
        await store.check(write=True)
        await store.put(key, b"\x89PNG\r\n\x1a\n", "", ObjectAttrs.of(instance_head(), False, 0o600))
    written = tmp_path / key
    assert (written.stat().st_uid, written.stat().st_gid) == (nobody.pw_uid, nobody.pw_gid)
    assert stat.S_IMODE(written.stat().st_mode) == 0o600
    assert (tmp_path / "accounts").stat().st_uid == nobody.pw_uid

    remote = tmp_path / "remote"
    remote.mkdir()
    ssh = SshSettings(host=ssh_server.host, port=ssh_server.port, user=ssh_server.user,
                      key_file=str(ssh_server.client_key), known_hosts=str(ssh_server.known_hosts()))
    async with Tunnel(ssh, None) as tunnel:
        files = SftpFiles(tunnel, str(remote), "destination", owner=f"{nobody.pw_uid}:{nobody.pw_gid}")
        async with FolderStore(files, "destination") as store:
            await store.check(write=True)
            await store.put(key, b"GIF89a", "", ObjectAttrs.of(instance_head(), False))
        by_name = SftpFiles(tunnel, str(remote), "destination", owner="nobody")
        with pytest.raises(FolderError, match="give it as uid:gid"):  # this SSH server runs no commands
            await by_name.check(write=True)
    written = remote / key
    assert (written.stat().st_uid, written.stat().st_gid) == (nobody.pw_uid, nobody.pw_gid)
    assert stat.S_IMODE(written.stat().st_mode) == 0o644 and written.read_bytes() == b"GIF89a"


def instance_head() -> Any:
    from mastosync.storage.base import Head

    return Head(0)
