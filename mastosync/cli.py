"""The command line: parse options, load configuration, call the command, map errors to exit codes.

Besides parsing (--since, --shard, --bwlimit, --metrics) nothing is decided here. Every
MastosyncError becomes one line on stderr and its exit code; any other exception is a defect:
one line, exit 70, the traceback in a file.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from datetime import datetime
from typing import Any

import click

from mastosync import __version__, config
from mastosync.errors import InternalError, MastosyncError
from mastosync.mastodon import layout
from mastosync.redact import redact
from mastosync.request import parse_shard, parse_since

TYPE_HELP = (
    "Object type to process: "
    + ", ".join(layout.TYPE_NAMES)
    + ". Repeat for several. Without --type (or with --all): all of them."
)


def _since(value: datetime | str | None) -> dict[str, Any]:
    """The Request fields for --since: a time, or "last" (resolved once the state is known)."""
    return {"since_last": True} if value == "last" else {"since": value}


def _since_callback(ctx: click.Context, param: click.Parameter, value: str | None) -> datetime | str | None:
    from mastosync.errors import UsageError

    try:
        return parse_since(value)
    except UsageError as exc:  # click's usage line: the option, and where --help is
        raise click.BadParameter(str(exc).removeprefix("--since "),
                                 param_hint="'--since'") from None


def config_option(f: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--config",
        "config_path",
        metavar="PATH",
        help=f"Configuration file. Default: ${config.ENV_PATH}, else ./{config.DEFAULT_PATH}.",
    )(f)


def selection_options(f: Callable[..., Any]) -> Callable[..., Any]:
    f = click.option(
        "--all", "all_types", is_flag=True, help="Process every type (the default)."
    )(f)
    f = click.option(
        "--type",
        "types",
        multiple=True,
        type=click.Choice(layout.TYPE_NAMES),
        metavar="TYPE",
        help=TYPE_HELP,
    )(f)
    return f


def limit_option(f: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--limit",
        type=click.IntRange(min=1),
        metavar="N",
        help="Only the first N records (by id) of each type.",
    )(f)


def since_option(f: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--since",
        metavar="TIME",
        callback=_since_callback,
        help="Only attachments updated at or after TIME (ISO-8601 date or datetime; "
        "without a zone, UTC). `last`: the start of the last completed run of the same "
        "migration (buckets, prefixes, types): the catch-up after switching Mastodon over.",
    )(f)


def _shard_callback(ctx: click.Context, param: click.Parameter, value: str | None) -> tuple[int, int] | None:
    return parse_shard(value)


def shard_option(f: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--shard", metavar="K/N", callback=_shard_callback,
        help="Only this process's share of every type: records with id mod N = K-1 (1 <= K <= N). Run N "
        "processes with K = 1..N, at once, on the same state_dir. auto/N: K from JOB_COMPLETION_INDEX "
        "(Kubernetes Indexed Job) or AWS_BATCH_JOB_ARRAY_INDEX, plus one (they count from 0).",
    )(f)


def json_option(f: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")(f)


def chosen_types(types: tuple[str, ...], all_types: bool) -> tuple[str, ...]:
    if all_types or not types:
        return layout.TYPE_NAMES
    return tuple(dict.fromkeys(types))  # keep the user's order, drop repeats


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="mastosync")
@config_option
def cli(config_path: str | None) -> None:
    """Copy a Mastodon instance's media between S3-compatible buckets and local folders.

    mastosync reads the instance's PostgreSQL database, works out the exact object
    keys Mastodon wrote for every record, and copies those objects: orphans stay
    behind, headers and ACLs come along, interrupted runs resume, and `verify`
    proves the destination is complete. Either side may be a bucket, a folder here
    (Mastodon's public/system) or a folder on the SSH host (kind = "filesystem"/"sftp").

    The usual migration: `check`, then `dry-run` to look, `run --all` while the instance
    keeps running (`--processes auto` for every core, `--bwlimit` to spare the uplink,
    `--metrics` for Prometheus), `verify --all`, switch Mastodon over (`cutover` prints
    the settings once verify found the destination complete), `run --all --since last`
    to catch up, then `verify --all` again. Already migrated with another tool:
    `audit`, `fix`.

    Exit codes: 0 success; 1 objects failed to copy, verify or audit found gaps, an
    endpoint went down or a disk filled up; 2 bad usage, bad configuration, a source
    setting pointing at the wrong place, or an unreachable service; 70 an internal error
    (a defect: traceback in a file under sync.state_dir); 130 Ctrl-C; 143 SIGTERM.
    """


@cli.command()
@config_option
@selection_options
@click.option(
    "--concurrency",
    type=click.IntRange(1, 1024),
    metavar="N",
    help="Objects copied at once (default: sync.concurrency from the configuration).",
)
@limit_option
@since_option
@shard_option
@click.option(
    "--restart",
    is_flag=True,
    help="Ignore saved progress and go through every record again "
    "(objects already at the destination with the same size are still skipped).",
)
@click.option("--log-file", metavar="PATH",
              help="Append one JSON object per line for each failed or missing object, each retry, each "
              "progress tick and the summary (follow it with `tail -f PATH | jq`).")
@click.option("--json", "as_json", is_flag=True,
              help="Print the final summary as one JSON object on stdout (progress and table go to stderr).")
@click.option("--accept-missing", is_flag=True,
              help="Go on when (nearly) every object of a type is absent at the source: by default that stops the "
              "command, as a wrong source.key_prefix or source.root looks just like it.")
@click.option("--checksum", is_flag=True,
              help="Skip an object already at the destination only when its content is the same (equal MD5 "
              "ETags), not merely its size; copy it again otherwise. Costs a HEAD on both sides per object.")
@click.option("--bwlimit", metavar="RATE|TIMETABLE",
              help="Object bytes read from the source per second, all copies together: 10M, 512K, off, or a "
              "timetable by local time as rclone writes it, \"08:00,10M 23:00,off\" (default: sync.bwlimit). "
              "Server-side copies move no byte through mastosync and are not limited.")
@click.option("--processes", "processes", metavar="N|auto",
              help="Run N local worker processes, each the shard K/N of the migration (as --shard), under one "
              "merged progress, summary, report and exit code: every core of the machine. --concurrency and the "
              "limits are shared out among them. auto: one per core.")
@click.option("--metrics", "metrics_addr", metavar="ADDR",
              help="Serve Prometheus metrics at http://ADDR/metrics while running, e.g. 127.0.0.1:9464 (default: "
              "sync.metrics_addr); they stay up sync.metrics_linger (15 s) after the run for the last scrape.")
@click.option("--tpslimit", type=click.FloatRange(0), metavar="N",
              help="Requests per second to each bucket, for providers that bill or throttle by request "
              "(default: sync.tpslimit; 0: none).")
def run(
    config_path: str | None,
    types: tuple[str, ...],
    all_types: bool,
    concurrency: int | None,
    limit: int | None,
    since: datetime | str | None,
    shard: tuple[int, int] | None,
    restart: bool,
    log_file: str | None,
    as_json: bool,
    accept_missing: bool,
    checksum: bool,
    bwlimit: str | None,
    processes: str | None,
    metrics_addr: str | None,
    tpslimit: float | None,
) -> None:
    """Copy every object the database references to the destination bucket.

    Objects already at the destination with the same size are skipped without moving
    data; one that differs and is newer at the destination (Mastodon wrote it after the
    switch) is kept. Progress is saved as it goes; Ctrl-C stops cleanly and the next run
    resumes. Every run also sets again the visibility (ACL, or file mode) of media whose
    account was suspended or unsuspended, or whose post was removed, since the last run.
    A report of failed and missing objects is written under sync.state_dir.
    """
    import dataclasses
    import re

    from mastosync.commands import run as run_command
    from mastosync.commands.processes import processes_for
    from mastosync.errors import UsageError
    from mastosync.request import Request
    from mastosync.storage.limits import Timetable

    settings = _load(config_path)
    if bwlimit is not None:
        try:
            Timetable.parse(bwlimit)
        except ValueError as exc:
            raise UsageError(f"--bwlimit: {exc}; expected 10M, 512K, off, or \"08:00,10M 23:00,off\"") from None
    if metrics_addr is not None and not re.fullmatch(r"\[?[\w.:-]*\]?:\d{1,5}", metrics_addr):
        raise UsageError(f"--metrics {metrics_addr!r}: expected HOST:PORT such as 127.0.0.1:9464")
    sync = settings.sync
    settings = dataclasses.replace(settings, sync=dataclasses.replace(
        sync, bwlimit=sync.bwlimit if bwlimit is None else bwlimit,
        tpslimit=sync.tpslimit if tpslimit is None else tpslimit,
        metrics_addr=sync.metrics_addr if metrics_addr is None else metrics_addr))
    run_command.run(
        settings,
        Request(
            types=chosen_types(types, all_types),
            limit=limit,
            **_since(since),
            concurrency=concurrency or settings.sync.concurrency,
            restart=restart,
            shard=shard,
            log_file=log_file,
            as_json=as_json,
            checksum=checksum,
            processes=processes_for(processes) if processes is not None else 1,
            accept_missing=accept_missing,
        ),
    )


@cli.command("dry-run")
@config_option
@selection_options
@limit_option
@since_option
@shard_option
@json_option
@click.option("--format", "output_format", type=click.Choice(["text", "json", "rclone", "s3-batch-csv"]),
              default=None, help="text (the default), json (as --json), rclone (one source key per line, for "
              "`rclone copy --files-from-raw`), s3-batch-csv (bucket,key lines: an S3 Batch Operations "
              "manifest). The last two hand a same-provider copy to that engine; they list source keys.")
def dry_run(
    config_path: str | None,
    types: tuple[str, ...],
    all_types: bool,
    limit: int | None,
    since: datetime | str | None,
    shard: tuple[int, int] | None,
    as_json: bool,
    output_format: str | None,
) -> None:
    """Print, one line per object, what `run` would copy: type, id, source key, destination key.

    Reads the database only (through the SSH tunnel when configured); writes nothing
    anywhere and needs no bucket credentials.
    """
    from mastosync.commands import dryrun
    from mastosync.request import Request

    settings = _load(config_path)
    dryrun.dry_run(
        settings,
        Request(types=chosen_types(types, all_types), limit=limit, **_since(since), shard=shard),
        output_format=output_format or ("json" if as_json else "text"),
    )


@cli.command()
@config_option
@selection_options
@limit_option
@since_option
@shard_option
@click.option(
    "--concurrency",
    type=click.IntRange(1, 1024),
    metavar="N",
    help="Objects checked at once (default: sync.concurrency).",
)
@json_option
@click.option("--accept-missing", is_flag=True,
              help="Go on when (nearly) every object of a type is absent at the source: by default that stops the "
              "command, as a wrong source.key_prefix or source.root looks just like it.")
@click.option("--checksum", is_flag=True,
              help="Compare content too: equal MD5 ETags prove it without reading; see --sample for the rest.")
@click.option("--sample", type=click.FloatRange(0, 100), default=0.0, metavar="P",
              help="With --checksum: download P%% of the objects without comparable ETags (multipart, "
                   "folders) from both sides and compare their MD5s (default 0).")
def verify(
    config_path: str | None,
    types: tuple[str, ...],
    all_types: bool,
    limit: int | None,
    since: datetime | str | None,
    shard: tuple[int, int] | None,
    concurrency: int | None,
    as_json: bool,
    accept_missing: bool,
    checksum: bool,
    sample: float,
) -> None:
    """Check that every object present at the source is at the destination with the same size.

    Prints each object that is absent or different at the destination, and those the
    database references but the source lacks. Exit 1 when the destination lacks
    anything the source has. With --checksum, the content too.
    """
    from mastosync.commands import verify as verify_command
    from mastosync.request import Request

    settings = _load(config_path)
    verify_command.verify(
        settings,
        Request(
            types=chosen_types(types, all_types),
            limit=limit,
            **_since(since),
            shard=shard,
            concurrency=concurrency or settings.sync.concurrency,
            accept_missing=accept_missing,
        ),
        as_json=as_json,
        checksum=checksum,
        sample=sample,
    )


side_option = click.option("--side", type=click.Choice(["source", "destination"]), default="destination",
                           show_default=True, help="Which side of the configuration to look at.")


@cli.command("audit")
@config_option
@selection_options
@shard_option
@side_option
@click.option("--headers", is_flag=True, help="Also check Content-Type, Cache-Control and the ACL (public or not).")
@click.option("--sample", type=click.IntRange(1), metavar="N", help="With --headers: N objects per type (default all).")
@click.option("--min-age", "min_age", default="1h", show_default=True, metavar="DURATION",
              help="Objects written more recently than this before the audit began are never listed as orphans "
              "(Mastodon writes a file before its row commits: a live upload has no row yet). 30m, 2h, 1d.")
@json_option
def audit_command(config_path: str | None, types: tuple[str, ...], all_types: bool, shard: tuple[int, int] | None,
                  side: str, headers: bool, sample: int | None, min_age: str, as_json: bool) -> None:
    """Compare a bucket (or folder) with what the database expects; read-only.

    Per type: expected, present, missing, size mismatches, (with --headers) wrong headers and
    ACLs, and orphans: objects no record references, listed in a JSON-lines file under
    sync.state_dir for you to check and delete (mastosync never deletes). "missing" means
    what it means in run and verify: referenced, at neither side; reported, not an error.
    Exit 1 when the destination lacks an object the source has.
    """
    from mastosync.commands import audit
    from mastosync.config.units import parse_duration
    from mastosync.errors import UsageError
    from mastosync.request import Request

    try:
        age = parse_duration(min_age)
    except ValueError:
        raise UsageError(f"--min-age {min_age!r}: expected a duration such as 30m, 1h or 2d") from None
    settings = _load(config_path)
    audit.audit(settings, Request(types=chosen_types(types, all_types), shard=shard,
                                  concurrency=settings.sync.concurrency),
                audit.Audit(side=side, headers=headers, sample=sample, as_json=as_json, min_age=age))


@cli.command("fix")
@config_option
@selection_options
@shard_option
@side_option
@click.option("--acl", "fix_acl", is_flag=True, help="Set the ACL Mastodon would have (private objects stay private).")
@click.option("--headers", "fix_headers", is_flag=True,
              help="Set Content-Type and Cache-Control as Mastodon writes them (CopyObject onto itself).")
@click.option("--dry-run", "dry_run", is_flag=True, help="Say what would be fixed; change nothing.")
def fix_command(config_path: str | None, types: tuple[str, ...], all_types: bool, shard: tuple[int, int] | None,
                side: str, fix_acl: bool, fix_headers: bool, dry_run: bool) -> None:
    """Repair in place the ACL and headers of the objects the database references.

    For buckets an earlier copy left with every avatar private or binary/octet-stream
    everywhere. Only objects that differ are touched; objects already right cost a HEAD
    (and an ACL read), nothing more.
    """
    from mastosync.commands import audit
    from mastosync.errors import UsageError
    from mastosync.request import Request

    if not (fix_acl or fix_headers):
        raise UsageError("fix: say what to fix: --acl, --headers, or both")
    settings = _load(config_path)
    audit.audit(settings, Request(types=chosen_types(types, all_types), shard=shard,
                                  concurrency=settings.sync.concurrency),
                audit.Audit(side=side, fix_acl=fix_acl, fix_headers=fix_headers, dry_run=dry_run))


@cli.command("init")
@click.option("--from-env", "env_path", required=True, metavar="PATH",
              help="Mastodon's .env.production (on this machine, or on the SSH host with --over-ssh).")
@click.option("--over-ssh", is_flag=True,
              help="Read PATH on the [ssh] host of the configuration given with --config (over SFTP).")
@click.option("--output", default=config.DEFAULT_PATH, metavar="PATH", show_default=True,
              help="Where to write the configuration; an existing file is never overwritten.")
@config_option
def init(env_path: str, over_ssh: bool, output: str, config_path: str | None) -> None:
    """Write a configuration from Mastodon's .env.production.

    [database] and [source] come from DB_* and S3_*; [destination] is left to fill in.
    Secrets (DB_PASS, the AWS keys) are not written: the MASTOSYNC_* variables to set
    instead are listed, by name.
    """
    from mastosync.commands import init as init_config

    if over_ssh and config_path is None:
        config_path = click.get_current_context().find_root().params.get("config_path")
    target, where, made = init_config.write_config(env_path, output, config_path if over_ssh else None, over_ssh)
    click.echo(f"wrote {target.resolve()} from {where}:")
    for variable, setting in made.used:
        click.echo(f"  {variable} -> {setting}")
    if made.unused:
        click.echo("not used: " + ", ".join(made.unused))
    click.echo("fill in [destination], then set these variables (the values are in the env file):")
    for name in made.to_set:
        click.echo(f"  {name}")


@cli.command()
@config_option
def status(config_path: str | None) -> None:
    """Print the whole migration's progress from every resume state under sync.state_dir.

    Shards included: each shard's state, which shards have not started, and the total.
    Reads only the state directory. Exit 0 when every state is complete, else 1.
    """
    from mastosync.commands import status as migration

    text, complete = migration.report(_load(config_path).sync.state_dir)
    click.echo(text, nl=False)
    sys.exit(0 if complete else 1)


@cli.command("check")
@config_option
@json_option
def check_command(config_path: str | None, as_json: bool) -> None:
    """Know before starting: one row per check, passed or not, with the fix.

    The configuration; the SSH host key; the database (reachable, its Mastodon version,
    SELECT on every table read); the source (readable, and a sample of the objects the
    database references present: a wrong key_prefix or root shows here); the destination
    (writable, multipart uploads, the ACL accepted or ACLs disabled); each endpoint's clock;
    free space for a folder destination; and the estimate: objects, bytes, and the time at
    the speed measured on the sample. Writes nothing that stays. Exit 0 when every check
    passes, 1 otherwise.
    """
    import asyncio
    import json

    from mastosync.commands import check
    from mastosync.errors import ConfigError

    try:
        settings = _load(config_path)
    except ConfigError as exc:
        rows = [check.Row("configuration", False, str(exc), "see config.sample.toml")]
    else:
        rows = asyncio.run(check.run_checks(settings, settings.sync.concurrency))
    if as_json:
        click.echo(json.dumps(check.as_json(rows)))
    else:
        click.echo(redact(check.render(rows)), nl=False)
    sys.exit(0 if check.as_json(rows)["ok"] else 1)


@cli.command("cutover")
@config_option
def cutover_command(config_path: str | None) -> None:
    """Print what to change to switch Mastodon to the destination bucket.

    The .env.production lines (one block, paste-ready, media URLs built as Mastodon builds
    them), the Content-Security-Policy step a week ahead, and an nginx snippet that serves
    old /system/ URLs from the new bucket. Printed once the last `verify --all` found
    nothing absent or different (until then, only the step a week ahead; exit 1). Reads
    the state directory; connects to nothing.
    """
    from mastosync.commands import cutover
    from mastosync.errors import VerifyGaps
    from mastosync.state.history import RunHistory

    settings = _load(config_path)
    verified = RunHistory(settings.sync.state_dir).last_verify(settings)
    unproven = [name for name in layout.TYPE_NAMES if verified.get(name) is not True]
    if unproven:
        if not settings.destination.is_folder:
            click.echo(cutover.week_ahead(settings))
        found = ", ".join(f"{name}: {'gaps found' if verified.get(name) is False else 'not verified'}"
                          for name in unproven)
        raise VerifyGaps(f"the cut-over settings are printed once `mastosync verify --all` has found nothing absent "
                         f"or different ({found})")
    click.echo(cutover.instructions(settings, RunHistory(settings.sync.state_dir).mastodon()), nl=False)


class _RedactingFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = redact(record.getMessage())
        record.args = ()
        return True


# Where a defect's traceback is written: the state directory once the configuration is read.
_crash_dir: str | None = None


def _load(config_path: str | None) -> config.Settings:
    global _crash_dir
    # `mastosync --config PATH run` as well as `mastosync run --config PATH` (the latter wins).
    if config_path is None:
        config_path = click.get_current_context().find_root().params.get("config_path")
    settings = config.load(config.config_path(config_path))
    _crash_dir = settings.sync.state_dir
    redact.add(settings.secrets)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("mastosync: %(levelname)s: %(message)s"))
    handler.addFilter(_RedactingFilter())
    logging.basicConfig(level=logging.WARNING, handlers=[handler], force=True)
    # asyncio's own warnings ("socket.send() raised exception." after a peer resets) say
    # nothing mastosync does not report better itself; its errors still show.
    logging.getLogger("asyncio").setLevel(logging.ERROR)
    return settings


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the CLI and turn every known failure into one line and an exit code."""
    try:
        code = cli.main(args=argv, prog_name="mastosync", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("mastosync: aborted", err=True)
        sys.exit(130)
    except click.UsageError as exc:  # one line, like every other error (click's own is four)
        where = exc.ctx.command_path if exc.ctx is not None else "mastosync"
        click.echo(f"mastosync: error: {exc.format_message()} (see '{where} --help')", err=True)
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except MastosyncError as exc:
        if isinstance(exc, InternalError) and exc.log_path is None:
            exc.log_path = write_traceback(exc)
        click.echo(redact(f"mastosync: error: {exc}"), err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        click.echo("mastosync: interrupted", err=True)
        sys.exit(130)
    except Exception as exc:  # a defect outside the engine: one line, the traceback in a file, 70
        internal = InternalError(exc)
        internal.log_path = write_traceback(internal)
        click.echo(redact(f"mastosync: error: {internal}"), err=True)
        sys.exit(internal.exit_code)
    sys.exit(code if isinstance(code, int) else 0)


def write_traceback(error: InternalError) -> str | None:
    """The traceback of a defect, redacted, in a file under the state directory (else the
    temporary folder); its path, or None when no file could be written."""
    import os
    import tempfile
    from pathlib import Path

    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    for folder in (_crash_dir, tempfile.gettempdir()):
        if folder is None:
            continue
        try:
            path = Path(folder).resolve() / f"crash-{stamp}-{os.getpid()}.log"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(redact(error.traceback))
            return str(path)
        except OSError:
            continue
    return None
