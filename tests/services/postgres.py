"""A throwaway PostgreSQL cluster (initdb + pg_ctl) on a free loopback port.

PostgreSQL refuses to run as root, so as root the cluster belongs to the `postgres`
user and its binaries run through `runuser -u postgres --`.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

from tests.services.process import ServerFailed, free_port, port_open

SUPERUSER = "postgres"
SUPERUSER_PASSWORD = "pg-super-test-pw"


def bindir() -> Path:
    """Where initdb and pg_ctl live: pg_config --bindir, else the newest /usr/lib/postgresql."""
    candidates = []
    if shutil.which("pg_config"):
        out = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True)
        if out.returncode == 0:
            candidates.append(Path(out.stdout.strip()))
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin"),
                      key=lambda p: int(Path(p).parent.name) if Path(p).parent.name.isdigit() else 0)
    candidates += [Path(p) for p in reversed(versions)]
    for c in candidates:
        if (c / "initdb").exists() and (c / "pg_ctl").exists():
            return c
    raise ServerFailed("PostgreSQL server binaries (initdb, pg_ctl) not found; install postgresql")


class PostgresServer:
    """A cluster with password authentication over TCP on 127.0.0.1 (and trust on its Unix
    socket in `root`). With `tls` (certificate, key): TLS on, and TCP logins without it refused."""

    def __init__(self, tls: tuple[Path, Path] | None = None) -> None:
        self.tls = tls
        self.bin = bindir()
        self.port = free_port()
        self.host = "127.0.0.1"
        self.root = Path(tempfile.mkdtemp(prefix="mastosync-pg-"))
        self.data = self.root / "data"
        self.as_root = os.geteuid() == 0
        if self.as_root:
            user = pwd.getpwnam("postgres")
            os.chown(self.root, user.pw_uid, user.pw_gid)
        self.root.chmod(0o755)
        self.log = self.root / "server.log"

    def _run(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        cmd = list(argv)
        if self.as_root:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        if check and out.returncode != 0:
            raise ServerFailed(
                f"{' '.join(argv)} failed ({out.returncode}):\n{out.stdout}\n{out.stderr}\n{self.server_log()}"
            )
        return out

    def server_log(self) -> str:
        try:
            return self.log.read_text(errors="replace")[-8000:]
        except OSError:
            return ""

    def start(self) -> PostgresServer:
        pwfile = self.root / "pw"
        pwfile.write_text(SUPERUSER_PASSWORD + "\n")
        if self.as_root:
            user = pwd.getpwnam("postgres")
            os.chown(pwfile, user.pw_uid, user.pw_gid)
        self._run(str(self.bin / "initdb"), "-D", str(self.data), "-U", SUPERUSER,
                  "--auth-local=trust", "--auth-host=scram-sha-256", f"--pwfile={pwfile}",
                  "-E", "UTF8", "--locale=C.UTF-8" if _has_c_utf8() else "--locale=C")
        tls = ""
        if self.tls is not None:
            cert, key = (self.data / "server.crt", self.data / "server.key")
            shutil.copy(self.tls[0], cert)
            shutil.copy(self.tls[1], key)
            key.chmod(0o600)
            if self.as_root:
                user = pwd.getpwnam("postgres")
                for path in (cert, key):
                    os.chown(path, user.pw_uid, user.pw_gid)
            hba = self.data / "pg_hba.conf"
            hba.write_text(hba.read_text().replace("\nhost ", "\nhostssl "))
            tls = " -c ssl=on"
        self.restart_cmd = [
            str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60",
            "-o", f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off "
                  f"-c synchronous_commit=off -c full_page_writes=off -c max_connections=200{tls}",
        ]
        self._run(*self.restart_cmd[:1], "start", *self.restart_cmd[1:])
        if not port_open(self.port):
            raise ServerFailed(f"PostgreSQL did not listen on {self.port}:\n{self.server_log()}")
        return self

    def restart(self) -> None:
        """pg_ctl restart: every client connection is dropped."""
        self._run(self.restart_cmd[0], "restart", "-m", "fast", *self.restart_cmd[1:])

    def stop(self) -> None:
        if self.data.exists():
            self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "stop", "-m", "immediate",
                      check=False)
        shutil.rmtree(self.root, ignore_errors=True)

    def dsn(self, database: str = "postgres", user: str = SUPERUSER,
            password: str = SUPERUSER_PASSWORD) -> str:
        return f"postgresql://{user}:{password}@{self.host}:{self.port}/{database}"

    def psql(self, sql: str, database: str = "postgres") -> str:
        out = self._run(str(self.bin / "psql"), "-h", str(self.root), "-p", str(self.port),
                        "-U", SUPERUSER, "-d", database, "-v", "ON_ERROR_STOP=1", "-qAt", "-c", sql)
        return out.stdout


def _has_c_utf8() -> bool:
    out = subprocess.run(["locale", "-a"], capture_output=True, text=True)
    return any(line.lower() in ("c.utf8", "c.utf-8") for line in out.stdout.split())
