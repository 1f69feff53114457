"""The printed cut-over settings work as they stand: each object's URL, built from the printed
lines with Mastodon's own formula (kt-paperclip's :s3_path_url / :s3_alias_url), is where the
provider serves it; checked over a table of providers and by a plain GET from a local bucket."""

from __future__ import annotations

import urllib.request
from pathlib import Path
from typing import Any

import pytest

from mastosync import config
from mastosync.commands import cutover
from mastosync.errors import UsageError
from tests.conftest import new_bucket, to_toml
from tests.services.s3 import S3Server

KEY = "media_attachments/files/110/000/000/000/000/001/original/a.jpg"
OLD = {"endpoint": "https://s3.eu-central-1.amazonaws.com", "region": "eu-central-1", "bucket": "mastodon-old"}

# (destination settings, the URL the provider serves KEY at) — written out by hand.
PROVIDERS = {
    "aws": ({"region": "eu-central-1", "bucket": "new"},
            f"https://s3.eu-central-1.amazonaws.com/new/{KEY}"),
    "aws-endpoint": ({"endpoint": "https://s3.us-west-2.amazonaws.com", "region": "us-west-2", "bucket": "new"},
                     f"https://s3.us-west-2.amazonaws.com/new/{KEY}"),
    "r2-public-domain": ({"endpoint": "https://acct.r2.cloudflarestorage.com", "region": "auto", "bucket": "new",
                          "acl": "", "public_url": "https://media.example.org"},
                         f"https://media.example.org/{KEY}"),
    "b2": ({"endpoint": "https://s3.us-west-004.backblazeb2.com", "region": "us-west-004", "bucket": "new"},
           f"https://s3.us-west-004.backblazeb2.com/new/{KEY}"),
    "wasabi": ({"endpoint": "https://s3.eu-central-1.wasabisys.com", "region": "eu-central-1", "bucket": "new"},
               f"https://s3.eu-central-1.wasabisys.com/new/{KEY}"),
    "spaces": ({"endpoint": "https://fra1.digitaloceanspaces.com", "region": "fra1", "bucket": "new"},
               f"https://fra1.digitaloceanspaces.com/new/{KEY}"),
    "spaces-cdn-path": ({"endpoint": "https://fra1.digitaloceanspaces.com", "region": "fra1", "bucket": "new",
                         "public_url": "https://cdn.example.org/files/"},
                        f"https://cdn.example.org/files/{KEY}"),
    "scaleway": ({"endpoint": "https://s3.fr-par.scw.cloud", "region": "fr-par", "bucket": "new"},
                 f"https://s3.fr-par.scw.cloud/new/{KEY}"),
    "minio-host-port": ({"endpoint": "http://minio.lan:9000", "region": "us-east-1", "bucket": "new"},
                        f"http://minio.lan:9000/new/{KEY}"),
    "garage-web": ({"endpoint": "http://garage.lan:3900", "region": "garage", "bucket": "new",
                    "addressing_style": "virtual", "public_url": "http://new.web.garage.lan:3902"},
                   f"http://new.web.garage.lan:3902/{KEY}"),
    "key-prefix": ({"region": "eu-central-1", "bucket": "new", "key_prefix": "media"},
                   f"https://s3.eu-central-1.amazonaws.com/new/media/{KEY}"),
    "key-prefix-alias": ({"endpoint": "https://s3.fr-par.scw.cloud", "region": "fr-par", "bucket": "new",
                          "key_prefix": "media", "public_url": "https://files.example.social"},
                         f"https://files.example.social/media/{KEY}"),
}


def settings_for(tmp_path: Path, destination: dict[str, Any], source: dict[str, Any] | None = None) -> config.Settings:
    path = tmp_path / "config.toml"
    path.write_text(to_toml({"source": source or OLD, "destination": destination}))
    return config.load(path, environ={})


def printed_env(text: str) -> tuple[list[str], dict[str, str]]:
    block = [line.strip() for line in text.split(" 2. ", 1)[1].split(" 3. ", 1)[0].splitlines()[2:]]
    block = [line for line in block if line and not line.startswith("then restart")]
    return block, cutover.parse_env(block)


@pytest.mark.parametrize("provider", list(PROVIDERS))
def test_printed_settings_give_the_urls_the_provider_serves(tmp_path: Path, provider: str) -> None:
    destination, url = PROVIDERS[provider]
    settings = settings_for(tmp_path, destination)
    text = cutover.instructions(settings)
    block, env = printed_env(text)
    assert cutover.paperclip_url(env, KEY) == url
    live = [line for line in block if not line.startswith("#")]
    assert not any("<" in line or ">" in line for line in live), live  # no placeholder to paste
    assert len(live) == len(env), "a variable set twice: dotenv keeps the last"
    assert env["EXTRA_MEDIA_HOSTS"] == "https://s3.eu-central-1.amazonaws.com"  # the old host, once
    assert ("S3_ALIAS_HOST" in env) == ("public_url" in destination)
    assert env.get("S3_ENDPOINT") == destination.get("endpoint")
    assert env["S3_HOSTNAME"] and env["S3_PROTOCOL"] in ("http", "https")
    if "key_prefix" in destination:
        assert "# S3_KEY_PREFIX needs Mastodon 4.3 or later" in block
    # The week ahead allows the host that will serve the media; nginx proxies old URLs to it.
    host = url.split("/")[2]
    assert f"EXTRA_MEDIA_HOSTS={url.split('/')[0]}//{host}" in text.split(" 2. ")[0]
    assert f"proxy_pass {url.removesuffix(KEY)};" in text and f"proxy_set_header Host {host};" in text


def test_an_r2_bucket_needs_its_public_domain(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, {"endpoint": "https://acct.r2.cloudflarestorage.com", "region": "auto",
                                       "bucket": "new", "acl": ""})
    with pytest.raises(UsageError, match="destination.public_url"):
        cutover.instructions(settings)


def test_credentials_in_an_endpoint_are_refused_without_echo(tmp_path: Path) -> None:
    from tests.conftest import run_cli

    path = tmp_path / "config.toml"
    path.write_text(to_toml({"source": {**OLD, "endpoint": "https://AKIAEXAMPLEKEY:s3cr3t-v4lue@s3.example.com"},
                             "destination": {"region": "auto", "bucket": "new"}}))
    for command in ("cutover", "run", "verify"):
        result = run_cli(command, config=path)
        assert result.returncode == 2, result.stderr
        assert "source.endpoint" in result.stderr and "holds credentials" in result.stderr
        assert "AKIAEXAMPLEKEY" not in result.stderr + result.stdout
        assert "s3cr3t" not in result.stderr + result.stdout


@pytest.mark.parametrize("case", ["endpoint", "prefix", "public-url"])
def test_a_plain_get_of_the_printed_url_returns_the_object(tmp_path: Path, moto: S3Server, case: str) -> None:
    bucket = new_bucket(moto, "new")
    destination = {"endpoint": moto.endpoint, "region": "us-east-1", "bucket": bucket}
    if case == "prefix":
        destination["key_prefix"] = "media"
    if case == "public-url":  # a CDN stand-in: the bucket served at a path of another base URL
        destination["public_url"] = f"{moto.endpoint}/{bucket}"
    stored = f"media/{KEY}" if case == "prefix" else KEY
    moto.put(bucket, stored, b"the bytes", "image/jpeg", acl="public-read")
    _, env = printed_env(cutover.instructions(settings_for(tmp_path, destination)))
    with urllib.request.urlopen(cutover.paperclip_url(env, KEY), timeout=10) as answer:  # no signature
        assert answer.read() == b"the bytes"


@pytest.mark.parametrize("mastodon,live", [("4.2", False), ("4.3", True), ("4.6", True), (None, True)])
def test_the_key_prefix_line_needs_mastodon_4_3(tmp_path: Path, mastodon: str | None, live: bool) -> None:
    settings = settings_for(tmp_path, {"region": "eu-central-1", "bucket": "new", "key_prefix": "media"})
    block, env = printed_env(cutover.instructions(settings, mastodon))
    assert ("S3_KEY_PREFIX" in env) == live
    if not live:
        assert any("needs Mastodon 4.3 or later, and this database is 4.2's" in line for line in block)


def test_mastodon_releases_from_migrations() -> None:
    from mastosync.mastodon.version import at_least, release_of

    assert release_of(20230803112520) == "4.2" and release_of(20240101000000) == "4.2"
    assert release_of(20240916190140) == "4.3" and release_of(20260611150940) == "4.6"
    assert release_of(20160101000000) == "older than 2.0" and not at_least("older than 2.0", (4, 3))
    assert release_of(20990101000000).startswith("4.7 or newer") and at_least("4.7 or newer (x)", (4, 3))
