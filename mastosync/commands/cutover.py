"""What an admin changes to switch Mastodon to the new bucket: pure text from the settings.

Printed after a `verify --all` that found nothing absent or different, and by `mastosync
cutover` once such a verify is recorded. Mastodon reads S3_* from .env.production
(config/initializers/paperclip.rb) and builds every media URL with kt-paperclip:

    S3_ALIAS_HOST set      <S3_PROTOCOL>://<S3_ALIAS_HOST>/<path>
    otherwise              <S3_PROTOCOL>://<S3_HOSTNAME>/<S3_BUCKET>/<path>
                           (S3_HOSTNAME defaults to s3-<S3_REGION>.amazonaws.com, wrong
                           anywhere but on AWS's oldest regions: it is always printed)

where <path> is [S3_KEY_PREFIX/]key. The Content-Security-Policy (app/lib/
content_security_policy.rb) allows media from S3_ALIAS_HOST or S3_HOSTNAME, never from
S3_ENDPOINT, and from EXTRA_MEDIA_HOSTS: old media URLs live on in posts and other servers'
caches, so the old host stays allowed, and the new one is allowed a week ahead, before
browsers holding the old policy meet it. `paperclip_url` is that formula, so that the
tests build each object's URL from the printed lines exactly as Mastodon would.
"""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import urlsplit

from mastosync.config.settings import BucketSettings, DestinationSettings, Settings
from mastosync.errors import UsageError
from mastosync.mastodon import version
from mastosync.sides import S3Side

R2_API_HOST = ".r2.cloudflarestorage.com"  # R2's S3 API: signed requests only, never public


def public_base(side: BucketSettings) -> str:
    """The URL under which the side's objects are served publicly, ending in "/" (sides.py)."""
    return S3Side.of(side).public_base()


def env_lines(destination: DestinationSettings, mastodon: str | None = None) -> list[str]:
    """The .env.production block for the destination: complete, each live line as it must be;
    what needs a word of explanation has it on a comment line of its own (dotenv files take no
    comments after a value). `mastodon`: the release the database belongs to, when known."""
    protocol, hostname = S3Side.of(destination).protocol_and_hostname()
    lines = ["S3_ENABLED=true", f"S3_BUCKET={destination.bucket}", f"S3_REGION={destination.region or 'us-east-1'}"]
    if destination.endpoint:
        lines.append(f"S3_ENDPOINT={destination.endpoint.rstrip('/')}")
    if destination.public_url:
        public = urlsplit(destination.public_url)
        protocol = public.scheme
        lines += [f"S3_PROTOCOL={protocol}", f"S3_HOSTNAME={hostname}",
                  f"S3_ALIAS_HOST={public.netloc}{public.path.rstrip('/')}"]
    else:
        lines += [f"S3_PROTOCOL={protocol}", f"S3_HOSTNAME={hostname}"]
    if destination.endpoint and destination.addressing_style == "virtual":
        lines.append("S3_OVERRIDE_PATH_STYLE=true")
    if not destination.acl:
        lines.append("# no per-object ACL: the bucket's policy decides who reads (as Mastodon with an empty value)")
    lines.append(f"S3_PERMISSION={destination.acl}")
    if destination.storage_class:
        lines.append(f"S3_STORAGE_CLASS={destination.storage_class}")
    if destination.key_prefix and mastodon is not None and not version.at_least(mastodon, (4, 3)):
        # Before 4.3 Mastodon ignores it: every URL would miss the prefix the files are under.
        lines += [f"# S3_KEY_PREFIX={destination.key_prefix} would be ignored: it needs Mastodon 4.3 or later, and "
                  f"this database is {mastodon}'s; upgrade Mastodon first, or copy without destination.key_prefix"]
    elif destination.key_prefix:
        lines += ["# S3_KEY_PREFIX needs Mastodon 4.3 or later", f"S3_KEY_PREFIX={destination.key_prefix}"]
    return lines


def parse_env(lines: list[str]) -> dict[str, str]:
    """KEY=value lines as dotenv reads them (comments and blank lines skipped; the last wins)."""
    found: dict[str, str] = {}
    for line in lines:
        text = line.strip()
        if text and not text.startswith("#") and "=" in text:
            key, _, value = text.partition("=")
            found[key.strip()] = value
    return found


def paperclip_url(env: Mapping[str, str], key: str) -> str:
    """The URL Mastodon (kt-paperclip, config/initializers/paperclip.rb) gives the object `key`."""
    path = f"{env['S3_KEY_PREFIX']}/{key}" if "S3_KEY_PREFIX" in env else key
    path = path.removeprefix("/")
    protocol = env.get("S3_PROTOCOL", "https")
    if env.get("S3_ALIAS_HOST"):
        return f"{protocol}://{env['S3_ALIAS_HOST']}/{path}"
    hostname = env.get("S3_HOSTNAME") or f"s3-{env.get('S3_REGION', 'us-east-1')}.amazonaws.com"
    return f"{protocol}://{hostname}/{env['S3_BUCKET']}/{path}"


def _refuse_unservable(destination: DestinationSettings) -> None:
    if destination.public_url:
        return
    if (urlsplit(destination.endpoint).hostname or "").endswith(R2_API_HOST):
        raise UsageError("destination.public_url: an R2 bucket is not served from its S3 API endpoint; set "
                         "destination.public_url to its public domain (a custom domain, or its r2.dev address) "
                         "so that the printed S3_ALIAS_HOST makes working media URLs")


def week_ahead(settings: Settings) -> str:
    """The one step that comes before the copy is complete: allowing the new host."""
    new_host = urlsplit(public_base(settings.destination)).netloc
    return f"""\
A week ahead of the cut-over: allow the new media host in Mastodon's Content-Security-Policy,
so that browsers still holding the old policy accept media from it. Add it to
EXTRA_MEDIA_HOSTS in .env.production (beside any hosts already listed there; one line):
    EXTRA_MEDIA_HOSTS={_scheme_of(settings.destination)}://{new_host}
"""


def _scheme_of(side: BucketSettings) -> str:
    return urlsplit(public_base(side)).scheme


def instructions(settings: Settings, mastodon: str | None = None) -> str:
    """The cut-over, step by step, for this source and destination (`mastodon`: the release of
    the database, when known: S3_KEY_PREFIX needs 4.3)."""
    if settings.destination.is_folder:
        return to_folder(settings)
    destination = settings.destination
    _refuse_unservable(destination)
    new = public_base(destination)
    new_parts = urlsplit(new)
    env = env_lines(destination, mastodon)
    if not settings.source.is_folder:
        # Files served by Mastodon's own host before (local storage) need no other host allowed.
        old = urlsplit(public_base(settings.source))
        env.append("# the old media host: posts and other servers still link to it (add any hosts you list now)")
        env.append(f"EXTRA_MEDIA_HOSTS={old.scheme}://{old.netloc}")
    block = "\n".join(f"    {line}" for line in env)
    return f"""\
Cut-over to {destination.bucket} (served at {new}):

 1. {week_ahead(settings).replace(chr(10), chr(10) + "    ").rstrip()}
 2. Replace the S3_* lines of .env.production with these (and set AWS_ACCESS_KEY_ID and
    AWS_SECRET_ACCESS_KEY to the new bucket's keys):
{block}
    then restart mastodon-web, mastodon-streaming and mastodon-sidekiq.
 3. Catch up with what was written meanwhile: mastosync run --all --since last
 4. Prove it: mastosync verify --all
 5. Old URLs under /system/ (local storage before, or an alias host you keep): serve them
    from the new bucket with nginx, e.g. in the server block of that host:

    location /system/ {{
        proxy_pass {new};
        proxy_set_header Host {new_parts.netloc};
        proxy_ssl_server_name on;
        proxy_set_header Authorization "";
        proxy_hide_header Set-Cookie;
        proxy_ignore_headers Set-Cookie;
        limit_except GET HEAD {{ deny all; }}
        add_header Cache-Control "public, max-age=315576000, immutable";
    }}
"""


def to_folder(settings: Settings) -> str:
    """Back to local storage: Mastodon serves the files itself, from PAPERCLIP_ROOT_PATH."""
    destination = settings.destination
    where = destination.root if destination.kind == "filesystem" else f"{destination.root} on {settings.ssh.host}"
    old_host = "" if settings.source.is_folder else urlsplit(public_base(settings.source)).netloc
    old = "" if settings.source.is_folder else (
        f"\n 5. Posts and other servers still link to the old media host ({old_host}):"
        "\n    keep the old bucket readable until their caches have moved on.")
    return f"""\
Cut-over to the folder {where} (Mastodon's local storage):

 1. Set in .env.production, and remove the other S3_* lines:
    S3_ENABLED=false
    PAPERCLIP_ROOT_PATH={destination.root}
    PAPERCLIP_ROOT_URL=/system
    then restart mastodon-web, mastodon-streaming and mastodon-sidekiq.
 2. Let the web server serve /system/ from that folder (Mastodon's nginx example does, for
    public/system; files of suspended accounts are mode 0600 and so not served).
 3. Catch up with what was written meanwhile: mastosync run --all --since last
 4. Prove it: mastosync verify --all{old}
"""
