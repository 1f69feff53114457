"""SSH servers for the tunnel tests: an asyncssh server (always) and OpenSSH's sshd (when installed).

Both accept one generated client key (and optionally a password) and allow local port
forwarding, so mastosync can reach the test PostgreSQL through them. The asyncssh
server runs as a child process (`python -m tests.services.ssh PORT DIR`): sending it
SIGUSR1 drops every open connection, which is how tests cut a tunnel mid-run.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from tests.services.process import ManagedProcess, ServerFailed, free_port, port_open

USER = "mastosync"
PASSWORD = "ssh-test-password"
FORBIDDEN_PORT = 9  # the asyncssh test server refuses to forward there (administratively prohibited)


def make_keys(root: Path) -> None:
    """Host key, client key, authorized_keys and a known_hosts entry in `root`."""
    import asyncssh

    host = asyncssh.generate_private_key("ssh-ed25519")
    host.write_private_key(root / "host_key")
    os.chmod(root / "host_key", 0o600)
    host.write_public_key(root / "host_key.pub")
    client = asyncssh.generate_private_key("ssh-ed25519")
    client.write_private_key(root / "client_key")
    os.chmod(root / "client_key", 0o600)
    client.write_public_key(root / "authorized_keys")
    other = asyncssh.generate_private_key("ssh-ed25519")
    other.write_public_key(root / "other_host_key.pub")


class SshServerBase:
    kind = "ssh"

    def __init__(self) -> None:
        self.port = free_port()
        self.host = "127.0.0.1"
        self.root = Path(tempfile.mkdtemp(prefix=f"mastosync-{self.kind}-"))
        self.root.chmod(0o755)
        make_keys(self.root)
        self.client_key = self.root / "client_key"
        self.user = USER
        self.password = PASSWORD
        self.process: ManagedProcess | None = None

    def known_hosts(self, wrong: bool = False) -> Path:
        """A known_hosts file for this server (non-default port form); `wrong` lists another key."""
        key = (self.root / ("other_host_key.pub" if wrong else "host_key.pub")).read_text().split()
        path = self.root / ("known_hosts_wrong" if wrong else "known_hosts")
        path.write_text(f"[{self.host}]:{self.port} {key[0]} {key[1]}\n")
        return path

    def stop(self) -> None:
        if self.process:
            self.process.stop()
        shutil.rmtree(self.root, ignore_errors=True)


class AsyncsshServer(SshServerBase):
    kind = "asyncssh"

    def start(self) -> AsyncsshServer:
        self.process = ManagedProcess(
            "asyncssh-server",
            [sys.executable, "-m", "tests.services.ssh", str(self.port), str(self.root)],
            cwd=str(Path(__file__).resolve().parents[2]),
        )
        self.process.start(lambda: port_open(self.port))
        return self

    def drop_connections(self) -> None:
        assert self.process and self.process.proc
        os.kill(self.process.proc.pid, signal.SIGUSR1)


def sshd_binary() -> str | None:
    for candidate in (shutil.which("sshd"), "/usr/sbin/sshd"):
        if candidate and Path(candidate).exists():
            return candidate
    return None


def sftp_server_binary() -> str | None:
    """OpenSSH's sftp-server, the program most hosts run for SFTP (else sshd's internal one)."""
    for candidate in ("/usr/lib/openssh/sftp-server", "/usr/libexec/openssh/sftp-server",
                      "/usr/libexec/sftp-server", "/usr/lib/ssh/sftp-server"):
        if Path(candidate).exists():
            return candidate
    return None


class OpenSshServer(SshServerBase):
    """OpenSSH's sshd in the foreground (-D) with a config of its own; runs as the current user."""

    kind = "openssh"

    def start(self) -> OpenSshServer:
        binary = sshd_binary()
        if not binary:
            raise ServerFailed("sshd not installed (apt-get install openssh-server)")
        import pwd

        self.user = pwd.getpwuid(os.getuid()).pw_name
        Path("/run/sshd").mkdir(exist_ok=True)  # privilege separation directory
        config = self.root / "sshd_config"
        config.write_text(
            f"Port {self.port}\nListenAddress 127.0.0.1\nHostKey {self.root / 'host_key'}\n"
            f"AuthorizedKeysFile {self.root / 'authorized_keys'}\nPasswordAuthentication no\n"
            "KbdInteractiveAuthentication no\nUsePAM no\nAllowTcpForwarding yes\n"
            f"PidFile {self.root / 'sshd.pid'}\nStrictModes no\nPermitRootLogin yes\n"
            "LogLevel VERBOSE\n"
            f"Subsystem sftp {sftp_server_binary() or 'internal-sftp'}\n"
        )
        check = subprocess.run([binary, "-t", "-f", str(config)], capture_output=True, text=True)
        if check.returncode != 0:
            raise ServerFailed(f"sshd rejected its configuration:\n{check.stderr}")
        self.process = ManagedProcess("sshd", [binary, "-D", "-e", "-f", str(config)])
        self.process.start(lambda: port_open(self.port))
        return self


async def _serve(port: int, root: Path) -> None:
    import asyncssh

    connections: set[asyncssh.SSHServerConnection] = set()

    class Server(asyncssh.SSHServer):
        def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
            self.conn = conn
            connections.add(conn)

        def connection_lost(self, exc: Exception | None) -> None:
            connections.discard(self.conn)

        def begin_auth(self, username: str) -> bool:
            return True

        def password_auth_supported(self) -> bool:
            return True

        def validate_password(self, username: str, password: str) -> bool:
            return username == USER and password == PASSWORD

        def connection_requested(self, dest_host: str, dest_port: int, orig_host: str, orig_port: int) -> bool:
            # Allow direct-tcpip (the local forward mastosync opens), except to port FORBIDDEN_PORT:
            # how a server with forwarding turned off for that destination answers.
            if dest_port == FORBIDDEN_PORT:
                raise asyncssh.ChannelOpenError(asyncssh.OPEN_ADMINISTRATIVELY_PROHIBITED, "forwarding prohibited")
            return True

        def unix_connection_requested(self, dest_path: str) -> bool:
            return True  # direct-streamlocal, as OpenSSH allows it: PostgreSQL's socket on the host

    def drop_all() -> None:
        for conn in list(connections):
            conn.abort()

    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGUSR1, drop_all)
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    server = await asyncssh.create_server(
        Server, "127.0.0.1", port,
        server_host_keys=[str(root / "host_key")],
        authorized_client_keys=str(root / "authorized_keys"),
        sftp_factory=True,  # for `init --over-ssh` (the .env.production on the Mastodon host)
    )
    print(f"listening on {port}", flush=True)
    await stop.wait()
    server.close()


if __name__ == "__main__":
    asyncio.run(_serve(int(sys.argv[1]), Path(sys.argv[2])))
