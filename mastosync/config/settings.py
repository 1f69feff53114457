"""The schema: one frozen dataclass per section of the configuration; each field's metadata
says how to read and check it (load.py does). Everything is validated once, at load, so the
rest of the program never sees a bad value.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mastosync.config.units import GiB, MiB

T = typing.TypeVar("T")


ACLS = (
    "",
    "private",
    "public-read",
    "public-read-write",
    "authenticated-read",
    "bucket-owner-read",
    "bucket-owner-full-control",
)


def _opt(default: T, **meta: Any) -> T:
    """A field with a default (of the field's type: mypy checks it); meta: secret, parse
    (size|path), min, max, choices."""
    made: T = field(default=default, repr=not meta.get("secret", False), metadata=meta)
    return made


@dataclass(frozen=True)
class DatabaseSettings:
    host: str = _opt("127.0.0.1")
    port: int = _opt(5432, min=1, max=65535)
    name: str = _opt("mastodon_production")
    user: str = _opt("mastodon")
    password: str = _opt("", secret=True)
    connect_timeout: float = _opt(15.0, min=0.1, max=600)
    # TLS to PostgreSQL, as libpq's sslmode: managed databases (RDS, DigitalOcean, Scaleway,
    # Azure) require it. verify-ca and verify-full check the server's certificate against
    # sslrootcert (else the system's CAs); verify-full its name too.
    sslmode: str = _opt("prefer", choices=("disable", "allow", "prefer", "require", "verify-ca", "verify-full"))
    sslrootcert: str = _opt("", parse="path")

    @property
    def is_socket(self) -> bool:
        """host is a folder holding PostgreSQL's Unix socket (/var/run/postgresql), as libpq takes it."""
        return self.host.startswith("/")


@dataclass(frozen=True)
class SshSettings:
    enabled: bool = _opt(False)
    host: str = _opt("")
    port: int = _opt(22, min=1, max=65535)
    user: str = _opt("")
    key_file: str = _opt("", parse="path")
    passphrase: str = _opt("", secret=True)
    password: str = _opt("", secret=True)
    known_hosts: str = _opt("~/.ssh/known_hosts", parse="path")
    keepalive_interval: float = _opt(15.0, min=1, max=3600)
    connect_timeout: float = _opt(15.0, min=0.1, max=600)


KINDS = ("s3", "filesystem", "sftp")


FOLDER_KINDS = ("filesystem", "sftp")


@dataclass(frozen=True)
class BucketSettings:
    """One side of the copy: an S3 bucket (the default), a local folder, or a folder on the SSH host."""

    kind: str = _opt("s3", choices=KINDS)
    # filesystem: a local folder (relative to the configuration file's folder); sftp: a path
    # on the [ssh] host, absolute or relative to the SSH user's home. Mastodon's public/system.
    root: str = _opt("")
    bucket: str = _opt("")
    endpoint: str = _opt("")
    region: str = _opt("us-east-1")
    access_key_id: str = _opt("", secret=True)
    secret_access_key: str = _opt("", secret=True)
    session_token: str = _opt("", secret=True)
    key_prefix: str = _opt("")
    addressing_style: str = _opt("path", choices=("path", "virtual", "auto"))
    profile: str = _opt("")  # a profile of ~/.aws/config and ~/.aws/credentials, instead of keys
    ca_bundle: str = _opt("", parse="path")  # PEM file of CAs to trust (else AWS_CA_BUNDLE, else the system's)
    # The public base URL of the bucket's media when it is not the endpoint: a CDN, the alias
    # host (S3_ALIAS_HOST), or the public domain of an R2 bucket (whose S3 API host serves
    # nothing publicly). The destination's becomes S3_ALIAS_HOST in the cut-over settings;
    # the source's stays allowed in EXTRA_MEDIA_HOSTS.
    public_url: str = _opt("")

    @property
    def is_folder(self) -> bool:
        return self.kind in FOLDER_KINDS

    def same_place_as(self, other: BucketSettings) -> bool:
        """True when both sides are one account on one endpoint (server-side copy works)."""
        return (
            self.kind == other.kind == "s3"
            and self.endpoint == other.endpoint
            and self.region == other.region
            and self.access_key_id == other.access_key_id
            and self.secret_access_key == other.secret_access_key
        )


@dataclass(frozen=True)
class DestinationSettings(BucketSettings):
    acl: str = _opt("public-read", choices=ACLS)
    storage_class: str = _opt("")
    # A folder destination's files are given to this user (and group): "mastodon",
    # "mastodon:www-data" or "991:991". Needs root (locally, or as the SSH user).
    owner: str = _opt("")


@dataclass(frozen=True)
class SyncSettings:
    concurrency: int = _opt(32, min=1, max=1024)
    include_remote: bool = _opt(True)
    multipart_threshold: int = _opt(16 * MiB, parse="size", min=5 * MiB, max=5 * GiB)
    part_size: int = _opt(8 * MiB, parse="size", min=5 * MiB, max=5 * GiB)
    state_dir: str = _opt(".mastosync", parse="path")
    retries: int = _opt(8, min=0, max=100)
    timeout: float = _opt(60.0, min=1, max=3600)
    # After SIGINT/SIGTERM, the copies in flight get this long to finish (a second signal ends
    # it at once); keep it under a scheduler's own (Kubernetes' terminationGracePeriodSeconds).
    grace_period: float = _opt(10.0, min=0, max=3600)
    progress_interval: float = _opt(5.0, min=0.1, max=3600)
    db_batch: int = _opt(2000, min=10, max=100_000)
    # `run --since last` starts this long before the baseline run: Paperclip writes an object
    # before its row's transaction commits, so a row may appear later than its file.
    since_margin: float = _opt(300.0, parse="duration", min=0, max=7 * 86400)
    # Object bytes read from the source per second, for every copy of the run: "10M", "512K",
    # "off", or a timetable by local time as rclone writes it: "08:00,10M 23:00,off".
    bwlimit: str = _opt("off")
    tpslimit: float = _opt(0.0, min=0, max=100_000)  # requests per second to each bucket; 0: none
    # Prometheus metrics at http://ADDR/metrics while running ("127.0.0.1:9464"); "": none.
    metrics_addr: str = _opt("")
    # How long the metrics stay up after the run, so that the last scrape sees its end.
    metrics_linger: float = _opt(15.0, parse="duration", min=0, max=3600)


@dataclass(frozen=True)
class Settings:
    database: DatabaseSettings
    ssh: SshSettings
    source: BucketSettings
    destination: DestinationSettings
    sync: SyncSettings
    path: Path

    @property
    def secrets(self) -> list[str]:
        """Every non-empty secret value, for scrubbing output."""
        found = []
        for section in (self.database, self.ssh, self.source, self.destination, self.sync):
            for f in dataclasses.fields(section):
                value = getattr(section, f.name)
                if f.metadata.get("secret") and value:
                    found.append(value)
        return found


SECTIONS: dict[str, type] = {
    "database": DatabaseSettings,
    "ssh": SshSettings,
    "source": BucketSettings,
    "destination": DestinationSettings,
    "sync": SyncSettings,
}


REQUIRED_SECTIONS = ("source", "destination")
