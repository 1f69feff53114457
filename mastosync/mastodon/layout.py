"""Mastodon's storage rules: which object keys a database row stands for.

Pure functions over plain data, no I/O. The types differ only in the tables below
(table, attachments, style rules, what makes a record remote, what is kept private); one
code path expands them all. The rules and their sources (in Mastodon's code) are below, and
tests/test_layout.py checks each against keys written out by hand:

    key = [cache/] CLASS/ATTACHMENT/ID_PARTITION/STYLE/FILENAME

and each side's key_prefix is put in front by `full_key`, exactly as Mastodon does.

Where each rule comes from in Mastodon's source (app/… and lib/… of mastodon/mastodon,
config/initializers/paperclip.rb, and kt-paperclip's lib/paperclip/storage/s3.rb):
the tables and styles from the models' `has_attached_file` (media_attachment.rb,
concerns/account/avatar.rb and header.rb, custom_emoji.rb, preview_card.rb,
site_upload.rb, backup.rb, preview_card_provider.rb, import.rb until 4.4); `cache/` from
paperclip.rb's :prefix_url; what `--since` must also catch from lib/mastodon/cli/upgrade.rb;
what is private from backup.rb (`s3_permissions`) and
update_media_attachments_permissions_service.rb (called by suspend_account_service.rb and
remove_status_service.rb).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NamedTuple

# What Mastodon sends with every upload (config/initializers/paperclip.rb s3_headers).
MASTODON_CACHE_CONTROL = "public, max-age=315576000, immutable"

# How a type decides that a record is not local (so its files may live under cache/).
REMOTE_IF_DOMAIN = "domain"  # accounts, custom_emojis: domain IS NOT NULL
REMOTE_IF_REMOTE_URL = "remote_url"  # media_attachments: remote_url not blank
REMOTE_ALWAYS = "always"  # preview_cards
REMOTE_NEVER = "never"  # models without `local?`: site_uploads, backups, providers, imports

# Which objects of a type Mastodon keeps private (never written public-read).
PUBLIC = "public"
PRIVATE = "private"  # backups, imports: uploaded private
PRIVATE_IF_HIDDEN = "private-if-hidden"  # media of suspended accounts or of removed (kept) posts


@dataclass(frozen=True, slots=True)
class Style:
    """A derived style: its name and the format it is converted to (None: keep extension)."""

    name: str
    format: str | None = None
    # Another format to look for when the computed key is absent at the source (a GIF's
    # small from Mastodon 2.9 and earlier had no format of its own: small/<base>.gif).
    fallback_format: str | None = None


@dataclass(frozen=True)
class Attachment:
    """One Paperclip attachment of a table, e.g. media_attachments.file."""

    name: str  # column prefix: file → file_file_name, file_content_type …
    path: str  # CLASS/ATTACHMENT in the key, e.g. media_attachments/files
    derived: Mapping[str, tuple[Style, ...]]  # selector value → styles besides original
    derived_default: tuple[Style, ...] = ()  # for selector values not in `derived`
    # The column whose value picks the styles: the attachment's content type, unless set
    # (site_uploads pick theirs by the row's `var`).
    styles_by: str = ""
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
        if not self.styles_by:
            object.__setattr__(self, "styles_by", self.content_type)

    def columns(self) -> tuple[str, ...]:
        return (self.file_name, self.content_type, self.file_size, self.updated_at, self.schema_version)

    def styles(self, row: Mapping[str, Any]) -> tuple[Style, ...]:
        return self.derived.get(row.get(self.styles_by) or "", self.derived_default)


@dataclass(frozen=True, slots=True)
class ObjectType:
    """A table with files: the unit of --type."""

    name: str
    table: str
    attachments: tuple[Attachment, ...]
    remote_rule: str = REMOTE_NEVER
    extra_columns: tuple[str, ...] = ()  # read besides the attachments' (remote rule, styles, privacy)
    privacy: str = PUBLIC
    optional: bool = False  # the table may not exist (imports: dropped in 4.4)


def _same(*types: str, style: Style) -> dict[str, tuple[Style, ...]]:
    return {t: (style,) for t in types}


SMALL_SAME_EXT = Style("small")
SMALL_JPEG = Style("small", "jpeg")
SMALL_PNG = Style("small", "png")
SMALL_PNG_OR_GIF = Style("small", "png", fallback_format="gif")  # GIFs from 2.9 and earlier
STATIC_PNG = Style("static", "png")


def _png_sizes(*names: str) -> tuple[Style, ...]:
    return tuple(Style(name, "png") for name in names)


MEDIA_FILE = Attachment(
    name="file",
    path="media_attachments/files",
    derived={
        **_same("image/jpeg", "image/png", "image/webp", style=SMALL_SAME_EXT),
        # Converted to JPEG since 4.2 (the row then says image/jpeg); a row that still says
        # image/avif was processed by 4.0/4.1, whose small kept the .avif extension.
        "image/avif": (SMALL_SAME_EXT,),
        **_same("image/heic", "image/heif", style=SMALL_JPEG),
        "image/gif": (SMALL_PNG_OR_GIF,),
        **_same("video/webm", "video/quicktime", "video/mp4", "video/ogg", style=SMALL_PNG),
    },
)
MEDIA_THUMBNAIL = Attachment("thumbnail", "media_attachments/thumbnails", {})
AVATAR = Attachment("avatar", "accounts/avatars", _same("image/gif", style=STATIC_PNG))
HEADER = Attachment("header", "accounts/headers", _same("image/gif", style=STATIC_PNG))
EMOJI_IMAGE = Attachment("image", "custom_emojis/images", {}, derived_default=(STATIC_PNG,))
CARD_IMAGE = Attachment("image", "preview_cards/images", {})
# app/models/site_upload.rb: STYLES by `var` (an unknown var has no styles).
SITE_UPLOAD_FILE = Attachment(
    name="file",
    path="site_uploads/files",
    derived={
        "thumbnail": _png_sizes("@1x", "@2x"),
        "mascot": (),
        "favicon": _png_sizes("16", "32", "48"),
        # APPLE_ICON_SIZES + ANDROID_ICON_SIZES, uniq, in Mastodon's order.
        "app_icon": _png_sizes("57", "60", "72", "76", "114", "120", "144", "152", "167", "180", "1024",
                               "36", "48", "96", "192", "256", "384", "512"),
    },
    styles_by="var",
)
BACKUP_DUMP = Attachment("dump", "backups/dumps", {})
PROVIDER_ICON = Attachment("icon", "preview_card_providers/icons", {}, derived_default=(STATIC_PNG,))
IMPORT_DATA = Attachment("data", "imports/data", {})

TYPES: dict[str, ObjectType] = {
    t.name: t
    for t in (
        ObjectType("media_attachments", "media_attachments", (MEDIA_FILE, MEDIA_THUMBNAIL),
                   REMOTE_IF_REMOTE_URL, ("remote_url", "account_id", "status_id"), PRIVATE_IF_HIDDEN),
        ObjectType("accounts", "accounts", (AVATAR, HEADER), REMOTE_IF_DOMAIN, ("domain",)),
        ObjectType("custom_emojis", "custom_emojis", (EMOJI_IMAGE,), REMOTE_IF_DOMAIN, ("domain",)),
        ObjectType("preview_cards", "preview_cards", (CARD_IMAGE,), REMOTE_ALWAYS),
        ObjectType("site_uploads", "site_uploads", (SITE_UPLOAD_FILE,), extra_columns=("var",), optional=True),
        ObjectType("backups", "backups", (BACKUP_DUMP,), privacy=PRIVATE, optional=True),
        ObjectType("preview_card_providers", "preview_card_providers", (PROVIDER_ICON,), optional=True),
        ObjectType("imports", "imports", (IMPORT_DATA,), privacy=PRIVATE, optional=True),
    )
}
TYPE_NAMES = tuple(TYPES)


@dataclass(frozen=True)
class Hidden:
    """What Mastodon has made private after the fact, read from the database once per run.

    SuspendAccountService switches every object of a suspended account's media to
    private (back on unsuspension); RemoveStatusService does the same to the media of a
    post it removes but keeps (reported, or removed by a moderator). A copy must keep
    them private, or a migration publishes them again.
    """

    suspended_accounts: frozenset[int] = frozenset()
    discarded_statuses: frozenset[int] = frozenset()

    def __bool__(self) -> bool:
        """Whether anything is hidden at all (most instances: a few suspended accounts, or none)."""
        return bool(self.suspended_accounts or self.discarded_statuses)

    def hides(self, row: Mapping[str, Any]) -> bool:
        return (row.get("account_id") in self.suspended_accounts
                or row.get("status_id") in self.discarded_statuses)


NOTHING_HIDDEN = Hidden()


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
    private: bool = False  # Mastodon keeps it private: never written with a public ACL
    fallback: str | None = None  # where it may be instead when `key` is absent at the source
    estimate: int = 0  # its size as far as known before listing: the database's, or DERIVED_ESTIMATE


# A MediaObject from its ten fields in order, without the keyword-handling __new__ that
# NamedTuple generates: this runs for every object of the instance (dry-run, every run).
_make = MediaObject._make


# The size a derived style is taken to have until a listing or a copy tells (small images,
# statics and icons are tens of kilobytes; never more than the original).
DERIVED_ESTIMATE = 64 * 1024


def full_key(key_prefix: str, key: str) -> str:
    """The bucket key of `key` under Mastodon's S3_KEY_PREFIX, byte for byte as Mastodon writes it.

    paperclip.rb builds `S3_KEY_PREFIX + "/" + path` and kt-paperclip drops one leading
    "/" only, so "mastodon/" gives "mastodon//accounts/…" and "/m" gives "m/accounts/…".
    An empty prefix means none (S3_KEY_PREFIX unset).
    """
    if not key_prefix:
        return key
    joined = f"{key_prefix}/{key}"
    return joined[1:] if joined.startswith("/") else joined


def id_partition(record_id: int) -> str:
    """Paperclip's :id_partition: 9 (or 12) zero-padded digits in groups of three.

    A trailing group of one or two digits is dropped, as Ruby's scan(/\\d{3}/) does;
    ids longer than 12 digits are not padded and never truncated.
    """
    if 10**17 <= record_id < 10**18:  # a snowflake id, the shape of most rows: str() needs no padding
        d = str(record_id)
        return f"{d[:3]}/{d[3:6]}/{d[6:9]}/{d[9:12]}/{d[12:15]}/{d[15:]}"
    digits = f"{record_id:09d}" if record_id < 1_000_000_000 else f"{record_id:012d}"
    n = len(digits)
    if n == 9:  # the other common shape, spelled out: this runs once per record
        return f"{digits[:3]}/{digits[3:6]}/{digits[6:]}"
    return "/".join(digits[i : i + 3] for i in range(0, n - n % 3, 3))


def style_file_name(original: str, style: Style) -> str:
    """Paperclip's :filename for a derived style: basename, then format or original extension."""
    return _styled(*_split_name(original), style.format)


def _split_name(original: str) -> tuple[str, str]:
    """(basename, extension) as Paperclip splits a file name; the extension may be empty."""
    base, dot, ext = original.rpartition(".")
    if not dot or not base:  # no extension, or a dot file such as ".png"
        return original, ""
    return base, ext


def _styled(base: str, ext: str, style_format: str | None) -> str:
    ext = style_format or ext
    return f"{base}.{ext}" if ext else base


def is_remote(object_type: ObjectType, row: Mapping[str, Any]) -> bool:
    """True when the record is not local (Mastodon's local? is false)."""
    rule = object_type.remote_rule
    if rule == REMOTE_ALWAYS:
        return True
    if rule == REMOTE_NEVER:
        return False
    if rule == REMOTE_IF_DOMAIN:
        return row.get("domain") is not None
    url = row.get("remote_url")
    return bool(url and url.strip())


def updated_since(att: Attachment, row: Mapping[str, Any], since: datetime) -> bool:
    """Whether an attachment's objects may have been written at or after `since`.

    New files set `<att>_updated_at`. `tootctl upgrade storage-schema` moves files under
    cache/ without touching it: it sets `<att>_storage_schema_version` and saves the row,
    so the row's `updated_at` tells when. (records.build_query says the same in SQL.)
    """
    updated = row.get(att.updated_at)
    if updated is not None and updated >= since:
        return True
    row_updated = row.get("updated_at")
    return row_updated is not None and row_updated >= since and (row.get(att.schema_version) or 0) >= 1


def objects_of(
    object_type: ObjectType,
    row: Mapping[str, Any],
    since: datetime | None = None,
    hidden: Hidden = NOTHING_HIDDEN,
) -> list[MediaObject]:
    """Every object Mastodon wrote for `row`.

    `row` holds the record's columns; a column the database lacks is simply absent
    (e.g. thumbnail_storage_schema_version before 4.6) and reads as NULL. With `since`,
    attachments not updated since are left out. `hidden` says which media Mastodon has
    made private.
    """
    found: list[MediaObject] = []
    record_id = row["id"]
    remote = is_remote(object_type, row)
    partition = id_partition(record_id)
    type_name = object_type.name
    privacy = object_type.privacy
    private = privacy == PRIVATE or (privacy == PRIVATE_IF_HIDDEN and bool(hidden) and hidden.hides(row))
    for att in object_type.attachments:
        original = row.get(att.file_name)
        if not original:
            continue  # NULL or empty: nothing was stored (or the remote cache was cleared)
        if since is not None and not updated_since(att, row, since):
            continue
        cache = "cache/" if remote and (row.get(att.schema_version) or 0) >= 1 else ""
        folder = f"{cache}{att.path}/{partition}/"
        content_type = row.get(att.content_type)
        size = row.get(att.file_size)
        found.append(_make((type_name, record_id, att.name, "original", f"{folder}original/{original}",
                            size, content_type, private, None, size or 0)))
        styles = att.styles(row)
        if not styles:
            continue
        derived_estimate = min(size or 0, DERIVED_ESTIMATE)
        base, ext = _split_name(original)  # style_file_name, split once for all the styles
        for style in styles:
            fallback = None
            if style.fallback_format is not None:
                fallback = f"{folder}{style.name}/{_styled(base, ext, style.fallback_format)}"
            found.append(_make((type_name, record_id, att.name, style.name,
                                f"{folder}{style.name}/{_styled(base, ext, style.format)}",
                                None, content_type, private, fallback, derived_estimate)))
    return found


# The type of a derived style's file by its format, where it differs from the original's.
FORMAT_TYPES = {"png": "image/png", "jpeg": "image/jpeg", "jpg": "image/jpeg", "gif": "image/gif",
                "webp": "image/webp", "avif": "image/avif"}


def likely_content_type(obj: MediaObject) -> str | None:
    """What the row says an object is, for when its bytes say nothing (a folder source):
    the original's content type, or the type of a derived style's format (a video's small
    is a PNG)."""
    if obj.style != "original":
        extension = obj.key.rpartition("/")[2].rpartition(".")[2].lower()
        if extension in FORMAT_TYPES:
            return FORMAT_TYPES[extension]
    return obj.content_type


def file_mode(obj: MediaObject) -> int:
    """The mode Mastodon's local storage gives the file: 0600 for media it has hidden (a
    suspended account's, a removed post's: UpdateMediaAttachmentsPermissionsService), so
    that the web server no longer serves it; 0644 for the rest, backups included (their
    download links are served from the folder)."""
    hidden = obj.private and TYPES[obj.type].privacy == PRIVATE_IF_HIDDEN
    return 0o600 if hidden else 0o644


def kept_from_public(obj: MediaObject, folder: bool) -> bool:
    """Whether Mastodon keeps the object from the public: in a bucket, what it writes private;
    in a folder, what it gives mode 0600 (hidden media only: a backup's file is served, its
    link being the secret)."""
    return not file_mode(obj) & 0o004 if folder else obj.private


_ATTACHMENT_PATHS = {(t.name, a.name): a.path for t in TYPES.values() for a in t.attachments}


def partition_root(obj: MediaObject) -> str:
    """The key prefix up to the id partition, e.g. "cache/accounts/avatars/": every object
    of a batch of records under it sits in one narrow key range (one listing)."""
    cache = "cache/" if obj.key.startswith("cache/") else ""
    return f"{cache}{_ATTACHMENT_PATHS[obj.type, obj.attachment]}/"


_KEY = re.compile(r"^(?:cache/)?(?P<path>[a-z_]+/[a-z_]+)/(?P<partition>\d{3}(?:/\d{3})+)/[^/]+/[^/]+$")
_TYPE_OF_PATH = {a.path: t.name for t in TYPES.values() for a in t.attachments}


def record_of_key(key: str) -> tuple[str, int] | None:
    """(type, record id) of a key Mastodon could have written (the inverse of the layout's
    rule), or None: a key no record can own, an orphan whatever the database says."""
    found = _KEY.match(key)
    if found is None or found["path"] not in _TYPE_OF_PATH:
        return None
    return _TYPE_OF_PATH[found["path"]], int(found["partition"].replace("/", ""))
