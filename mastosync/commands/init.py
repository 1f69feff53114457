"""`mastosync init --from-env`: a configuration from Mastodon's .env.production.

The env file is read as dotenv does (comments, `export`, single and double quotes,
escapes in double quotes, values with `=`, inline ` #` comments on unquoted values).
`[database]` and `[source]` are filled in from DATABASE_URL (which Rails prefers) or DB_*,
and S3_*; secrets (DB_PASS, the AWS keys) never go into the file: the MASTOSYNC_* variables
to set are listed instead, by name only. `[destination]` is left for the admin to fill in.
What each variable became is returned for `init` to print, with the relevant variables it
did not use.
"""

from __future__ import annotations

import json
import posixpath
import re
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qsl, unquote, urlsplit

_LINE = re.compile(r"^\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_.]*)\s*=\s*(.*)$")
_ESCAPES = {"n": "\n", "r": "\r", "t": "\t", '"': '"', "\\": "\\", "$": "$"}


def parse_dotenv(text: str) -> dict[str, str]:
    """KEY=value lines → dict, as python-dotenv and Ruby's dotenv read them."""
    values: dict[str, str] = {}
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        match = _LINE.match(lines[i])
        i += 1
        if not match:
            continue  # blank, comment, or not an assignment
        key, raw = match.group(1), match.group(2)
        if raw.startswith("'"):
            end = raw.find("'", 1)
            values[key] = raw[1:end] if end > 0 else raw[1:]
        elif raw.startswith('"'):
            body = raw[1:]
            while not _closing_quote(body) and i < len(lines):  # a value over several lines
                body += "\n" + lines[i]
                i += 1
            end = _closing_quote(body)
            value = body[:end] if end is not None else body
            values[key] = re.sub(r"\\(.)", lambda m: _ESCAPES.get(m.group(1), "\\" + m.group(1)), value)
        else:
            values[key] = re.split(r"\s+#", raw, maxsplit=1)[0].strip()
    return values


def _closing_quote(body: str) -> int | None:
    escaped = False
    for n, char in enumerate(body):
        if escaped:
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == '"':
            return n
    return None


def _toml(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    return json.dumps(str(value))


@dataclass
class FromEnv:
    """What `init` made of the env file: the TOML, the variables to set for the secrets it
    left out, which variable became which setting, and the relevant ones it did not use."""

    text: str
    to_set: list[str]
    used: list[tuple[str, str]] = field(default_factory=list)  # (variable, setting)
    unused: list[str] = field(default_factory=list)


# Variables an admin may wonder about: every one of these is either used or named as not used.
RELEVANT = re.compile(r"^(DB_|DATABASE_URL$|S3_|AWS_|PAPERCLIP_|CDN_HOST$|EXTRA_MEDIA_HOSTS$)")
SSLMODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")


def database_from_url(url: str) -> dict[str, str]:
    """DATABASE_URL (postgres[ql]://user:password@host:port/name?sslmode=…&host=/socket) → DB_* values."""
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    found = {"DB_USER": unquote(parts.username or ""), "DB_PASS": unquote(parts.password or ""),
             "DB_HOST": unquote(parts.hostname or "") or query.get("host", ""),
             "DB_PORT": str(parts.port or query.get("port", "")), "DB_NAME": unquote(parts.path.lstrip("/")),
             "DB_SSLMODE": query.get("sslmode", "")}
    return {k: v for k, v in found.items() if v}


def config_from_env(env: dict[str, str], source_name: str, over_ssh: bool = False) -> FromEnv:
    """The configuration `env` describes. An instance on local storage (S3_ENABLED not true)
    gets a folder source: its PAPERCLIP_ROOT_PATH, else public/system beside the env file
    (Mastodon's default), read over SFTP when the env file was (`over_ssh`)."""
    made = FromEnv("", [])

    def use(variable: str, setting: str) -> None:
        made.used.append((variable, setting))

    lines = [f"# Written by `mastosync init --from-env {source_name}`. Secrets are not in this file:",
             "# set the MASTOSYNC_* variables listed when it was written (or add them here).", "",
             "[database]"]
    # Rails takes DATABASE_URL over config/database.yml (DB_*): so does mastosync.
    database = {k: v for k, v in env.items() if k.startswith("DB_")}
    url_values = database_from_url(env["DATABASE_URL"]) if env.get("DATABASE_URL") else {}
    database.update(url_values)

    def origin(key: str) -> str:
        return "DATABASE_URL" if key in url_values else key

    # Mastodon's defaults in production (config/database.yml), written out: mastosync's own
    # defaults must never quietly point at another database.
    for key, name, default in (("DB_HOST", "host", "localhost"), ("DB_NAME", "name", "mastodon_production"),
                               ("DB_USER", "user", "mastodon")):
        value = database.get(key) or default
        lines.append(f"{name} = {_toml(value)}" + ("   # the Unix socket's folder" if value.startswith("/") else ""))
        use(origin(key) if database.get(key) else f"(Mastodon's default for {key})", f"database.{name}")
    port = database.get("DB_PORT", "")
    if port.isdigit():
        lines.append(f"port = {int(port)}")
        use(origin("DB_PORT"), "database.port")
    sslmode = database.get("DB_SSLMODE", "")
    if sslmode in SSLMODES:
        lines.append(f"sslmode = {_toml(sslmode)}")
        use(origin("DB_SSLMODE"), "database.sslmode")
    if database.get("DB_PASS"):
        made.to_set.append(f"MASTOSYNC_DATABASE_PASSWORD  (the password in {origin('DB_PASS')})")
        use(origin("DB_PASS"), "MASTOSYNC_DATABASE_PASSWORD (to set)")
    if env.get("S3_ENABLED", "").lower() != "true":
        root = env.get("PAPERCLIP_ROOT_PATH") or posixpath.join(posixpath.dirname(source_name) or ".",
                                                                "public", "system")
        if env.get("PAPERCLIP_ROOT_PATH"):
            use("PAPERCLIP_ROOT_PATH", "source.root")
        lines += ["", "[source]", "# S3_ENABLED is not true: this Mastodon keeps its files on local disk.",
                  f"kind = {_toml('sftp' if over_ssh else 'filesystem')}"
                  + ("   # on the [ssh] host, through the same login" if over_ssh else ""),
                  f"root = {_toml(root)}   # PAPERCLIP_ROOT_PATH, else public/system beside .env.production"]
        return _finish(made, lines, env)
    use("S3_ENABLED", "source.kind = \"s3\"")
    lines += ["", "[source]", "# The bucket Mastodon uses today."]
    lines.append(f"bucket = {_toml(env.get('S3_BUCKET', 'CHANGE-ME'))}")
    if env.get("S3_BUCKET"):
        use("S3_BUCKET", "source.bucket")
    if env.get("S3_ENDPOINT"):
        lines.append(f"endpoint = {_toml(env['S3_ENDPOINT'])}")
        use("S3_ENDPOINT", "source.endpoint")
        # paperclip.rb: force_path_style unless S3_OVERRIDE_PATH_STYLE is true.
        style = "virtual" if env.get("S3_OVERRIDE_PATH_STYLE", "").lower() == "true" else "path"
        lines.append(f"addressing_style = {_toml(style)}")
        if "S3_OVERRIDE_PATH_STYLE" in env:
            use("S3_OVERRIDE_PATH_STYLE", "source.addressing_style")
    else:
        lines.append('addressing_style = "auto"   # AWS, without S3_ENDPOINT')
    lines.append(f"region = {_toml(env.get('S3_REGION', 'us-east-1'))}")
    if "S3_REGION" in env:
        use("S3_REGION", "source.region")
    if "S3_KEY_PREFIX" in env:
        lines.append(f"key_prefix = {_toml(env['S3_KEY_PREFIX'])}   # S3_KEY_PREFIX, verbatim")
        use("S3_KEY_PREFIX", "source.key_prefix")
    public = _public_url(env)
    if public:
        lines.append(f"public_url = {_toml(public)}   # its media's host: EXTRA_MEDIA_HOSTS after the cut-over")
        for variable in ("S3_ALIAS_HOST", "S3_CLOUDFRONT_HOST", "S3_HOSTNAME", "S3_PROTOCOL"):
            if env.get(variable):
                use(variable, "source.public_url")
    for key, name in (("AWS_ACCESS_KEY_ID", "ACCESS_KEY_ID"), ("AWS_SECRET_ACCESS_KEY", "SECRET_ACCESS_KEY")):
        if env.get(key):
            made.to_set.append(f"MASTOSYNC_SOURCE_{name}  ({key} in the env file)")
            use(key, f"MASTOSYNC_SOURCE_{name} (to set)")
    return _finish(made, lines, env)


def _public_url(env: dict[str, str]) -> str:
    """The base URL of the old media, as paperclip.rb builds it: the alias host, or S3_HOSTNAME
    (only when set: the AWS default needs no word)."""
    protocol = env.get("S3_PROTOCOL") or "https"
    alias = env.get("S3_ALIAS_HOST") or env.get("S3_CLOUDFRONT_HOST")
    if alias:
        return f"{protocol}://{alias}"
    if env.get("S3_HOSTNAME"):
        return f"{protocol}://{env['S3_HOSTNAME']}/{env.get('S3_BUCKET', '')}".rstrip("/")
    return ""


def _finish(made: FromEnv, lines: list[str], env: dict[str, str]) -> FromEnv:
    """[destination] and [sync], and the relevant variables that were not used."""
    def used(variable: str) -> bool:
        return any(v == variable for v, _ in made.used)

    acl = env.get("S3_PERMISSION", "public-read")
    lines += ["", "[destination]", "# The new bucket: fill these in.", 'bucket = "CHANGE-ME-NEW"',
              'endpoint = ""               # e.g. "https://<account>.r2.cloudflarestorage.com"',
              'region = "us-east-1"',
              f"acl = {_toml(acl)}   # as S3_PERMISSION; \"\" sends no ACL",
              'key_prefix = ""']
    if "S3_PERMISSION" in env:
        made.used.append(("S3_PERMISSION", "destination.acl"))
    if env.get("S3_STORAGE_CLASS"):
        lines.append(f"storage_class = {_toml(env['S3_STORAGE_CLASS'])}   # S3_STORAGE_CLASS")
        made.used.append(("S3_STORAGE_CLASS", "destination.storage_class"))
    threshold = env.get("S3_MULTIPART_THRESHOLD", "")
    if threshold.isdigit() and int(threshold) >= 5 * 1024 * 1024:
        lines += ["", "[sync]", f"multipart_threshold = {int(threshold)}   # S3_MULTIPART_THRESHOLD"]
        made.used.append(("S3_MULTIPART_THRESHOLD", "sync.multipart_threshold"))
    lines.append("")
    made.to_set += ["MASTOSYNC_DESTINATION_ACCESS_KEY_ID", "MASTOSYNC_DESTINATION_SECRET_ACCESS_KEY"]
    made.unused = sorted(k for k in env if RELEVANT.match(k) and not used(k))
    made.text = "\n".join(lines)
    return made


def write_config(env_path: str, output: str, config_path: str | None, over_ssh: bool) -> tuple[Path, str, FromEnv]:
    """Read the env file (here, or over SFTP on the [ssh] host of `config_path`) and write the
    configuration made from it to `output`, never over an existing file."""
    from mastosync import config
    from mastosync.errors import UsageError
    from mastosync.redact import redact

    target = Path(output).expanduser()
    if target.exists():
        raise UsageError(f"{target.resolve()} exists; not overwriting it (give --output another path)")
    if over_ssh:
        import asyncio

        from mastosync.config.settings import DatabaseSettings
        from mastosync.tunnel import Tunnel

        ssh = config.load_ssh(config.config_path(config_path))
        redact.add([v for v in (ssh.password, ssh.passphrase) if v])
        raw = asyncio.run(Tunnel(ssh, DatabaseSettings()).read_file(env_path))
    else:
        try:
            raw = Path(env_path).expanduser().read_bytes()
        except OSError as exc:
            raise UsageError(f"cannot read {env_path}: {exc.strerror}") from None
    where = env_path if over_ssh else str(Path(env_path).expanduser().resolve())
    made = config_from_env(parse_dotenv(raw.decode("utf-8", "replace")), where, over_ssh)
    target.write_text(made.text)
    return target, where, made
