"""Mastodon's storage rules (shared/mastodon-storage.md), one table-driven test per rule."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest

from mastosync.mastodon import layout

MEDIA = layout.TYPES["media_attachments"]
ACCOUNTS = layout.TYPES["accounts"]
EMOJIS = layout.TYPES["custom_emojis"]
CARDS = layout.TYPES["preview_cards"]
SITE = layout.TYPES["site_uploads"]
BACKUPS = layout.TYPES["backups"]
PROVIDERS = layout.TYPES["preview_card_providers"]
IMPORTS = layout.TYPES["imports"]


def keys(object_type: layout.ObjectType, row: dict[str, Any], since: datetime | None = None) -> list[str]:
    return [o.key for o in layout.objects_of(object_type, row, since)]


@pytest.mark.parametrize(
    "record_id,partition",
    [
        (1, "000/000/001"),
        (1234, "000/001/234"),
        (999_999_999, "999/999/999"),
        (1_000_000_000, "001/000/000/000"),  # 10 digits: padded to 12
        (12_345_678_901, "012/345/678/901"),  # 11 digits
        (123_456_789_012, "123/456/789/012"),  # 12 digits
        (1_234_567_890_123, "123/456/789/012"),  # 13 digits: trailing "3" dropped
        (12_345_678_901_234_567, "123/456/789/012/345"),  # 17 digits: last two dropped
        (105_105_582_134_970_663, "105/105/582/134/970/663"),  # 18-digit snowflake
        (9_223_372_036_854_775_807, "922/337/203/685/477/580"),  # bigint max: 19 digits, "7" dropped
    ],
)
def test_id_partition(record_id: int, partition: str) -> None:
    assert layout.id_partition(record_id) == partition


def media(content_type: str, name: str = "abcdef0123456789.png", **extra: Any) -> dict[str, Any]:
    return {"id": 105105582134970663, "remote_url": "", "file_file_name": name,
            "file_content_type": content_type, **extra}


P = "media_attachments/files/105/105/582/134/970/663"


@pytest.mark.parametrize(
    "content_type,name,expected",
    [
        ("image/jpeg", "a1.jpg", ["original/a1.jpg", "small/a1.jpg"]),
        ("image/png", "a1.png", ["original/a1.png", "small/a1.png"]),
        ("image/webp", "a1.webp", ["original/a1.webp", "small/a1.webp"]),
        ("image/heic", "a1.heic", ["original/a1.heic", "small/a1.jpeg"]),
        ("image/heif", "a1.heif", ["original/a1.heif", "small/a1.jpeg"]),
        # A row still saying image/avif was processed by 4.0/4.1 (4.2+ converts to JPEG and
        # says image/jpeg): its small kept the extension.
        ("image/avif", "a1.avif", ["original/a1.avif", "small/a1.avif"]),
        ("image/gif", "a1.gif", ["original/a1.gif", "small/a1.png"]),
        ("video/webm", "a1.webm", ["original/a1.webm", "small/a1.png"]),
        ("video/quicktime", "a1.mov", ["original/a1.mov", "small/a1.png"]),
        ("video/mp4", "a1.mp4", ["original/a1.mp4", "small/a1.png"]),
        ("video/ogg", "a1.ogv", ["original/a1.ogv", "small/a1.png"]),
        ("audio/mpeg", "a1.mp3", ["original/a1.mp3"]),
        ("audio/ogg", "a1.ogg", ["original/a1.ogg"]),
        ("application/octet-stream", "a1.bin", ["original/a1.bin"]),
        (None, "a1.bin", ["original/a1.bin"]),
    ],
)
def test_media_styles_by_content_type(content_type: str, name: str, expected: list[str]) -> None:
    assert keys(MEDIA, media(content_type, name)) == [f"{P}/{k}" for k in expected]


def test_media_thumbnail_is_original_only() -> None:
    row = media("audio/mpeg", "a.mp3", thumbnail_file_name="t.jpg", thumbnail_content_type="image/jpeg")
    assert keys(MEDIA, row) == [f"{P}/original/a.mp3",
                                "media_attachments/thumbnails/105/105/582/134/970/663/original/t.jpg"]


def test_media_objects_carry_database_claims() -> None:
    row = media("image/png", "x.png", file_file_size=1234)
    original, small = layout.objects_of(MEDIA, row)
    assert (original.style, original.size, original.content_type, original.attachment) == \
        ("original", 1234, "image/png", "file")
    assert (small.style, small.size) == ("small", None)


@pytest.mark.parametrize(
    "content_type,expected",
    [("image/gif", ["original/a.gif", "static/a.png"]), ("image/png", ["original/a.gif"]),
     ("image/jpeg", ["original/a.gif"])],
)
@pytest.mark.parametrize("attachment,path", [("avatar", "accounts/avatars"), ("header", "accounts/headers")])
def test_account_static_only_for_gif(attachment: str, path: str, content_type: str, expected: list[str]) -> None:
    row = {"id": 7, "domain": None, f"{attachment}_file_name": "a.gif",
           f"{attachment}_content_type": content_type}
    assert keys(ACCOUNTS, row) == [f"{path}/000/000/007/{k}" for k in expected]


@pytest.mark.parametrize("content_type", ["image/png", "image/gif", None])
def test_emoji_always_has_static_png(content_type: str | None) -> None:
    row = {"id": 42, "domain": None, "image_file_name": "blobcat.png", "image_content_type": content_type}
    assert keys(EMOJIS, row) == ["custom_emojis/images/000/000/042/original/blobcat.png",
                                 "custom_emojis/images/000/000/042/static/blobcat.png"]


def test_preview_card_is_always_remote() -> None:
    row = {"id": 3, "image_file_name": "c.jpg", "image_storage_schema_version": 1}
    assert keys(CARDS, row) == ["cache/preview_cards/images/000/000/003/original/c.jpg"]
    row["image_storage_schema_version"] = None
    assert keys(CARDS, row) == ["preview_cards/images/000/000/003/original/c.jpg"]


@pytest.mark.parametrize(
    "remote_url,schema,cached",
    [
        ("https://remote.example/a.png", 1, True),  # remote, schema 1
        ("https://remote.example/a.png", 2, True),  # any version >= 1
        ("https://remote.example/a.png", None, False),  # remote, never moved: NULL counts as 0
        ("https://remote.example/a.png", 0, False),
        ("", 1, False),  # local with schema 1
        ("   ", 1, False),  # whitespace-only remote_url is blank: local
        ("\t\n", 1, False),
        (None, 1, False),
    ],
)
def test_media_cache_prefix(remote_url: str | None, schema: int | None, cached: bool) -> None:
    row = media("audio/mpeg", "a.mp3", remote_url=remote_url, file_storage_schema_version=schema)
    prefix = "cache/" if cached else ""
    assert keys(MEDIA, row) == [f"{prefix}{P}/original/a.mp3"]


@pytest.mark.parametrize(
    "domain,schema,cached",
    [("remote.example", 1, True), ("remote.example", None, False), (None, 1, False)],
)
def test_account_and_emoji_cache_prefix(domain: str | None, schema: int | None, cached: bool) -> None:
    prefix = "cache/" if cached else ""
    acct = {"id": 1, "domain": domain, "avatar_file_name": "a.png", "avatar_content_type": "image/png",
            "avatar_storage_schema_version": schema}
    assert keys(ACCOUNTS, acct) == [f"{prefix}accounts/avatars/000/000/001/original/a.png"]
    emoji = {"id": 1, "domain": domain, "image_file_name": "e.png", "image_storage_schema_version": schema}
    assert keys(EMOJIS, emoji)[0] == f"{prefix}custom_emojis/images/000/000/001/original/e.png"


def test_each_attachment_uses_its_own_schema_version() -> None:
    row = {"id": 1, "domain": "remote.example", "avatar_file_name": "a.png", "avatar_storage_schema_version": 1,
           "header_file_name": "h.png", "header_storage_schema_version": None}
    assert keys(ACCOUNTS, row) == ["cache/accounts/avatars/000/000/001/original/a.png",
                                   "accounts/headers/000/000/001/original/h.png"]


def test_remote_thumbnail_with_and_without_the_4_6_column() -> None:
    row = media("video/mp4", "v.mp4", remote_url="https://r.example/v.mp4", file_storage_schema_version=1,
                thumbnail_file_name="t.png")
    thumb = "media_attachments/thumbnails/105/105/582/134/970/663/original/t.png"
    # 4.2: no thumbnail_storage_schema_version column, so the thumbnail never gets cache/
    assert keys(MEDIA, row)[-1] == thumb
    # 4.6: the column decides
    assert keys(MEDIA, {**row, "thumbnail_storage_schema_version": 1})[-1] == "cache/" + thumb
    assert keys(MEDIA, {**row, "thumbnail_storage_schema_version": None})[-1] == thumb
    assert keys(MEDIA, row)[0].startswith("cache/media_attachments/files/")


@pytest.mark.parametrize("name", [None, ""])
def test_no_file_name_means_no_objects(name: str | None) -> None:
    assert keys(MEDIA, media("image/png", name)) == []  # type: ignore[arg-type]
    assert keys(ACCOUNTS, {"id": 1, "domain": None, "avatar_file_name": name, "header_file_name": name}) == []
    assert keys(EMOJIS, {"id": 1, "domain": None, "image_file_name": name}) == []
    assert keys(CARDS, {"id": 1, "image_file_name": name}) == []


@pytest.mark.parametrize(
    "name,small",
    [
        ("my holiday photo.jpg", "my holiday photo.jpg"),
        ("Ünïcödé 写真.png", "Ünïcödé 写真.png"),
        ("a+b=c.png", "a+b=c.png"),
        ("user@host.png", "user@host.png"),
        ("it's (1).png", "it's (1).png"),
        ("archive.tar.png", "archive.tar.png"),
        ("noext", "noext"),
        (".png", ".png"),
    ],
)
def test_odd_file_names_are_kept_byte_for_byte(name: str, small: str) -> None:
    assert keys(MEDIA, media("image/png", name)) == [f"{P}/original/{name}", f"{P}/small/{small}"]


@pytest.mark.parametrize(
    "name,expected",
    [("photo.gif", "photo.png"), ("weird name (1).gif", "weird name (1).png"), ("a.b.c.gif", "a.b.c.png"),
     ("noext", "noext.png"), (".gif", ".gif.png"), ("trailing.", "trailing.png")],
)
def test_derived_file_name_replaces_last_extension(name: str, expected: str) -> None:
    assert layout.style_file_name(name, layout.STATIC_PNG) == expected


def test_since_selects_attachments_updated_at_or_after() -> None:
    row = media("audio/mpeg", "a.mp3", file_updated_at=datetime(2026, 5, 1, 12),
                thumbnail_file_name="t.png", thumbnail_updated_at=datetime(2026, 4, 1))
    assert len(keys(MEDIA, row, since=datetime(2026, 5, 1, 12))) == 1  # at: included
    assert keys(MEDIA, row, since=datetime(2026, 5, 1, 12, 0, 1)) == []
    assert len(keys(MEDIA, row, since=datetime(2026, 3, 1))) == 2


@pytest.mark.parametrize(
    "prefix,expected",
    [
        ("", "accounts/avatars/000/000/001/original/a.png"),  # S3_KEY_PREFIX unset
        ("mastodon", "mastodon/accounts/avatars/000/000/001/original/a.png"),
        # Mastodon builds S3_KEY_PREFIX + "/" + path verbatim: a trailing slash doubles
        ("mastodon/", "mastodon//accounts/avatars/000/000/001/original/a.png"),
        ("a/b", "a/b/accounts/avatars/000/000/001/original/a.png"),
        # kt-paperclip drops one leading "/" only
        ("/mastodon", "mastodon/accounts/avatars/000/000/001/original/a.png"),
        ("//m", "/m/accounts/avatars/000/000/001/original/a.png"),
        ("/", "/accounts/avatars/000/000/001/original/a.png"),
    ],
)
def test_key_prefix_exactly_as_mastodon_writes_it(prefix: str, expected: str) -> None:
    (obj,) = layout.objects_of(ACCOUNTS, {"id": 1, "domain": None, "avatar_file_name": "a.png"})
    assert layout.full_key(prefix, obj.key) == expected
    assert layout.full_key(prefix, "cache/x") == expected.replace("accounts/avatars/000/000/001/original/a.png",
                                                                  "cache/x")


# -- site uploads, backups, provider icons, imports --------------------------------------

APP_ICON_SIZES = ["57", "60", "72", "76", "114", "120", "144", "152", "167", "180", "1024",
                  "36", "48", "96", "192", "256", "384", "512"]


@pytest.mark.parametrize(
    "var,name,expected",
    [
        ("thumbnail", "0123456789abcdef.jpg",
         ["original/0123456789abcdef.jpg", "@1x/0123456789abcdef.png", "@2x/0123456789abcdef.png"]),
        ("mascot", "0123456789abcdef.gif", ["original/0123456789abcdef.gif"]),
        ("favicon", "0123456789abcdef.ico",
         ["original/0123456789abcdef.ico", "16/0123456789abcdef.png", "32/0123456789abcdef.png",
          "48/0123456789abcdef.png"]),
        ("app_icon", "0123456789abcdef.png",
         ["original/0123456789abcdef.png"] + [f"{n}/0123456789abcdef.png" for n in APP_ICON_SIZES]),
        ("something_new", "x.png", ["original/x.png"]),  # STYLES[var] is nil: no styles
        ("", "x.png", ["original/x.png"]),
    ],
)
def test_site_upload_styles_by_var(var: str, name: str, expected: list[str]) -> None:
    row = {"id": 12, "var": var, "file_file_name": name, "file_content_type": "image/png"}
    assert keys(SITE, row) == [f"site_uploads/files/000/000/012/{k}" for k in expected]


def test_app_icon_has_eighteen_sizes() -> None:
    row = {"id": 1, "var": "app_icon", "file_file_name": "i.png"}
    assert len(keys(SITE, row)) == 19


@pytest.mark.parametrize(
    "object_type,row,expected",
    [
        (BACKUPS, {"id": 5, "dump_file_name": "archive-20260110080000-0123456789abcdef0123456789abcdef.zip"},
         ["backups/dumps/000/000/005/original/archive-20260110080000-0123456789abcdef0123456789abcdef.zip"]),
        (PROVIDERS, {"id": 7, "icon_file_name": "favicon.ico", "icon_content_type": "image/x-icon"},
         ["preview_card_providers/icons/000/000/007/original/favicon.ico",
          "preview_card_providers/icons/000/000/007/static/favicon.png"]),
        (IMPORTS, {"id": 3, "data_file_name": "following_accounts.csv"},
         ["imports/data/000/000/003/original/following_accounts.csv"]),
        (BACKUPS, {"id": 6, "dump_file_name": None}, []),
        (PROVIDERS, {"id": 8, "icon_file_name": ""}, []),
    ],
)
def test_backups_providers_imports(object_type: layout.ObjectType, row: dict[str, Any],
                                   expected: list[str]) -> None:
    assert keys(object_type, row) == expected


@pytest.mark.parametrize("object_type,attachment", [(SITE, "file"), (BACKUPS, "dump"), (PROVIDERS, "icon"),
                                                    (IMPORTS, "data")])
def test_new_types_never_use_cache(object_type: layout.ObjectType, attachment: str) -> None:
    row = {"id": 1, "domain": "remote.example", "remote_url": "https://r.example/x", "var": "mascot",
           f"{attachment}_file_name": "x.png", f"{attachment}_storage_schema_version": 1}
    assert not any(k.startswith("cache/") for k in keys(object_type, row))


# -- what Mastodon keeps private ---------------------------------------------------------

HIDDEN = layout.Hidden(suspended_accounts=frozenset({77}), discarded_statuses=frozenset({900}))


@pytest.mark.parametrize(
    "object_type,row,private",
    [
        (BACKUPS, {"id": 1, "dump_file_name": "a.zip"}, True),
        (IMPORTS, {"id": 1, "data_file_name": "a.csv"}, True),
        (MEDIA, {"id": 1, "file_file_name": "a.mp3", "account_id": 77, "status_id": 1}, True),  # suspended
        (MEDIA, {"id": 1, "file_file_name": "a.mp3", "account_id": 5, "status_id": 900}, True),  # post removed
        (MEDIA, {"id": 1, "file_file_name": "a.mp3", "account_id": 5, "status_id": 901}, False),
        (MEDIA, {"id": 1, "file_file_name": "a.mp3", "account_id": None, "status_id": None}, False),
        (ACCOUNTS, {"id": 77, "domain": None, "avatar_file_name": "a.png"}, False),  # avatars stay public
        (SITE, {"id": 1, "var": "mascot", "file_file_name": "a.png"}, False),
        (PROVIDERS, {"id": 1, "icon_file_name": "a.ico"}, False),
        (EMOJIS, {"id": 1, "domain": None, "image_file_name": "a.png"}, False),
        (CARDS, {"id": 1, "image_file_name": "a.png"}, False),
    ],
)
def test_private_objects(object_type: layout.ObjectType, row: dict[str, Any], private: bool) -> None:
    objects = layout.objects_of(object_type, row, hidden=HIDDEN)
    assert objects and all(o.private == private for o in objects)


def test_media_thumbnail_of_hidden_media_is_private_too() -> None:
    row = {"id": 1, "file_file_name": "v.mp4", "file_content_type": "video/mp4", "thumbnail_file_name": "t.png",
           "account_id": 77}
    assert [(o.style, o.attachment, o.private) for o in layout.objects_of(MEDIA, row, hidden=HIDDEN)] == [
        ("original", "file", True), ("small", "file", True), ("original", "thumbnail", True)]


# -- keys an older Mastodon wrote elsewhere ----------------------------------------------

def test_gif_small_falls_back_to_the_gif_of_mastodon_2_9() -> None:
    original, small = layout.objects_of(MEDIA, media("image/gif", "anim.gif"))
    assert small.key == f"{P}/small/anim.png"
    assert small.fallback == f"{P}/small/anim.gif"
    assert original.fallback is None


@pytest.mark.parametrize("content_type", ["image/png", "video/mp4", "image/heic", "image/avif"])
def test_only_gif_smalls_have_a_fallback(content_type: str) -> None:
    assert all(o.fallback is None for o in layout.objects_of(MEDIA, media(content_type, "a.x")))


# -- --since and `tootctl upgrade storage-schema` ----------------------------------------

T0, T1, T2 = datetime(2026, 1, 1), datetime(2026, 5, 1), datetime(2026, 6, 1)


@pytest.mark.parametrize(
    "file_updated,row_updated,schema,selected",
    [
        (T2, T0, 1, True),  # a new file
        (T0, T2, 1, True),  # moved under cache/ by upgrade storage-schema: the row was saved
        (T0, T2, None, False),  # row saved for another reason, never moved: files unchanged
        (T0, T2, 0, False),
        (T0, T0, 1, False),
        (None, T2, 1, True),
        (T1, T0, None, True),  # at `since`: included
    ],
)
def test_since_covers_files_moved_by_upgrade_storage_schema(file_updated: datetime | None, row_updated: datetime,
                                                            schema: int | None, selected: bool) -> None:
    row = {"id": 1, "domain": "remote.example", "avatar_file_name": "a.png", "avatar_updated_at": file_updated,
           "avatar_storage_schema_version": schema, "updated_at": row_updated}
    assert bool(keys(ACCOUNTS, row, since=T1)) == selected
