"""Where a bucket's objects are (its URL, path or virtual-host style) and what a write of one
sends (its stored headers, the ACL, the storage class)."""

from __future__ import annotations

import re
from urllib.parse import quote, urlsplit

from mastosync.config import BucketSettings, DestinationSettings
from mastosync.storage.base import (
    Head,
)


def bucket_url(settings: BucketSettings) -> tuple[str, str]:
    """(origin, path prefix) of the bucket: objects are at origin + prefix + encoded key.

    "path" puts the bucket in the path (MinIO, most S3-compatible providers); "virtual" in
    the host name (AWS's preference); "auto" picks virtual only on AWS, for names that
    can be host names.
    """
    endpoint = settings.endpoint or f"https://s3.{settings.region or 'us-east-1'}.amazonaws.com"
    parts = urlsplit(endpoint)
    base_path = parts.path.rstrip("/")
    style = settings.addressing_style
    if style == "auto":
        dns_name = re.fullmatch(r"[a-z0-9][a-z0-9-]{1,61}[a-z0-9]", settings.bucket) is not None
        aws = (parts.hostname or "").endswith(".amazonaws.com")
        style = "virtual" if dns_name and aws else "path"
    if style == "virtual":
        return f"{parts.scheme}://{settings.bucket}.{parts.netloc}", f"{base_path}/"
    return f"{parts.scheme}://{parts.netloc}", f"{base_path}/{quote(settings.bucket, safe='')}/"


def upload_extra(side: BucketSettings, head: Head, private: bool = False, acl: str | None = None) -> dict[str, str]:
    """Headers of a written object: its stored headers, ACL and class from config.

    An object Mastodon keeps private gets `private` instead of the configured ACL, and
    no ACL at all when none is configured (as Mastodon with S3_PERMISSION=""). A side other
    than the destination (fix --side source) is written with `acl`, and its own class kept.
    """
    destination = side if isinstance(side, DestinationSettings) else None
    acl = acl if acl is not None else destination.acl if destination is not None else ""
    extra: dict[str, str] = dict(head.metadata)
    if head.content_type:
        extra["content-type"] = head.content_type
    if head.cache_control:
        extra["cache-control"] = head.cache_control
    if acl:
        extra["x-amz-acl"] = "private" if private else acl
    if destination is not None and destination.storage_class:
        extra["x-amz-storage-class"] = destination.storage_class
    return extra
