"""What an admin changes to switch Mastodon to the new bucket: pure text from the settings.

Printed after a `verify` that found nothing absent or different, and by `mastosync
cutover` on demand. Mastodon reads S3_* from .env.production (config/initializers/
paperclip.rb) and lets its Content-Security-Policy allow media from S3_ALIAS_HOST and
EXTRA_MEDIA_HOSTS (app/lib/content_security_policy.rb): old media URLs live on in other
servers' caches and in posts, so the old host stays allowed, and the new one is allowed
a week ahead, before browsers holding the old policy meet it.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from mastosync.config import BucketSettings, DestinationSettings, Settings


def public_base(side: BucketSettings) -> str:
    """The URL under which the side's objects are served (before any CDN or alias host)."""
    prefix = f"{side.key_prefix}/" if side.key_prefix else ""
    if not side.endpoint:
        return f"https://{side.bucket}.s3.{side.region or 'us-east-1'}.amazonaws.com/{prefix}"
    parts = urlsplit(side.endpoint)
    if side.addressing_style == "virtual":
        return f"{parts.scheme}://{side.bucket}.{parts.netloc}{parts.path.rstrip('/')}/{prefix}"
    return f"{parts.scheme}://{parts.netloc}{parts.path.rstrip('/')}/{side.bucket}/{prefix}"


def env_lines(destination: DestinationSettings) -> list[str]:
    """.env.production lines for the destination, as Mastodon reads them."""
    lines = ["S3_ENABLED=true"]
    if destination.endpoint:
        lines.append(f"S3_ENDPOINT={destination.endpoint}")
    lines += [f"S3_BUCKET={destination.bucket}", f"S3_REGION={destination.region}",
              f"S3_PERMISSION={destination.acl}"]
    if destination.key_prefix:
        lines.append(f"S3_KEY_PREFIX={destination.key_prefix}")
    if destination.endpoint and destination.addressing_style == "virtual":
        lines.append("S3_OVERRIDE_PATH_STYLE=true")
    if destination.storage_class:
        lines.append(f"S3_STORAGE_CLASS={destination.storage_class}")
    return lines


def instructions(settings: Settings) -> str:
    """The cut-over, step by step, for this source and destination."""
    if settings.destination.is_folder:
        return to_folder(settings)
    old, new = public_base(settings.source), public_base(settings.destination)
    old_host, new_host = urlsplit(old).netloc, urlsplit(new).netloc
    env = "\n".join(f"    {line}" for line in env_lines(settings.destination))
    # Files served by Mastodon's own host before (local storage) need no other host allowed.
    old_hosts = "" if settings.source.is_folder else (
        f"    EXTRA_MEDIA_HOSTS={old_host}    # the old media host: posts and other servers still link to it\n")
    return f"""\
Cut-over to {settings.destination.bucket} ({new}):

 1. A week ahead: allow the new host in Mastodon's Content-Security-Policy, so that
    browsers still holding the old policy accept media from it:
    EXTRA_MEDIA_HOSTS={new_host}
 2. Set in .env.production (and the keys: AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY):
{env}
    S3_ALIAS_HOST=<the host that serves the new bucket, if a CDN or proxy does>
{old_hosts}    then restart mastodon-web, mastodon-streaming and mastodon-sidekiq.
 3. Catch up with what was written meanwhile: mastosync run --since last
 4. Prove it: mastosync verify --all
 5. Old URLs under /system/ (local storage before, or an alias host you keep): serve them
    from the new bucket with nginx, e.g. in the server block of that host:

    location /system/ {{
        proxy_pass {new};
        proxy_set_header Host {new_host};
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
    old = "" if settings.source.is_folder else (
        f"\n 5. Posts and other servers still link to the old media host ({urlsplit(public_base(settings.source)).netloc}):"
        "\n    keep the old bucket readable until their caches have moved on.")
    return f"""\
Cut-over to the folder {where} (Mastodon's local storage):

 1. Set in .env.production, and remove the other S3_* lines:
    S3_ENABLED=false
    PAPERCLIP_ROOT_PATH={destination.root}    # not needed if it is <mastodon>/public/system
    PAPERCLIP_ROOT_URL=/system
    then restart mastodon-web, mastodon-streaming and mastodon-sidekiq.
 2. Let the web server serve /system/ from that folder (Mastodon's nginx example does, for
    public/system; files of suspended accounts are mode 0600 and so not served).
 3. Catch up with what was written meanwhile: mastosync run --since last
 4. Prove it: mastosync verify --all{old}
"""
