"""Configuration: every error names its key, exits 2 with one line, and never echoes a secret."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from mastosync import config
from mastosync.errors import ConfigError
from tests.conftest import run_cli
from tests.services.process import free_port

MINIMAL = """
[source]
bucket = "old"
[destination]
bucket = "new"
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text)
    return path


def test_minimal_config_has_spec_defaults(tmp_path: Path) -> None:
    s = config.load(write(tmp_path, MINIMAL), environ={})
    assert s.database.host == "127.0.0.1" and s.database.port == 5432
    assert s.database.name == "mastodon_production" and s.database.user == "mastodon"
    assert s.ssh.enabled is False and s.ssh.port == 22
    assert s.destination.acl == "public-read" and s.destination.storage_class == ""
    assert s.sync.concurrency == 32 and s.sync.include_remote is True
    assert s.sync.multipart_threshold == 16 * 1024 * 1024 and s.sync.part_size == 8 * 1024 * 1024
    # Relative to the configuration file's folder, not to where mastosync was started.
    assert s.sync.state_dir == str(tmp_path.resolve() / ".mastosync")
    assert s.source.addressing_style == "path"


def test_relative_paths_are_taken_from_the_config_folder(tmp_path: Path) -> None:
    folder = tmp_path / "etc" / "mastosync"
    folder.mkdir(parents=True)
    (folder / "ca.pem").write_text("not read here")
    path = write(folder, MINIMAL.replace("[source]", '[source]\nca_bundle = "ca.pem"', 1)
                 + '[ssh]\nkey_file = "keys/id"\n[sync]\nstate_dir = "state"\n')
    s = config.load(path, environ={})
    assert s.ssh.key_file == str(folder.resolve() / "keys" / "id")
    assert s.sync.state_dir == str(folder.resolve() / "state")
    assert s.source.ca_bundle == str(folder.resolve() / "ca.pem")
    absolute = config.load(path, environ={"MASTOSYNC_SYNC_STATE_DIR": "/var/lib/mastosync"})
    assert absolute.sync.state_dir == "/var/lib/mastosync"


def test_sample_config_is_valid_and_documents_every_key(tmp_path: Path) -> None:
    sample = Path(__file__).resolve().parents[1] / "config.sample.toml"
    s = config.load(sample, environ={})
    assert s.source.bucket == "mastodon-old" and s.destination.region == "auto"
    text = sample.read_text()
    for section, cls in config.SECTIONS.items():
        assert f"[{section}]" in text
        own = text.split(f"\n[{section}]", 1)[1].split("\n[", 1)[0]  # this section only, not the ones after
        for field in dataclasses.fields(cls):
            assert f"\n{field.name} =" in own, f"{section}.{field.name} undocumented"


def test_environment_overrides_every_type(tmp_path: Path) -> None:
    env = {
        "MASTOSYNC_SOURCE_SECRET_ACCESS_KEY": "from-env-secret",
        "MASTOSYNC_DATABASE_PASSWORD": "pw-from-env",
        "MASTOSYNC_DATABASE_PORT": "6543",
        "MASTOSYNC_SYNC_INCLUDE_REMOTE": "false",
        "MASTOSYNC_SYNC_PART_SIZE": "6MiB",
        "MASTOSYNC_SSH_ENABLED": "yes",
        "MASTOSYNC_SSH_HOST": "example.org",
        "MASTOSYNC_SSH_USER": "admin",
    }
    s = config.load(write(tmp_path, MINIMAL), environ=env)
    assert s.source.secret_access_key == "from-env-secret"
    assert s.database.password == "pw-from-env" and s.database.port == 6543
    assert s.sync.include_remote is False and s.sync.part_size == 6 * 1024 * 1024
    assert s.ssh.enabled and s.ssh.host == "example.org"
    assert "from-env-secret" in s.secrets and "pw-from-env" in s.secrets
    assert "from-env-secret" not in repr(s) and "pw-from-env" not in repr(s)


def test_tilde_is_expanded_in_paths(tmp_path: Path) -> None:
    s = config.load(write(tmp_path, MINIMAL + '[sync]\nstate_dir = "~/mastosync-state"\n'), environ={})
    assert s.sync.state_dir == str(Path.home() / "mastosync-state")


@pytest.mark.parametrize(
    "text,expected",
    [("16MiB", 16 * 2**20), ("8MB", 8_000_000), ("1024", 1024), ("5 GiB", 5 * 2**30),
     ("1.5MiB", int(1.5 * 2**20)), ("10k", 10240), ("7b", 7)],
)
def test_parse_size(text: str, expected: int) -> None:
    assert config.parse_size(text) == expected


@pytest.mark.parametrize("text", ["", "lots", "5 parsecs", "-1MiB", "MiB"])
def test_parse_size_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        config.parse_size(text)


BAD = [
    ("unknown key", MINIMAL + "[sync]\nbogus = 1\n", "sync.bogus: unknown key"),
    ("unknown section", MINIMAL + "[extra]\nx = 1\n", "extra: unknown section"),
    ("wrong type", MINIMAL + '[sync]\nconcurrency = "ten"\n', "sync.concurrency: expected an integer"),
    ("wrong bool", MINIMAL + '[sync]\ninclude_remote = "no"\n', "sync.include_remote: expected true or false"),
    ("missing bucket", "[source]\nbucket = 'x'\n[destination]\nacl = ''\n",
     "destination.bucket: required for kind = \"s3\""),
    ("missing section", "[source]\nbucket = 'x'\n", "destination: section is required"),
    ("concurrency 0", MINIMAL + "[sync]\nconcurrency = 0\n", "sync.concurrency: expected a value between 1 and 1024"),
    ("concurrency huge", MINIMAL + "[sync]\nconcurrency = 100000\n", "sync.concurrency: expected a value between"),
    ("part too small", MINIMAL + '[sync]\npart_size = "1MiB"\n', "sync.part_size: expected a value between 5.0 MiB"),
    ("bad size", MINIMAL + '[sync]\nmultipart_threshold = "huge"\n', "sync.multipart_threshold: expected a size"),
    ("bad acl", MINIMAL.replace('bucket = "new"', 'bucket = "new"\nacl = "world"'), "destination.acl: expected one of"),
    ("acl on source", MINIMAL.replace('bucket = "old"', 'bucket = "old"\nacl = ""'), "source.acl: unknown key"),
    ("bad endpoint", MINIMAL.replace('bucket = "old"', 'bucket = "old"\nendpoint = "s3.example.com"'),
     "source.endpoint: expected a URL"),
    ("bad style", MINIMAL.replace('bucket = "old"', 'bucket = "old"\naddressing_style = "dns"'),
     "source.addressing_style: expected one of"),
    ("ssh without host", MINIMAL + "[ssh]\nenabled = true\nuser = 'x'\n", "ssh.host: required when ssh.enabled"),
    ("section not a table", "sync = 3\n" + MINIMAL, "sync: expected a table"),
    ("malformed toml", "[source\nbucket = 'x'", "is not valid TOML"),
    ("port range", MINIMAL + "[database]\nport = 70000\n", "database.port: expected a value between 1 and 65535"),
]


@pytest.mark.parametrize("text,message", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_configuration_is_named(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        config.load(write(tmp_path, text), environ={})
    assert message in str(info.value)


def test_bad_environment_value_is_named(tmp_path: Path) -> None:
    named = r"MASTOSYNC_SYNC_CONCURRENCY \(the environment's sync.concurrency\): expected an integer"
    with pytest.raises(ConfigError, match=named):
        config.load(write(tmp_path, MINIMAL), environ={"MASTOSYNC_SYNC_CONCURRENCY": "lots"})


def test_secret_values_are_never_echoed(tmp_path: Path) -> None:
    text = MINIMAL.replace('bucket = "new"', 'bucket = "new"\nsecret_access_key = ["hunter2-very-secret"]')
    with pytest.raises(ConfigError) as info:
        config.load(write(tmp_path, text), environ={})
    assert "destination.secret_access_key: expected a string" in str(info.value)
    assert "hunter2" not in str(info.value)


# -- through the CLI: exit 2, one line on stderr, no traceback --------------------------


@pytest.mark.parametrize("text,message", [b[1:] for b in BAD[:8]], ids=[b[0] for b in BAD[:8]])
def test_cli_reports_configuration_errors(tmp_path: Path, text: str, message: str) -> None:
    result = run_cli("dry-run", config=write(tmp_path, text))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert message in lines[0]
    assert "Traceback" not in result.stderr


def test_cli_missing_file(tmp_path: Path) -> None:
    result = run_cli("run", config=tmp_path / "nope.toml")
    assert result.returncode == 2
    assert "nope.toml not found" in result.stderr and "Traceback" not in result.stderr


def test_cli_finds_config_through_environment_then_cwd(tmp_path: Path) -> None:
    bad = write(tmp_path, MINIMAL + "[sync]\nconcurrency = 0\n")
    result = run_cli("dry-run", env={"MASTOSYNC_CONFIG": str(bad)})
    assert result.returncode == 2 and "sync.concurrency" in result.stderr
    result = run_cli("dry-run", cwd=tmp_path)  # ./config.toml
    assert result.returncode == 2 and "sync.concurrency" in result.stderr


def test_cli_secret_from_environment_not_echoed(tmp_path: Path) -> None:
    # A bad value of an ordinary key is shown (it helps) …
    shown = run_cli("dry-run", config=write(tmp_path, MINIMAL), env={"MASTOSYNC_DATABASE_PORT": "not-a-port-x7"})
    assert shown.returncode == 2 and "database.port" in shown.stderr and "not-a-port-x7" in shown.stderr
    # … a secret is not, neither in a configuration error nor in a failure that involves it.
    for extra in ({"MASTOSYNC_SYNC_RETRIES": "x"}, {"MASTOSYNC_DATABASE_PORT": str(free_port())}):
        failed = run_cli("dry-run", config=write(tmp_path, MINIMAL),
                         env={**extra, "MASTOSYNC_DATABASE_PASSWORD": "pw-77-secret"})
        assert failed.returncode == 2 and failed.stderr.startswith("mastosync: error: "), failed.stderr
        assert "pw-77-secret" not in failed.stderr + failed.stdout


def test_help_explains_every_option() -> None:
    top = run_cli("--help")
    assert top.returncode == 0
    for command in ("run", "dry-run", "verify"):
        assert command in top.stdout
    for command, options in {
        "run": ["--config", "--type", "--all", "--concurrency", "--limit", "--since", "--restart"],
        "dry-run": ["--config", "--type", "--all", "--limit", "--since", "--json"],
        "verify": ["--config", "--type", "--all", "--json"],
    }.items():
        out = run_cli(command, "--help")
        assert out.returncode == 0
        for option in options:
            assert option in out.stdout, (command, option)


@pytest.mark.parametrize("argv,message", [
    (("run", "--type", "statuses"), "'statuses' is not one of"),
    (("dry-run", "--since", "yesterday-ish"), "not an ISO-8601 date"),
    (("verify", "--bogus"), "No such option '--bogus'"),
    (("run", "--concurrency", "0"), "--concurrency"),
])
def test_usage_errors_are_one_line_and_exit_2(argv: tuple[str, ...], message: str) -> None:
    result = run_cli(*argv)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("mastosync: error: "), result.stderr
    assert message in result.stderr and f"see 'mastosync {argv[0]} --help'" in result.stderr


@pytest.mark.parametrize("where", ["before", "after"])
def test_config_option_before_or_after_the_command(tmp_path: Path, where: str) -> None:
    """`mastosync --config PATH run` (as in a systemd unit) reads the same file as `run --config PATH`."""
    import subprocess
    import sys

    from tests.conftest import ROOT

    path = write(tmp_path, MINIMAL + "[sync]\nno_such_key = 1\n")
    argv = ["--config", str(path), "dry-run"] if where == "before" else ["dry-run", "--config", str(path)]
    result = subprocess.run([sys.executable, "-m", "mastosync", *argv], capture_output=True, text=True, cwd=ROOT,
                            timeout=60)
    assert result.returncode == 2
    assert "sync.no_such_key: unknown key" in result.stderr


def test_cutover_waits_for_a_clean_verify(tmp_path: Path) -> None:
    """Before a verify --all found the destination complete, `cutover` prints only the step a
    week ahead, and exits 1 naming what is unproven."""
    text = """
[source]
endpoint = "https://s3.eu-central-1.amazonaws.com"
region = "eu-central-1"
bucket = "mastodon-old"
[destination]
endpoint = "https://account.r2.cloudflarestorage.com"
region = "auto"
bucket = "mastodon-new"
public_url = "https://media.example.org"
acl = ""
"""
    result = run_cli("cutover", config=write(tmp_path, text))
    assert result.returncode == 1, result.stderr
    assert "EXTRA_MEDIA_HOSTS=https://media.example.org" in result.stdout
    assert "S3_BUCKET" not in result.stdout
    assert "media_attachments: not verified" in result.stderr and len(result.stderr.splitlines()) == 1


def test_shell_completion_as_documented() -> None:
    """README: `_MASTOSYNC_COMPLETE=bash_source mastosync` prints a completion script."""
    import subprocess
    import sys

    from tests.conftest import ROOT

    for shell in ("bash", "zsh", "fish"):
        result = subprocess.run([sys.executable, "-c", "from mastosync.cli import main; main()"],
                                env={"_MASTOSYNC_COMPLETE": f"{shell}_source", "PATH": "/usr/bin:/bin"},
                                capture_output=True, text=True, cwd=ROOT, timeout=60)
        assert result.returncode == 0 and "_MASTOSYNC_COMPLETE" in result.stdout, (shell, result.stderr)


def test_an_unusable_state_dir_is_one_line(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the state directory should be")
    path = write(tmp_path, MINIMAL + f'[sync]\nstate_dir = "{blocker}"\n')
    result = run_cli("run", config=path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "sync.state_dir" in lines[0] and "cannot use" in lines[0], result.stderr
