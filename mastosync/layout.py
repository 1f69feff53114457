"""Mastodon's storage rules: which object keys a database row stands for.

Pure functions over plain data, no I/O. The four types differ only in the tables below
(table, attachments, style rules, what makes a record remote); one code path expands
them all. The rules and their sources are in shared/mastodon-storage.md:

    key = [cache/] CLASS/ATTACHMENT/ID_PARTITION/STYLE/FILENAME

and the configured key_prefix of each side is put in front by the caller.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NamedTuple

# How a type decides that a record is not local (so its files may live under cache/).
REMOTE_IF_DOMAIN = "domain"  # accounts, custom_emojis: domain IS NOT NULL
REMOTE_IF_REMOTE_URL = "remote_url"  # media_attachments: remote_url not blank
REMOTE_ALWAYS = "always"  # preview_cards


@dataclass(frozen=True, slots=True)
class Style:
    """A derived style: its name and the format it is converted to (None: keep extension)."""

    name: str
    format: str | None = None


@dataclass(frozen=True)
class Attachment:
    """One Paperclip attachment of a table, e.g. media_attachments.file."""

    name: str  # column prefix: file → file_file_name, file_content_type …
    path: str  # CLASS/ATTACHMENT in the key, e.g. media_attachments/files
    derived: Mapping[str, tuple[Style, ...]]  # content type → styles besides original
    derived_default: tuple[Style, ...] = ()  # for content types not in `derived`
    # Column names, spelled out once (they are read for every row).
    file_name: str = field(init=False)
    content_type: str = field(init=False)
    file_size: str = field(init=False)
    updated_at: str = field(init=False)
    schema_version: str = field(init=False)

    def __post_init__(self) -> None:
        for column, suffix in (("file_name", "file_name"), ("content_type", "content_type"),
                               ("file_size", "file_size"), ("updated_at", "updated_at"),
                               ("schema_version", "storage_schema_version")):
            object.__setattr__(self, column, f"{self.name}_{suffix}")

    def columns(self) -> tuple[str, ...]:
        return (self.file_name, self.content_type, self.file_size, self.updated_at, self.schema_version)

    def styles(self, content_type: str | None) -> tuple[Style, ...]:
        return self.derived.get(content_type or "", self.derived_default)


@dataclass(frozen=True, slots=True)
class ObjectType:
    """A table with files: the unit of --type."""

    name: str
    table: str
    attachments: tuple[Attachment, ...]
    remote_rule: str
    remote_columns: tuple[str, ...]


def _same(*types: str, style: Style) -> dict[str, tuple[Style, ...]]:
    return {t: (style,) for t in types}


SMALL_SAME_EXT = Style("small")
SMALL_JPEG = Style("small", "jpeg")
SMALL_PNG = Style("small", "png")
STATIC_PNG = Style("static", "png")

MEDIA_FILE = Attachment(
    name="file",
    path="media_attachments/files",
    derived={
        **_same("image/jpeg", "image/png", "image/webp", style=SMALL_SAME_EXT),
        **_same("image/heic", "image/heif", "image/avif", style=SMALL_JPEG),
        **_same("image/gif", "video/webm", "video/quicktime", "video/mp4", "video/ogg", style=SMALL_PNG),
    },
)
MEDIA_THUMBNAIL = Attachment("thumbnail", "media_attachments/thumbnails", {})
AVATAR = Attachment("avatar", "accounts/avatars", _same("image/gif", style=STATIC_PNG))
HEADER = Attachment("header", "accounts/headers", _same("image/gif", style=STATIC_PNG))
EMOJI_IMAGE = Attachment("image", "custom_emojis/images", {}, derived_default=(STATIC_PNG,))
CARD_IMAGE = Attachment("image", "preview_cards/images", {})

TYPES: dict[str, ObjectType] = {
    t.name: t
    for t in (
        ObjectType(
            "media_attachments",
            "media_attachments",
            (MEDIA_FILE, MEDIA_THUMBNAIL),
            REMOTE_IF_REMOTE_URL,
            ("remote_url",),
        ),
        ObjectType("accounts", "accounts", (AVATAR, HEADER), REMOTE_IF_DOMAIN, ("domain",)),
        ObjectType("custom_emojis", "custom_emojis", (EMOJI_IMAGE,), REMOTE_IF_DOMAIN, ("domain",)),
        ObjectType("preview_cards", "preview_cards", (CARD_IMAGE,), REMOTE_ALWAYS, ()),
    )
}
TYPE_NAMES = tuple(TYPES)


class MediaObject(NamedTuple):
    """One object Mastodon wrote for a record: where it lives and what the database claims.

    A NamedTuple rather than a dataclass: millions are made per run, and a tuple is cheap.
    """

    type: str
    id: int
    attachment: str
    style: str
    key: str  # relative to the key prefix
    size: int | None  # the database's file size, known for the original style only
    content_type: str | None  # the database's content type of the original


def id_partition(record_id: int) -> str:
    """Paperclip's :id_partition: 9 (or 12) zero-padded digits in groups of three.

    A trailing group of one or two digits is dropped, as Ruby's scan(/\\d{3}/) does;
    ids longer than 12 digits are not padded and never truncated.
    """
    digits = f"{record_id:09d}" if record_id < 1_000_000_000 else f"{record_id:012d}"
    n = len(digits)
    if n == 9:  # the two common shapes, spelled out: this runs once per record
        return f"{digits[:3]}/{digits[3:6]}/{digits[6:]}"
    if n == 18:
        d = digits
        return f"{d[:3]}/{d[3:6]}/{d[6:9]}/{d[9:12]}/{d[12:15]}/{d[15:]}"
    return "/".join(digits[i : i + 3] for i in range(0, n - n % 3, 3))


def style_file_name(original: str, style: Style) -> str:
    """Paperclip's :filename for a derived style: basename, then format or original extension."""
    base, dot, ext = original.rpartition(".")
    if not dot or not base:  # no extension, or a dot file such as ".png"
        base, ext = original, ""
    ext = style.format or ext
    return f"{base}.{ext}" if ext else base


def is_remote(object_type: ObjectType, row: Mapping[str, Any]) -> bool:
    """True when the record is not local (Mastodon's local? is false)."""
    rule = object_type.remote_rule
    if rule == REMOTE_ALWAYS:
        return True
    if rule == REMOTE_IF_DOMAIN:
        return row.get("domain") is not None
    url = row.get("remote_url")
    return bool(url and url.strip())


def objects_of(
    object_type: ObjectType,
    row: Mapping[str, Any],
    since: datetime | None = None,
) -> list[MediaObject]:
    """Every object Mastodon wrote for `row`.

    `row` holds the record's columns; a column the database lacks is simply absent
    (e.g. thumbnail_storage_schema_version before 4.6) and reads as NULL. With `since`,
    attachments updated before it are left out.
    """
    found: list[MediaObject] = []
    record_id = row["id"]
    remote = is_remote(object_type, row)
    partition = id_partition(record_id)
    type_name = object_type.name
    for att in object_type.attachments:
        original = row.get(att.file_name)
        if not original:
            continue  # NULL or empty: nothing was stored (or the remote cache was cleared)
        if since is not None:
            updated = row.get(att.updated_at)
            if updated is None or updated < since:
                continue
        cache = "cache/" if remote and (row.get(att.schema_version) or 0) >= 1 else ""
        folder = f"{cache}{att.path}/{partition}/"
        content_type = row.get(att.content_type)
        found.append(MediaObject(type_name, record_id, att.name, "original", f"{folder}original/{original}",
                                 row.get(att.file_size), content_type))
        for style in att.styles(content_type):
            found.append(MediaObject(type_name, record_id, att.name, style.name,
                                     f"{folder}{style.name}/{style_file_name(original, style)}",
                                     None, content_type))
    return found
