"""The content type of a file from its first bytes, as Paperclip (libmagic) finds it.

Files in a folder carry no Content-Type; Mastodon's own upload to S3 sends what Paperclip
detected from the bytes, which is not always what the row says: a GIF's small `.png`
made by an old Mastodon holds GIF bytes, a GIF preview card holds a JPEG. So the bytes
decide, and the caller falls back to the row only when no magic number is known.
Only the formats Mastodon accepts or writes are recognised (media_attachment.rb,
account.rb, custom_emoji.rb, site_upload.rb, backup.rb).
"""

from __future__ import annotations

SNIFF_BYTES = 64  # enough for every rule below

# ISO base media (MP4/QuickTime/HEIF/AVIF): the major brand at bytes 8-12 after "ftyp".
_BRANDS = {
    b"avif": "image/avif", b"avis": "image/avif",
    b"heic": "image/heic", b"heix": "image/heic", b"hevc": "image/heic", b"heim": "image/heic",
    b"heis": "image/heic", b"hevm": "image/heic", b"hevs": "image/heic",
    b"mif1": "image/heif", b"msf1": "image/heif",
    b"qt  ": "video/quicktime",
    b"M4A ": "audio/mp4", b"M4B ": "audio/mp4",
    b"3gp4": "video/3gpp", b"3gp5": "video/3gpp", b"3gp6": "video/3gpp", b"3g2a": "video/3gpp2",
}

# (offset, bytes, type), first match wins; the ISO, RIFF, Ogg and MPEG audio rules follow.
_MAGIC = (
    (0, b"\xff\xd8\xff", "image/jpeg"),
    (0, b"\x89PNG\r\n\x1a\n", "image/png"),
    (0, b"GIF87a", "image/gif"),
    (0, b"GIF89a", "image/gif"),
    (0, b"\x00\x00\x01\x00", "image/vnd.microsoft.icon"),  # favicon.ico (site uploads)
    (0, b"BM", "image/bmp"),
    (0, b"fLaC", "audio/flac"),
    (0, b"ID3", "audio/mpeg"),
    (0, b"PK\x03\x04", "application/zip"),  # backups (archive-*.zip)
    (0, b"\x1f\x8b", "application/gzip"),
    (0, b"%PDF-", "application/pdf"),
)


def content_type(head: bytes) -> str | None:
    """The type of a file starting with `head` (its first SNIFF_BYTES), or None if unknown."""
    for offset, magic, found in _MAGIC:
        if head[offset:offset + len(magic)] == magic:
            return found
    if head[4:8] == b"ftyp":
        return _BRANDS.get(head[8:12], "video/mp4")  # isom, mp41, mp42, dash, M4V …
    if head[:4] == b"RIFF":
        kind = head[8:12]
        return {b"WEBP": "image/webp", b"WAVE": "audio/x-wav", b"AVI ": "video/x-msvideo"}.get(kind)
    if head[:4] == b"\x1a\x45\xdf\xa3":  # EBML: WebM or Matroska, by its DocType
        return "video/webm" if b"webm" in head else "video/x-matroska"
    if head[:4] == b"OggS":
        return "video/ogg" if b"theora" in head else "audio/ogg"
    if len(head) >= 2 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0:  # an MPEG audio frame
        return "audio/aac" if head[1] & 0x06 == 0 else "audio/mpeg"  # layer bits 00: ADTS AAC
    return None
