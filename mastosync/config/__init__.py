"""Configuration: a TOML file plus MASTOSYNC_<SECTION>_<KEY> overrides -> frozen settings.

    settings.py  the schema: one frozen dataclass per section; each field's metadata says how
                 to read and check it
    units.py     sizes and durations as people write them
    load.py      reading, overriding, checking: every problem a ConfigError naming the key

The package's names are its public face (config.load, config.Settings ...).
"""

from mastosync.config.load import DEFAULT_PATH, ENV_PATH, config_path, load, load_ssh
from mastosync.config.settings import (
    ACLS,
    FOLDER_KINDS,
    KINDS,
    REQUIRED_SECTIONS,
    SECTIONS,
    BucketSettings,
    DatabaseSettings,
    DestinationSettings,
    Settings,
    SshSettings,
    SyncSettings,
)
from mastosync.config.units import UNITS, GiB, MiB, format_size, parse_duration, parse_size

__all__ = ["ACLS", "DEFAULT_PATH", "ENV_PATH", "FOLDER_KINDS", "KINDS", "REQUIRED_SECTIONS", "SECTIONS", "UNITS",
           "BucketSettings", "DatabaseSettings", "DestinationSettings", "GiB", "MiB", "Settings", "SshSettings",
           "SyncSettings", "config_path", "format_size", "load", "load_ssh", "parse_duration", "parse_size"]
