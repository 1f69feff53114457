"""What happened to one object: the status a command's step ends in, and its details."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Status(enum.StrEnum):
    """An object's outcome; the value is what the report and the JSON summary say."""

    # run
    COPIED = "copied"
    SKIPPED = "skipped"  # the destination has it with the source's size: no data moved
    MISSING = "missing"  # the source lacks it (the database references it all the same)
    FAILED = "failed"
    # verify
    OK = "ok"
    ABSENT = "absent"  # the destination lacks it
    DIFFERENT = "different"  # another size at the destination
    ERROR = "error"  # could not be checked


class Proof(enum.StrEnum):
    """How the content of a copied object was proven equal to the source's."""

    MD5 = "md5"  # the MD5 of the bytes is the source's (single-part) ETag
    MULTIPART = "multipart-etag"  # the source's multipart ETag, recomputed from the bytes
    SERVER = "server-side"  # copied by the provider itself
    TRANSFER = "transfer"  # only that the destination got the bytes as read (ETag no MD5)
    WRITTEN = "written"  # a folder destination checks no Content-MD5: the bytes as read, written


@dataclass(slots=True)
class Outcome:
    """The result of one object: status, bytes moved, attempts made, the last error, the proof."""

    status: Status
    bytes: int = 0
    attempts: int = 1
    error: str | None = None
    proof: Proof | None = None  # for COPIED
    size: int = 0  # the object's size when known (copied: the bytes moved; skipped: the source's)
    retries: int = 0  # requests retried for it, whole copies and single requests alike
    note: str | None = None  # something worth recording about a success (why the proof is weak)
