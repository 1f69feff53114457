"""`mastosync init --from-env`: a configuration from Mastodon's .env.production.

The env file is read as dotenv does (comments, `export`, single and double quotes,
escapes in double quotes, values with `=`, inline ` #` comments on unquoted values).
`[database]` and `[source]` are filled in from DB_* and S3_*; secrets (DB_PASS, the AWS
keys) never go into the file: the MASTOSYNC_* variables to set are listed instead, by
name only. `[destination]` is left for the admin to fill in.
"""

from __future__ import annotations

import json
import posixpath
import re

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


def config_from_env(env: dict[str, str], source_name: str, over_ssh: bool = False) -> tuple[str, list[str]]:
    """(the TOML text, the MASTOSYNC_* variables to set for the secrets it left out).

    An instance on local storage (S3_ENABLED not true) gets a folder source: its
    PAPERCLIP_ROOT_PATH, else public/system beside the env file (Mastodon's default),
    read over SFTP when the env file was (`over_ssh`)."""
    to_set: list[str] = []
    lines = [f"# Written by `mastosync init --from-env {source_name}`. Secrets are not in this file:",
             "# set the MASTOSYNC_* variables listed when it was written (or add them here).", "",
             "[database]"]
    for key, name in (("DB_HOST", "host"), ("DB_NAME", "name"), ("DB_USER", "user")):
        if env.get(key):
            lines.append(f"{name} = {_toml(env[key])}")
    if env.get("DB_PORT", "").isdigit():
        lines.append(f"port = {int(env['DB_PORT'])}")
    if env.get("DB_PASS"):
        to_set.append("MASTOSYNC_DATABASE_PASSWORD  (DB_PASS in the env file)")
    if env.get("S3_ENABLED", "").lower() != "true":
        root = env.get("PAPERCLIP_ROOT_PATH") or posixpath.join(posixpath.dirname(source_name) or ".",
                                                                "public", "system")
        lines += ["", "[source]", "# S3_ENABLED is not true: this Mastodon keeps its files on local disk.",
                  f"kind = {_toml('sftp' if over_ssh else 'filesystem')}"
                  + ("   # on the [ssh] host, through the same login" if over_ssh else ""),
                  f"root = {_toml(root)}   # PAPERCLIP_ROOT_PATH, else public/system beside .env.production"]
        return _with_destination(lines, env, to_set)
    lines += ["", "[source]", "# The bucket Mastodon uses today."]
    lines.append(f"bucket = {_toml(env.get('S3_BUCKET', 'CHANGE-ME'))}")
    if env.get("S3_ENDPOINT"):
        lines.append(f"endpoint = {_toml(env['S3_ENDPOINT'])}")
        # paperclip.rb: force_path_style unless S3_OVERRIDE_PATH_STYLE is true.
        style = "virtual" if env.get("S3_OVERRIDE_PATH_STYLE", "").lower() == "true" else "path"
        lines.append(f"addressing_style = {_toml(style)}")
    else:
        lines.append('addressing_style = "auto"   # AWS, without S3_ENDPOINT')
    lines.append(f"region = {_toml(env.get('S3_REGION', 'us-east-1'))}")
    if "S3_KEY_PREFIX" in env:
        lines.append(f"key_prefix = {_toml(env['S3_KEY_PREFIX'])}   # S3_KEY_PREFIX, verbatim")
    for key, name in (("AWS_ACCESS_KEY_ID", "ACCESS_KEY_ID"), ("AWS_SECRET_ACCESS_KEY", "SECRET_ACCESS_KEY")):
        if env.get(key):
            to_set.append(f"MASTOSYNC_SOURCE_{name}  ({key} in the env file)")
    if "S3_PERMISSION" in env:
        lines.append(f"# S3_PERMISSION={env['S3_PERMISSION']!r}: give the destination the same acl below")
    if env.get("S3_ALIAS_HOST") or env.get("S3_CLOUDFRONT_HOST"):
        alias = env.get("S3_ALIAS_HOST") or env.get("S3_CLOUDFRONT_HOST")
        lines.append(f"# S3_ALIAS_HOST={alias}: keep it in EXTRA_MEDIA_HOSTS after the cut-over "
                     "(`mastosync cutover`)")
    return _with_destination(lines, env, to_set)


def _with_destination(lines: list[str], env: dict[str, str], to_set: list[str]) -> tuple[str, list[str]]:
    lines += ["", "[destination]", "# The new bucket: fill these in.", 'bucket = "CHANGE-ME-NEW"',
              'endpoint = ""               # e.g. "https://<account>.r2.cloudflarestorage.com"',
              'region = "us-east-1"',
              f"acl = {_toml(env.get('S3_PERMISSION', 'public-read'))}   # as S3_PERMISSION; \"\" sends no ACL",
              'key_prefix = ""', ""]
    to_set += ["MASTOSYNC_DESTINATION_ACCESS_KEY_ID", "MASTOSYNC_DESTINATION_SECRET_ACCESS_KEY"]
    return "\n".join(lines), to_set
