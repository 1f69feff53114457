"""Where a bucket's objects are (its URL, path or virtual-host style) and what a write of one
sends (its stored headers, the ACL, the storage class)."""

from __future__ import annotations

from mastosync.config.settings import BucketSettings, DestinationSettings
from mastosync.sides import S3Side
from mastosync.storage.base import ObjectAttrs


def bucket_url(settings: BucketSettings) -> tuple[str, str]:
    """(origin, path prefix) of the bucket: objects are at origin + prefix + encoded key (sides.py)."""
    return S3Side.of(settings).url()


def upload_extra(side: BucketSettings, attrs: ObjectAttrs, acl: str | None = None) -> dict[str, str]:
    """Headers of a written object: its stored headers, ACL and class from config.

    An object Mastodon keeps private gets `private` instead of the configured ACL, and
    no ACL at all when none is configured (as Mastodon with S3_PERMISSION=""). A side other
    than the destination (fix --side source) is written with `acl`, and its own class kept.
    """
    destination = side if isinstance(side, DestinationSettings) else None
    acl = acl if acl is not None else destination.acl if destination is not None else ""
    extra: dict[str, str] = dict(attrs.metadata)
    if attrs.content_type:
        extra["content-type"] = attrs.content_type
    if attrs.cache_control:
        extra["cache-control"] = attrs.cache_control
    if acl:
        extra["x-amz-acl"] = "private" if attrs.private else acl
    if destination is not None and destination.storage_class:
        extra["x-amz-storage-class"] = destination.storage_class
    extra.update(attrs.kept_in_place)
    return extra
