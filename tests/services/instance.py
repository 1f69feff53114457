"""A small Mastodon-shaped instance: rows for every table with files and the objects they reference.

Every case of shared/mastodon-storage.md is here once: old and snowflake ids, every
media family, GIF avatars, emoji statics, preview cards, site uploads of each `var`,
backups, provider icons, imports (the "4.2" shape), cache/ and non-cache remote rows,
files moved by `tootctl upgrade storage-schema`, NULL file rows, odd file names, a large
video, a GIF small where Mastodon 2.9 put it, media Mastodon made private (suspended
account, removed post), objects the database references but the bucket lacks, and
orphans the database does not reference. The expected keys are written out by hand,
not computed by mastosync's layout code.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

CC = "public, max-age=315576000, immutable"
OLD_CC = "max-age=315576000"
SNOW = 105105582134970663  # an 18-digit snowflake id
SNOW_P = "105/105/582/134/970/663"
T_OLD = datetime(2026, 1, 10, 8, 0)
T_NEW = datetime(2026, 6, 1, 12, 0)

MAGIC = {"image/jpeg": b"\xff\xd8\xff\xe0", "image/png": b"\x89PNG\r\n\x1a\n", "image/gif": b"GIF89a",
         "image/webp": b"RIFF\x00\x00\x00\x00WEBP", "video/mp4": b"\x00\x00\x00\x18ftypmp42",
         "audio/mpeg": b"ID3\x03", "image/heic": b"\x00\x00\x00\x18ftypheic", "image/avif": b"\x00\x00\x00\x1cftypavif",
         "application/zip": b"PK\x03\x04", "image/vnd.microsoft.icon": b"\x00\x00\x01\x00",
         "image/x-icon": b"\x00\x00\x01\x00"}
# What libmagic (Paperclip) says of those bytes where the stored Content-Type says otherwise:
# the type a copy from a folder, which has no stored type, must send.
SNIFFED = {"image/x-icon": "image/vnd.microsoft.icon"}


def body(key: str, size: int, content_type: str) -> bytes:
    """Deterministic bytes for a key, starting with the magic of its real content type."""
    head = MAGIC.get(content_type, b"")
    seed = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big")
    return (head + random.Random(seed).randbytes(max(0, size - len(head))))[:size]


@dataclass
class Obj:
    key: str
    type: str
    id: int
    content_type: str
    size: int
    cache_control: str = CC
    present: bool = True  # False: the database references it but the source lacks it
    updated_at: datetime = T_OLD
    local: bool = True
    private: bool = False  # Mastodon keeps it private: it must not be written public
    computed_key: str | None = None  # the key the layout computes, when the file sits elsewhere

    @property
    def data(self) -> bytes:
        return body(self.key, self.size, self.content_type)


@dataclass
class Instance:
    rows: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    objects: list[Obj] = field(default_factory=list)
    orphans: list[str] = field(default_factory=list)

    def expected(self, present: bool | None = True) -> dict[str, Obj]:
        """The keys as stored at the source (and so at the destination after a copy)."""
        return {o.key: o for o in self.objects if present is None or o.present == present}

    def computed(self) -> dict[str, Obj]:
        """The keys `dry-run` prints: the computed key even where the file sits at a fallback."""
        return {o.computed_key or o.key: o for o in self.objects}


# Just over one 5 MiB part: a multipart copy where the config says so, without moving 40 MiB.
def build(shape: str = "4.6", video_size: int = 6 * 1024 * 1024) -> Instance:
    inst = Instance()
    media: list[dict[str, Any]] = []
    inst.rows["media_attachments"] = media

    def add(type_: str, rid: int, key: str, ct: str, size: int = 3000, **kw: Any) -> None:
        inst.objects.append(Obj(key, type_, rid, ct, size, **kw))

    def m(rid: int, name: str | None, ct: str | None, *, remote_url: str = "", schema: int | None = 1,
          size: int = 3000, updated: datetime = T_OLD, updated_at: datetime | None = None,
          **extra: Any) -> dict[str, Any]:
        row = {"id": rid, "remote_url": remote_url, "file_file_name": name, "file_content_type": ct,
               "file_file_size": size if name else None, "file_updated_at": updated if name else None,
               "file_storage_schema_version": schema, "updated_at": updated_at or updated, **extra}
        media.append(row)
        return row

    mp = "media_attachments/files"
    # old three-group id, local JPEG: original + small with the same extension
    m(1, "0123456789abcdef.jpg", "image/jpeg")
    add("media_attachments", 1, f"{mp}/000/000/001/original/0123456789abcdef.jpg", "image/jpeg")
    add("media_attachments", 1, f"{mp}/000/000/001/small/0123456789abcdef.jpg", "image/jpeg", 900,
        cache_control=OLD_CC)
    # snowflake, PNG, updated recently (for --since)
    m(SNOW, "aaaa.png", "image/png", updated=T_NEW)
    add("media_attachments", SNOW, f"{mp}/{SNOW_P}/original/aaaa.png", "image/png", updated_at=T_NEW)
    add("media_attachments", SNOW, f"{mp}/{SNOW_P}/small/aaaa.png", "image/png", 800, updated_at=T_NEW)
    # webp; heic gets a JPEG small; a row still saying image/avif was processed by 4.0/4.1: .avif small
    m(SNOW + 1, "b.webp", "image/webp")
    add("media_attachments", SNOW + 1, f"{mp}/105/105/582/134/970/664/original/b.webp", "image/webp")
    add("media_attachments", SNOW + 1, f"{mp}/105/105/582/134/970/664/small/b.webp", "image/webp", 700)
    m(SNOW + 2, "c.heic", "image/heic")
    add("media_attachments", SNOW + 2, f"{mp}/105/105/582/134/970/665/original/c.heic", "image/heic")
    add("media_attachments", SNOW + 2, f"{mp}/105/105/582/134/970/665/small/c.jpeg", "image/jpeg", 600)
    m(SNOW + 3, "d.avif", "image/avif")
    add("media_attachments", SNOW + 3, f"{mp}/105/105/582/134/970/666/original/d.avif", "image/avif")
    add("media_attachments", SNOW + 3, f"{mp}/105/105/582/134/970/666/small/d.avif", "image/avif", 600)
    inst.orphans.append(f"{mp}/105/105/582/134/970/666/small/d.jpeg")
    # GIF: small is a PNG key that holds GIF bytes (static GIF), Content-Type image/gif
    m(SNOW + 4, "e.gif", "image/gif")
    add("media_attachments", SNOW + 4, f"{mp}/105/105/582/134/970/667/original/e.gif", "image/gif")
    add("media_attachments", SNOW + 4, f"{mp}/105/105/582/134/970/667/small/e.png", "image/gif", 500)
    # a large video with a custom thumbnail: multipart path
    m(SNOW + 5, "f.mp4", "video/mp4", size=video_size, thumbnail_file_name="f-thumb.jpg",
      thumbnail_content_type="image/jpeg", thumbnail_file_size=2000, thumbnail_updated_at=T_OLD)
    add("media_attachments", SNOW + 5, f"{mp}/105/105/582/134/970/668/original/f.mp4", "video/mp4", video_size)
    add("media_attachments", SNOW + 5, f"{mp}/105/105/582/134/970/668/small/f.png", "image/png", 1500)
    add("media_attachments", SNOW + 5,
        "media_attachments/thumbnails/105/105/582/134/970/668/original/f-thumb.jpg", "image/jpeg", 2000)
    # audio: original only
    m(SNOW + 6, "g.mp3", "audio/mpeg", size=5000)
    add("media_attachments", SNOW + 6, f"{mp}/105/105/582/134/970/669/original/g.mp3", "audio/mpeg", 5000)
    # remote, schema 1: under cache/
    m(SNOW + 7, "h.jpg", "image/jpeg", remote_url="https://remote.example/h.jpg")
    add("media_attachments", SNOW + 7, f"cache/{mp}/105/105/582/134/970/670/original/h.jpg", "image/jpeg",
        local=False)
    add("media_attachments", SNOW + 7, f"cache/{mp}/105/105/582/134/970/670/small/h.jpg", "image/jpeg", 500,
        local=False)
    # remote, NULL schema (stored before 3.1.4, never moved): no cache/
    m(SNOW + 8, "i.png", "image/png", remote_url="https://remote.example/i.png", schema=None)
    add("media_attachments", SNOW + 8, f"{mp}/105/105/582/134/970/671/original/i.png", "image/png", local=False)
    add("media_attachments", SNOW + 8, f"{mp}/105/105/582/134/970/671/small/i.png", "image/png", 500,
        local=False)
    # remote whose cache was cleared: row kept, file columns NULL → nothing to copy
    m(SNOW + 9, None, None, remote_url="https://remote.example/gone.png")
    # whitespace-only remote_url is blank: local, no cache/ even with schema 1
    m(SNOW + 10, "j.mp3", "audio/mpeg", remote_url="   ")
    add("media_attachments", SNOW + 10, f"{mp}/105/105/582/134/970/673/original/j.mp3", "audio/mpeg")
    # an old upload with a user's own file name
    odd = "My holiday (1) +été@home 'best'.jpg"
    m(2, odd, "image/jpeg")
    add("media_attachments", 2, f"{mp}/000/000/002/original/{odd}", "image/jpeg")
    add("media_attachments", 2, f"{mp}/000/000/002/small/{odd}", "image/jpeg", 400)
    # remote video with a remote thumbnail: cache/ for the thumbnail only on 4.6
    thumb_extra: dict[str, Any] = {"thumbnail_file_name": "k-t.png", "thumbnail_content_type": "image/png",
                                   "thumbnail_file_size": 900, "thumbnail_updated_at": T_OLD}
    if shape == "4.6":
        thumb_extra["thumbnail_storage_schema_version"] = 1
    m(SNOW + 11, "k.mp3", "audio/mpeg", remote_url="https://remote.example/k.mp3", **thumb_extra)
    add("media_attachments", SNOW + 11, f"cache/{mp}/105/105/582/134/970/674/original/k.mp3", "audio/mpeg",
        local=False)
    thumb_key = "media_attachments/thumbnails/105/105/582/134/970/674/original/k-t.png"
    add("media_attachments", SNOW + 11, ("cache/" if shape == "4.6" else "") + thumb_key, "image/png", 900,
        local=False)
    # an original the bucket lost
    m(SNOW + 12, "lost.jpg", "image/jpeg")
    add("media_attachments", SNOW + 12, f"{mp}/105/105/582/134/970/675/original/lost.jpg", "image/jpeg",
        present=False)
    add("media_attachments", SNOW + 12, f"{mp}/105/105/582/134/970/675/small/lost.jpg", "image/jpeg", 300)
    # a zero-byte file
    m(3, "empty.mp3", "audio/mpeg", size=0)
    add("media_attachments", 3, f"{mp}/000/000/003/original/empty.mp3", "audio/mpeg", 0)
    # a GIF from Mastodon 2.9: its small has no format of its own, small/<base>.gif, not .png
    m(4, "old.gif", "image/gif")
    add("media_attachments", 4, f"{mp}/000/000/004/original/old.gif", "image/gif")
    add("media_attachments", 4, f"{mp}/000/000/004/small/old.gif", "image/gif", 700,
        computed_key=f"{mp}/000/000/004/small/old.png")
    # remote, moved under cache/ by `tootctl upgrade storage-schema` after the first run: the
    # row's updated_at is new, file_updated_at is not (--since must still pick it up)
    m(SNOW + 13, "moved.jpg", "image/jpeg", remote_url="https://remote.example/moved.jpg",
      updated_at=T_NEW)
    add("media_attachments", SNOW + 13, f"cache/{mp}/105/105/582/134/970/676/original/moved.jpg", "image/jpeg",
        local=False, updated_at=T_NEW)
    add("media_attachments", SNOW + 13, f"cache/{mp}/105/105/582/134/970/676/small/moved.jpg", "image/jpeg",
        500, local=False, updated_at=T_NEW)
    # a remote row saved recently for another reason, never moved (NULL schema): not "updated since"
    m(SNOW + 14, "still.png", "image/png", remote_url="https://remote.example/still.png", schema=None,
      updated_at=T_NEW)
    add("media_attachments", SNOW + 14, f"{mp}/105/105/582/134/970/677/original/still.png", "image/png",
        local=False)
    add("media_attachments", SNOW + 14, f"{mp}/105/105/582/134/970/677/small/still.png", "image/png", 500,
        local=False)
    # media Mastodon made private: of a suspended account, and of a removed post kept for a report
    m(SNOW + 15, "susp.jpg", "image/jpeg", account_id=SNOW + 4)
    add("media_attachments", SNOW + 15, f"{mp}/105/105/582/134/970/678/original/susp.jpg", "image/jpeg",
        private=True)
    add("media_attachments", SNOW + 15, f"{mp}/105/105/582/134/970/678/small/susp.jpg", "image/jpeg", 400,
        private=True)
    m(SNOW + 16, "removed.png", "image/png", account_id=1, status_id=SNOW + 100)
    add("media_attachments", SNOW + 16, f"{mp}/105/105/582/134/970/679/original/removed.png", "image/png",
        private=True)
    add("media_attachments", SNOW + 16, f"{mp}/105/105/582/134/970/679/small/removed.png", "image/png", 400,
        private=True)
    m(SNOW + 17, "kept.png", "image/png", account_id=1, status_id=SNOW + 101)  # its post is not removed
    add("media_attachments", SNOW + 17, f"{mp}/105/105/582/134/970/680/original/kept.png", "image/png")
    add("media_attachments", SNOW + 17, f"{mp}/105/105/582/134/970/680/small/kept.png", "image/png", 400)
    inst.rows["statuses"] = [
        {"id": SNOW + 100, "account_id": 1, "deleted_at": T_OLD},
        {"id": SNOW + 101, "account_id": 1, "deleted_at": None},
    ]

    # accounts: local PNG avatar + JPEG header; local GIF avatar (static PNG); remote ones
    acc: list[dict[str, Any]] = []
    inst.rows["accounts"] = acc

    def a(rid: int, domain: str | None, avatar: tuple[str, str] | None, header: tuple[str, str] | None,
          schema: int | None = 1, updated: datetime = T_OLD) -> None:
        row: dict[str, Any] = {"id": rid, "username": f"u{rid}", "domain": domain}
        for att, val in (("avatar", avatar), ("header", header)):
            if val:
                row.update({f"{att}_file_name": val[0], f"{att}_content_type": val[1],
                            f"{att}_file_size": 3000, f"{att}_updated_at": updated,
                            f"{att}_storage_schema_version": schema})
        acc.append(row)

    a(1, None, ("av.png", "image/png"), ("hd.jpg", "image/jpeg"), updated=T_NEW)
    add("accounts", 1, "accounts/avatars/000/000/001/original/av.png", "image/png", updated_at=T_NEW)
    add("accounts", 1, "accounts/headers/000/000/001/original/hd.jpg", "image/jpeg", updated_at=T_NEW)
    a(SNOW, None, ("anim.gif", "image/gif"), ("anim-h.gif", "image/gif"))
    add("accounts", SNOW, f"accounts/avatars/{SNOW_P}/original/anim.gif", "image/gif")
    add("accounts", SNOW, f"accounts/avatars/{SNOW_P}/static/anim.png", "image/png", 1000)
    add("accounts", SNOW, f"accounts/headers/{SNOW_P}/original/anim-h.gif", "image/gif")
    add("accounts", SNOW, f"accounts/headers/{SNOW_P}/static/anim-h.png", "image/png", 1000)
    a(SNOW + 1, "remote.example", ("r.gif", "image/gif"), None)
    add("accounts", SNOW + 1, "cache/accounts/avatars/105/105/582/134/970/664/original/r.gif", "image/gif",
        local=False)
    add("accounts", SNOW + 1, "cache/accounts/avatars/105/105/582/134/970/664/static/r.png", "image/png", 900,
        local=False)
    a(SNOW + 2, "old.example", ("o.jpg", "image/jpeg"), None, schema=None)
    add("accounts", SNOW + 2, "accounts/avatars/105/105/582/134/970/665/original/o.jpg", "image/jpeg",
        local=False)
    a(SNOW + 3, None, None, None)  # no files at all
    acc.append({"id": SNOW + 4, "username": "suspended", "domain": None, "suspended_at": T_OLD})

    emojis: list[dict[str, Any]] = []
    inst.rows["custom_emojis"] = emojis
    emojis.append({"id": 1, "shortcode": "blobcat", "domain": None, "image_file_name": "blobcat.png",
                   "image_content_type": "image/png", "image_file_size": 2000, "image_updated_at": T_OLD,
                   "image_storage_schema_version": 1})
    add("custom_emojis", 1, "custom_emojis/images/000/000/001/original/blobcat.png", "image/png", 2000)
    add("custom_emojis", 1, "custom_emojis/images/000/000/001/static/blobcat.png", "image/png", 1500)
    emojis.append({"id": 2, "shortcode": "party", "domain": "remote.example", "image_file_name": "party.gif",
                   "image_content_type": "image/gif", "image_file_size": 2000, "image_updated_at": T_OLD,
                   "image_storage_schema_version": 1})
    add("custom_emojis", 2, "cache/custom_emojis/images/000/000/002/original/party.gif", "image/gif", 2000,
        local=False)
    add("custom_emojis", 2, "cache/custom_emojis/images/000/000/002/static/party.png", "image/png", 1500,
        local=False)

    cards: list[dict[str, Any]] = []
    inst.rows["preview_cards"] = cards
    cards.append({"id": 1, "url": "https://news.example/a", "image_file_name": "card.gif",
                  "image_content_type": "image/gif", "image_file_size": 3000, "image_updated_at": T_OLD,
                  "image_storage_schema_version": 1})
    # a GIF card stored as JPEG bytes under .gif: Content-Type must come from the source object
    add("preview_cards", 1, "cache/preview_cards/images/000/000/001/original/card.gif", "image/jpeg",
        local=False)
    cards.append({"id": 2, "url": "https://news.example/b", "image_file_name": "old-card.png",
                  "image_content_type": "image/png", "image_file_size": 3000, "image_updated_at": T_OLD,
                  "image_storage_schema_version": None})
    add("preview_cards", 2, "preview_cards/images/000/000/002/original/old-card.png", "image/png",
        local=False)
    cards.append({"id": 3, "url": "https://news.example/c", "image_file_name": None})

    # site uploads: styles by `var` (app/models/site_upload.rb), never under cache/
    su = "site_uploads/files"
    uploads: list[dict[str, Any]] = []
    inst.rows["site_uploads"] = uploads

    def site(rid: int, var: str, name: str, ct: str, styles: list[str], missing: tuple[str, ...] = ()) -> None:
        uploads.append({"id": rid, "var": var, "file_file_name": name, "file_content_type": ct,
                        "file_file_size": 3000, "file_updated_at": T_OLD})
        part = f"000/000/{rid:03d}"
        add("site_uploads", rid, f"{su}/{part}/original/{name}", ct)
        base = name.rsplit(".", 1)[0]
        for style in styles:
            add("site_uploads", rid, f"{su}/{part}/{style}/{base}.png", "image/png", 1000,
                present=style not in missing)

    site(1, "thumbnail", "a1b2c3d4e5f60718.jpg", "image/jpeg", ["@1x", "@2x"])
    site(2, "mascot", "mascot.gif", "image/gif", [])
    site(3, "favicon", "fav.ico", "image/vnd.microsoft.icon", ["16", "32", "48"], missing=("48",))
    site(4, "app_icon", "icon.png", "image/png",
         ["57", "60", "72", "76", "114", "120", "144", "152", "167", "180", "1024",
          "36", "48", "96", "192", "256", "384", "512"])
    # backups: private; a backup still being made has no file yet
    inst.rows["backups"] = [
        {"id": 1, "user_id": 1, "dump_file_name": "archive-20260110080000-0123456789abcdef0123456789abcdef.zip",
         "dump_content_type": "application/zip", "dump_file_size": 5000, "dump_updated_at": T_OLD,
         "processed": True},
        {"id": 2, "user_id": 1, "processed": False},
    ]
    add("backups", 1, "backups/dumps/000/000/001/original/"
        "archive-20260110080000-0123456789abcdef0123456789abcdef.zip", "application/zip", 5000, private=True)
    # a provider icon (nothing in Mastodon sets one today, but the column is there)
    inst.rows["preview_card_providers"] = [
        {"id": 1, "domain": "news.example", "icon_file_name": "icon.ico",
         "icon_content_type": "image/x-icon", "icon_file_size": 800, "icon_updated_at": T_OLD},
        {"id": 2, "domain": "other.example"},
    ]
    add("preview_card_providers", 1, "preview_card_providers/icons/000/000/001/original/icon.ico",
        "image/x-icon", 800)
    add("preview_card_providers", 1, "preview_card_providers/icons/000/000/001/static/icon.png", "image/png", 600)
    if shape != "4.6":  # the imports table was dropped in 4.4
        inst.rows["imports"] = [
            {"id": 1, "type": 0, "account_id": 1, "data_file_name": "following_accounts.csv",
             "data_content_type": "text/csv", "data_file_size": 120, "data_updated_at": T_OLD},
        ]
        add("imports", 1, "imports/data/000/000/001/original/following_accounts.csv", "text/csv", 120,
            private=True)

    inst.orphans += [
        f"{mp}/999/999/999/original/orphan.png",
        "cache/accounts/avatars/000/000/099/original/deleted.png",
        "site_uploads/files/000/000/009/original/unrelated.png",
        "backups/dumps/000/000/009/original/archive-20250101000000-ffffffffffffffffffffffffffffffff.zip",
    ]
    _row_saved_with_its_files(inst)
    return inst


def _row_saved_with_its_files(inst: Instance) -> None:
    """Rows' updated_at, as Mastodon leaves it: when the row was last saved (with its newest file)."""
    for rows in inst.rows.values():
        for row in rows:
            stamps = [v for k, v in row.items() if k.endswith("_updated_at") and v is not None]
            row.setdefault("updated_at", max(stamps, default=T_OLD))


async def seed(inst: Instance, db: Any, s3: Any, bucket: str, prefix: str = "") -> None:
    """Insert the rows and upload the present objects (and the orphans) to `bucket`."""
    for table, rows in inst.rows.items():
        await db.insert(table, rows)
    if s3 is None:  # the rows only (the files go to a folder: seed_folder)
        return
    # Mastodon's S3_KEY_PREFIX rule: prefix + "/" + key, one leading "/" dropped.
    full = (lambda k: f"{prefix}/{k}".removeprefix("/")) if prefix else (lambda k: k)
    for obj in inst.objects:
        if obj.present:
            s3.put(bucket, full(obj.key), obj.data, obj.content_type, obj.cache_control,
                   acl="private" if obj.private else "public-read")
    for key in inst.orphans:
        s3.put(bucket, full(key), b"orphan " + key.encode(), "image/png")


def seed_folder(inst: Instance, root: Any) -> None:
    """Write the present objects (and the orphans) as files under `root`, as Mastodon's local
    storage keeps them (public/system): the same relative keys, hidden media mode 0600."""
    from pathlib import Path

    for obj in inst.objects:
        if obj.present:
            path = Path(root) / obj.key
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(obj.data)
            path.chmod(0o600 if obj.private and obj.type == "media_attachments" else 0o644)
    for key in inst.orphans:
        path = Path(root) / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"orphan " + key.encode())


def add_bulk(inst: Instance, media: int = 0, accounts: int = 0, emojis: int = 0, cards: int = 0,
             start_id: int = 200_000_000_000_000_000) -> None:
    """Ordinary records in bulk (snowflake media and accounts, sequential emojis and cards)."""
    rng = random.Random(7)
    for n in range(media):
        rid = start_id + n * 4_194_304
        remote = n % 5 == 0
        ext, ct = (("png", "image/png") if n % 3 else ("jpg", "image/jpeg"))
        name = f"{rid:x}.{ext}"
        size = int(rng.lognormvariate(10.5, 1.0)) + 100
        inst.rows["media_attachments"].append({
            "id": rid, "remote_url": f"https://remote.example/{n}.{ext}" if remote else "",
            "file_file_name": name, "file_content_type": ct, "file_file_size": size,
            "file_updated_at": T_OLD, "file_storage_schema_version": 1, "updated_at": T_OLD})
        digits = f"{rid:018d}"
        part = "/".join(digits[i:i + 3] for i in range(0, 18, 3))
        prefix = "cache/" if remote else ""
        for style, sz in (("original", size), ("small", max(200, size // 8))):
            inst.objects.append(Obj(f"{prefix}media_attachments/files/{part}/{style}/{name}",
                                    "media_attachments", rid, ct, sz, local=not remote))
    for n in range(accounts):
        rid = start_id + 7 + n * 4_194_304
        digits = f"{rid:018d}"
        part = "/".join(digits[i:i + 3] for i in range(0, 18, 3))
        domain = "remote.example" if n % 2 else None
        inst.rows["accounts"].append({
            "id": rid, "username": f"bulk{n}", "domain": domain, "avatar_file_name": f"{n}.png",
            "avatar_content_type": "image/png", "avatar_file_size": 4000, "avatar_updated_at": T_OLD,
            "avatar_storage_schema_version": 1, "updated_at": T_OLD})
        prefix = "cache/" if domain else ""
        inst.objects.append(Obj(f"{prefix}accounts/avatars/{part}/original/{n}.png", "accounts", rid,
                                "image/png", 4000, local=domain is None))
    for n in range(emojis):
        rid = 1000 + n
        inst.rows["custom_emojis"].append({
            "id": rid, "shortcode": f"e{n}", "domain": None, "image_file_name": f"e{n}.png",
            "image_content_type": "image/png", "image_file_size": 1200, "image_updated_at": T_OLD,
            "image_storage_schema_version": 1, "updated_at": T_OLD})
        for style in ("original", "static"):
            inst.objects.append(Obj(f"custom_emojis/images/000/001/{rid % 1000:03d}/{style}/e{n}.png",
                                    "custom_emojis", rid, "image/png", 1200))
    for n in range(cards):
        rid = 1000 + n
        inst.rows["preview_cards"].append({
            "id": rid, "url": f"https://news.example/{n}", "image_file_name": f"c{n}.jpg",
            "image_content_type": "image/jpeg", "image_file_size": 9000, "image_updated_at": T_OLD,
            "image_storage_schema_version": 1, "updated_at": T_OLD})
        inst.objects.append(Obj(f"cache/preview_cards/images/000/001/{rid % 1000:03d}/original/c{n}.jpg",
                                "preview_cards", rid, "image/jpeg", 9000, local=False))
