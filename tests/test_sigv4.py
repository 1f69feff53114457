"""Our SigV4 signatures equal botocore's for the same requests (table-driven, no I/O).

The servers in the other suites check signatures too (rclone serve s3 rejects a wrong
one: see test_unreachable_services_fail_up_front in test_run_e2e.py); this pins the algorithm
itself, odd keys and query strings included, against the reference implementation.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

import botocore.auth
import pytest
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials as BotoCredentials

from mastosync.storage.sigv4 import (
    EMPTY_SHA256,
    UNSIGNED_PAYLOAD,
    Credentials,
    Signer,
    canonical_query,
    encode_key,
)

NOW = datetime(2026, 11, 21, 13, 5, 9, tzinfo=UTC)
ODD_KEYS = ["a b/c d.png", "ünï/cödé 写真.jpg", "plus+sign.png", "at@sign.png", "it's.png",
            "(paren) [x].gif", "tilde~and%percent.png", "media_attachments/files/109/000/000/original/x.jpg"]

CASES = [
    # method, key, query, headers, body
    ("GET", "media_attachments/files/1/original/a.jpg", {}, {}, b""),
    ("HEAD", "x.png", {}, {}, b""),
    ("PUT", "x.png", {}, {"content-type": "image/gif", "content-md5": "1B2M2Y8AsgTpgAmY7PhCfg==",
                          "x-amz-acl": "public-read", "cache-control": "public, max-age=315576000, immutable"},
     b"GIF89a" + bytes(100)),
    ("PUT", "v.mp4", {"partNumber": "3", "uploadId": "abc/def+ghi=="}, {"content-md5": "xyz=="}, b"part"),
    ("POST", "v.mp4", {"uploads": ""}, {"x-amz-storage-class": "STANDARD_IA"}, b""),
    ("GET", None, {"list-type": "2", "prefix": "cache/accounts/avatars/", "start-after": "a b+c",
                   "encoding-type": "url", "max-keys": "1000"}, {}, b""),
    ("DELETE", "v.mp4", {"uploadId": "2~x y"}, {}, b""),
] + [("GET", key, {}, {}, b"") for key in ODD_KEYS]


def botocore_authorization(monkeypatch: pytest.MonkeyPatch, method: str, url: str, headers: dict[str, str],
                           body: bytes, credentials: Credentials, region: str, unsigned: bool) -> str:
    monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda: NOW.replace(tzinfo=None))
    request = AWSRequest(method=method, url=url, headers=dict(headers), data=body)
    if unsigned:
        request.context["payload_signing_enabled"] = False
    auth = botocore.auth.S3SigV4Auth(
        BotoCredentials(credentials.access_key, credentials.secret_key, credentials.token or None), "s3", region)
    auth.add_auth(request)
    return str(request.headers["Authorization"])


@pytest.mark.parametrize(("method", "key", "query", "headers", "body"), CASES)
@pytest.mark.parametrize(("origin", "host", "token"), [
    ("http://127.0.0.1:9000", "127.0.0.1:9000", ""),
    ("https://s3.eu-central-1.amazonaws.com", "s3.eu-central-1.amazonaws.com", "session-token/x+y=="),
])
def test_signature_matches_botocore(monkeypatch: pytest.MonkeyPatch, method: str, key: str | None,
                                    query: dict[str, str], headers: dict[str, str], body: bytes,
                                    origin: str, host: str, token: str) -> None:
    credentials = Credentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", token)
    region = "eu-central-1"
    https = origin.startswith("https")
    path = "/bucket-name/" + (encode_key(key) if key is not None else "")
    query_string = canonical_query(query)
    if not body:
        payload = EMPTY_SHA256
    else:
        payload = UNSIGNED_PAYLOAD if https else hashlib.sha256(body).hexdigest()
    ours = Signer(credentials, region).sign(method, host, path, query_string, headers, payload, now=NOW)
    url = origin + path + ("?" + query_string if query_string else "")
    theirs = botocore_authorization(monkeypatch, method, url, headers, body, credentials, region,
                                    unsigned=https and bool(body))
    assert ours["authorization"] == theirs
    assert ours["host"] == host and ours["x-amz-content-sha256"] == payload
    assert ours.get("x-amz-security-token", "") == token


def test_signing_key_is_derived_once_a_day() -> None:
    signer = Signer(Credentials("AKID", "secret"), "us-east-1")
    signer.sign("GET", "h", "/b/k", "", {}, EMPTY_SHA256, now=NOW)
    first = signer._key
    signer.sign("GET", "h", "/b/k2", "", {}, EMPTY_SHA256, now=NOW.replace(hour=23))
    assert signer._key is first
    signer.sign("GET", "h", "/b/k", "", {}, EMPTY_SHA256, now=NOW.replace(day=22))
    assert signer._key != first


def test_secrets_are_not_in_repr() -> None:
    assert "secret" not in repr(Credentials("AKID", "secret", "token-secret"))
