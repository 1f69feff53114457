"""Where a side of the copy lives, one type per kind: an S3 bucket, a folder here, a folder on
the SSH host. Each says, in one place, what the rest of the program asks of a place:

    identity()     what makes two runs the same migration (the resume state's key, the run
                   history's selection): as written since the first release, never to change
    place()        the same place under two spellings (config's check that source and
                   destination differ): endpoints normalised, AWS's by region
    describe()     for people
    public_base()  where its objects are served publicly (the cut-over's URLs), if anywhere

and S3Side.url() is where the API reaches its objects.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import quote, urlsplit

from mastosync.config.settings import BucketSettings, SshSettings


@dataclass(frozen=True)
class S3Side:
    endpoint: str
    region: str
    bucket: str
    key_prefix: str
    addressing_style: str = "path"
    public_url: str = ""

    @classmethod
    def of(cls, side: BucketSettings) -> S3Side:
        return cls(side.endpoint, side.region, side.bucket, side.key_prefix, side.addressing_style, side.public_url)

    def identity(self) -> list[str]:
        # Prefixes verbatim: "m" and "m/" are different places (layout.full_key).
        return [self.endpoint, self.bucket, self.key_prefix]

    def place(self) -> tuple[str, str, str]:
        if not self.endpoint:
            return (f"aws:{self.region or 'us-east-1'}", self.bucket, self.key_prefix)
        parts = urlsplit(self.endpoint)
        port = parts.port or (443 if parts.scheme == "https" else 80)
        return (f"{parts.scheme}://{(parts.hostname or '').lower()}:{port}{parts.path.rstrip('/')}", self.bucket,
                self.key_prefix)

    def describe(self) -> str:
        return f"bucket {self.bucket!r} at {self.endpoint or 'AWS ' + (self.region or 'us-east-1')}"

    def protocol_and_hostname(self) -> tuple[str, str]:
        """Where the objects are, path style: the endpoint's scheme and host (and path), or AWS's."""
        if not self.endpoint:
            return "https", f"s3.{self.region or 'us-east-1'}.amazonaws.com"
        parts = urlsplit(self.endpoint)
        return parts.scheme, f"{parts.netloc}{parts.path.rstrip('/')}"

    def public_base(self) -> str:
        """The URL under which the objects are served publicly, ending in "/": public_url (a CDN,
        the bucket's public domain), else the path-style URL Mastodon builds."""
        prefix = f"{self.key_prefix}/".removeprefix("/") if self.key_prefix else ""
        if self.public_url:
            return f"{self.public_url.rstrip('/')}/{prefix}"
        protocol, hostname = self.protocol_and_hostname()
        return f"{protocol}://{hostname}/{self.bucket}/{prefix}"

    def url(self) -> tuple[str, str]:
        """(origin, path prefix) of the bucket for the API: objects are at origin + prefix + encoded key.

        "path" puts the bucket in the path (MinIO, most S3-compatible providers); "virtual" in
        the host name (AWS's preference); "auto" picks virtual only on AWS, for names that can
        be host names.
        """
        endpoint = self.endpoint or f"https://s3.{self.region or 'us-east-1'}.amazonaws.com"
        parts = urlsplit(endpoint)
        base_path = parts.path.rstrip("/")
        style = self.addressing_style
        if style == "auto":
            dns_name = re.fullmatch(r"[a-z0-9][a-z0-9-]{1,61}[a-z0-9]", self.bucket) is not None
            aws = (parts.hostname or "").endswith(".amazonaws.com")
            style = "virtual" if dns_name and aws else "path"
        if style == "virtual":
            return f"{parts.scheme}://{self.bucket}.{parts.netloc}", f"{base_path}/"
        return f"{parts.scheme}://{parts.netloc}", f"{base_path}/{quote(self.bucket, safe='')}/"


@dataclass(frozen=True)
class LocalFolder:
    root: str

    def identity(self) -> list[str]:
        return ["filesystem", self.root]

    def place(self) -> tuple[str, str, str]:
        return ("filesystem", self.root.rstrip("/") or "/", "")

    def describe(self) -> str:
        return f"folder {self.root}"

    def public_base(self) -> str | None:
        return None  # Mastodon serves it itself, under /system/


@dataclass(frozen=True)
class SftpFolder:
    root: str
    login: str  # user@host:port of the [ssh] section

    def identity(self) -> list[str]:
        return ["sftp", self.login, self.root]

    def place(self) -> tuple[str, str, str]:
        return ("sftp", self.root.rstrip("/") or "/", "")  # one [ssh] host: the root tells

    def describe(self) -> str:
        return f"folder {self.root} on {self.login}"

    def public_base(self) -> str | None:
        return None


Side = S3Side | LocalFolder | SftpFolder


def side_of(side: BucketSettings, ssh: SshSettings) -> Side:
    """The place a [source] or [destination] section names."""
    if side.kind == "filesystem":
        return LocalFolder(side.root)
    if side.kind == "sftp":
        return SftpFolder(side.root, f"{ssh.user}@{ssh.host}:{ssh.port}")
    return S3Side.of(side)
