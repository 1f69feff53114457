"""Reading the configuration: the TOML file, MASTOSYNC_<SECTION>_<KEY> overrides, every value
checked. Every problem raises ConfigError naming the key; values of secret keys are never
echoed.
"""

from __future__ import annotations

import dataclasses
import os
import re
import tomllib
import typing
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from mastosync.config.settings import (
    REQUIRED_SECTIONS,
    SECTIONS,
    BucketSettings,
    Settings,
    SshSettings,
)
from mastosync.config.units import UNITS, format_size
from mastosync.errors import ConfigError

DEFAULT_PATH = "config.toml"


ENV_PATH = "MASTOSYNC_CONFIG"


def config_path(option: str | None) -> Path:
    """--config, else $MASTOSYNC_CONFIG, else ./config.toml."""
    return Path(option or os.environ.get(ENV_PATH) or DEFAULT_PATH).expanduser()


def load(path: Path, environ: typing.Mapping[str, str] | None = None) -> Settings:
    """Read and validate the configuration at `path`, with environment overrides."""
    environ = os.environ if environ is None else environ
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(
            None, f"file {path} not found (give --config PATH or set {ENV_PATH})"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(None, f"cannot read {path}: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(None, f"{path} is not valid TOML: {exc}") from None

    for name in raw:
        if name not in SECTIONS:
            raise ConfigError(name, f"unknown section (expected one of {', '.join(SECTIONS)})")
    sections: dict[str, Any] = {}
    for name, cls in SECTIONS.items():
        table = raw.get(name, {})
        if not isinstance(table, dict):
            raise ConfigError(name, "expected a table, such as [" + name + "]")
        if name in REQUIRED_SECTIONS and name not in raw and not _env_keys(name, cls, environ):
            raise ConfigError(name, "section is required")
        sections[name] = _section(name, cls, table, environ, path.expanduser().resolve().parent)
    for name in ("source", "destination"):
        sections[name] = _with_root(sections[name], path.expanduser().resolve().parent)
    settings = Settings(path=path, **sections)
    try:
        _check_together(settings)
    except ConfigError as exc:
        # A value from the environment is named by its variable: it is in no file to look at.
        section, _, key = (exc.key or "").partition(".")
        if key and _env_name(section, key) in environ:
            raise ConfigError(f"{_env_name(section, key)} (the environment's {exc.key})", exc.problem) from None
        raise
    return settings


def _with_root(side: BucketSettings, base: Path) -> BucketSettings:
    """A local root is taken from the configuration file's folder; an SFTP root is the SSH
    host's business (relative to the SSH user's home, as `sftp` itself takes it)."""
    if side.kind == "filesystem" and side.root:
        return dataclasses.replace(side, root=str((base / Path(side.root).expanduser()).resolve()))
    if side.kind == "sftp" and side.root.startswith("~/"):
        return dataclasses.replace(side, root=side.root[2:] or ".")
    return side


def load_ssh(path: Path, environ: typing.Mapping[str, str] | None = None) -> SshSettings:
    """Only the [ssh] section of a configuration (for `init --over-ssh`, before the rest exists)."""
    environ = os.environ if environ is None else environ
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(None, f"cannot read {path}: {exc}") from None
    ssh = _section("ssh", SshSettings, raw.get("ssh", {}), environ, path.expanduser().resolve().parent)
    if not ssh.host or not ssh.user:
        raise ConfigError("ssh", f"--over-ssh needs ssh.host and ssh.user (in {path} or MASTOSYNC_SSH_*)")
    return typing.cast(SshSettings, ssh)


def _env_keys(section: str, cls: type, environ: typing.Mapping[str, str]) -> list[str]:
    return [f.name for f in dataclasses.fields(cls) if _env_name(section, f.name) in environ]


def _env_name(section: str, key: str) -> str:
    return f"MASTOSYNC_{section}_{key}".upper()


def _section(name: str, cls: type, table: dict[str, Any], environ: typing.Mapping[str, str],
             base: Path | None = None) -> Any:
    """One section's settings. Relative paths are taken from `base`, the configuration file's
    folder: cron and systemd start mastosync in another working directory."""
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in dataclasses.fields(cls)}
    for key in table:
        if key not in known:
            raise ConfigError(
                f"{name}.{key}", f"unknown key (known keys: {', '.join(known)})"
            )
    values: dict[str, Any] = {}
    for key, f in known.items():
        where = f"{name}.{key}"
        env = _env_name(name, key)
        if env in environ:
            values[key] = _from_env(where, environ[env], hints[key], f.metadata)
        elif key in table:
            values[key] = _coerce(where, table[key], hints[key], f.metadata)
        else:
            if f.metadata.get("parse") == "path" and base is not None and f.default:
                values[key] = _from_base(base, str(Path(str(f.default)).expanduser()))
            continue
        if f.metadata.get("parse") == "path" and base is not None and values[key]:
            values[key] = _from_base(base, values[key])
        _check(where, values[key], f.metadata)
    return cls(**values)


def _from_base(base: Path, value: str) -> str:
    return value if Path(value).is_absolute() else str(base / value)


def _describe(value: Any, meta: typing.Mapping[str, Any]) -> str:
    return "a value" if meta.get("secret") else repr(value)


def _coerce(where: str, value: Any, kind: type, meta: typing.Mapping[str, Any]) -> Any:
    """A TOML value → the field's type; TOML already typed it, so only check and convert."""
    shown = _describe(value, meta)
    if meta.get("parse") in UNITS:
        number, parse, expected = UNITS[meta["parse"]]
        if isinstance(value, number) and not isinstance(value, bool):
            return value if number is int else float(value)
        if isinstance(value, str):
            try:
                return parse(value)
            except ValueError:
                pass
        raise ConfigError(where, f"expected {expected}, got {shown}")
    if kind is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(where, f"expected true or false, got {shown}")
    if kind is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(where, f"expected an integer, got {shown}")
    if kind is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(where, f"expected a number, got {shown}")
    if isinstance(value, str):
        return str(Path(value).expanduser()) if meta.get("parse") == "path" and value else value
    raise ConfigError(where, f"expected a string, got {shown}")


def _from_env(where: str, text: str, kind: type, meta: typing.Mapping[str, Any]) -> Any:
    """An environment string → the field's type, with the same errors as the file."""
    section, _, key = where.partition(".")
    env_where = f"{_env_name(section, key)} (the environment's {where})"
    if meta.get("parse") in ("size", "duration") or kind is str:
        return _coerce(env_where, text, kind, meta)
    if kind is bool:
        lowered = text.strip().lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off", ""):
            return False
        raise ConfigError(env_where, f"expected true or false, got {_describe(text, meta)}")
    try:
        return kind(text.strip())
    except ValueError:
        expected = "an integer" if kind is int else "a number"
        raise ConfigError(env_where, f"expected {expected}, got {_describe(text, meta)}") from None


def _check(where: str, value: Any, meta: typing.Mapping[str, Any]) -> None:
    if "choices" in meta and value not in meta["choices"]:
        options = ", ".join(repr(c) for c in meta["choices"])
        raise ConfigError(where, f"expected one of {options}, got {_describe(value, meta)}")
    low, high = meta.get("min"), meta.get("max")
    if low is not None and value < low or high is not None and value > high:
        if meta.get("parse") == "size":
            span = f"between {format_size(low or 0)} and {format_size(high or 0)}"
        else:
            span = f"between {low} and {high}"
        raise ConfigError(where, f"expected a value {span}, got {_describe(value, meta)}")


def _same_folder(a: BucketSettings, b: BucketSettings) -> bool:
    """Two local roots that are one folder under two names (a symlink, a bind mount)."""
    if not a.kind == b.kind == "filesystem":
        return False
    try:
        first, second = os.stat(a.root), os.stat(b.root)
    except OSError:
        return False
    return (first.st_dev, first.st_ino) == (second.st_dev, second.st_ino)


def _check_together(settings: Settings) -> None:
    """Rules that involve more than one key."""
    for name in ("source", "destination"):
        side = getattr(settings, name)
        if side.is_folder:
            _check_folder(name, side, settings.ssh)
            continue
        if side.endpoint and not re.match(r"^https?://[^/\s]+", side.endpoint, re.IGNORECASE):
            raise ConfigError(
                f"{name}.endpoint", "expected a URL such as https://s3.example.com"
            )
        if side.endpoint and "@" in urlsplit(side.endpoint).netloc:
            # Never echoed: what stands before the @ is a key and a secret.
            secret = _env_name(name, "secret_access_key")
            raise ConfigError(f"{name}.endpoint", "holds credentials (user:secret@host); give the endpoint "
                                                  f"without them, and the keys as {name}.access_key_id and "
                                                  f"{name}.secret_access_key (or {secret})")
        if not side.bucket:
            raise ConfigError(f"{name}.bucket", "required for kind = \"s3\" (or set kind and root for a folder)")
        if side.root:
            raise ConfigError(f"{name}.root", f"applies to kind = \"filesystem\" or \"sftp\", not {side.kind!r}")
    for name in ("source", "destination"):
        public_url = getattr(settings, name).public_url
        if public_url and not re.match(r"^https?://[^/\s@]+", public_url, re.IGNORECASE):
            raise ConfigError(f"{name}.public_url", "expected the public base URL of the bucket's media, such as "
                                                    "https://media.example.org (a CDN or the bucket's public domain)")
    if settings.destination.owner and not settings.destination.is_folder:
        raise ConfigError("destination.owner", "applies to a folder destination (kind = \"filesystem\" or "
                                               "\"sftp\"); in a bucket, access is the ACL's business")
    from mastosync.sides import side_of

    same = side_of(settings.source, settings.ssh).place() == side_of(settings.destination, settings.ssh).place()
    if same or _same_folder(settings.source, settings.destination):
        what = "folder" if settings.source.is_folder else "bucket and key prefix"
        raise ConfigError("destination", f"is the same {what} as the source: every object would "
                                         "be skipped as already there (use another bucket, key_prefix or root)")
    if settings.source.kind == settings.destination.kind == "filesystem":
        source, destination = (os.path.realpath(s.root) for s in (settings.source, settings.destination))
        if destination.startswith(source.rstrip("/") + "/"):
            raise ConfigError("destination.root", f"is inside the source folder ({settings.source.root}): the "
                                                  "copies would land among the files they are copied from")
    for name in ("source", "destination"):
        side = getattr(settings, name)
        if side.profile and (side.access_key_id or side.secret_access_key):
            raise ConfigError(f"{name}.profile", "give either a profile or access_key_id and secret_access_key, "
                                                 "not both")
        if side.ca_bundle and not Path(side.ca_bundle).is_file():
            raise ConfigError(f"{name}.ca_bundle", f"no such file: {side.ca_bundle}")
    from mastosync.storage.limits import Timetable

    if settings.sync.metrics_addr and not re.fullmatch(r"\[?[\w.:-]*\]?:\d{1,5}", settings.sync.metrics_addr):
        raise ConfigError("sync.metrics_addr", "expected HOST:PORT such as 127.0.0.1:9464 (0.0.0.0:9464 for every "
                                               "interface)")

    try:
        Timetable.parse(settings.sync.bwlimit)
    except ValueError as exc:
        raise ConfigError("sync.bwlimit", f"{exc}; expected a rate such as \"10M\", \"512K\", \"off\", or a "
                                          "timetable such as \"08:00,10M 23:00,off\"") from None
    if settings.database.sslrootcert and not Path(settings.database.sslrootcert).is_file():
        raise ConfigError("database.sslrootcert", f"no such file: {settings.database.sslrootcert}")
    if settings.ssh.enabled:
        for key in ("host", "user"):
            if not getattr(settings.ssh, key):
                raise ConfigError(f"ssh.{key}", "required when ssh.enabled is true")


def _check_folder(name: str, side: BucketSettings, ssh: SshSettings) -> None:
    if not side.root:
        raise ConfigError(f"{name}.root", f"required for kind = {side.kind!r}: the folder holding Mastodon's "
                                          "files (public/system, or PAPERCLIP_ROOT_PATH)")
    for key in ("bucket", "endpoint", "key_prefix", "profile", "access_key_id", "secret_access_key"):
        if getattr(side, key):
            raise ConfigError(f"{name}.{key}", f"applies to kind = \"s3\", not {side.kind!r} (a folder's files "
                                               "are under root, with the same relative keys as in a bucket)")
    if side.kind == "sftp" and not (ssh.host and ssh.user):
        raise ConfigError(f"{name}.kind", "\"sftp\" reads the folder over the [ssh] connection: set ssh.host "
                                          "and ssh.user (ssh.enabled decides only whether the database goes "
                                          "through it too)")
