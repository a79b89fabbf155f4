"""`cdc position ...`: show, set, reset, export and import the stored checkpoint.

Every command that changes the checkpoint follows the same steps: take the connector's lease
(Redis; held until the command ends, so no connector with `ha.enabled` starts streaming
meanwhile, and the write is fenced by it); refuse while a connector of that name holds the
lease or is running (its heartbeat says running or degraded) unless `--force`; build the new
checkpoint and validate it against the server (a purged or unknown position is refused with the
reason); print what changes (old -> new); ask for confirmation unless `--yes` (without a
terminal and without `--yes` it refuses); then save.

Versions (see `cdc.model.versions`): `set` and `reset` keep the stored counter, so the
transactions read from the new position get higher versions than anything written before and
a rewind re-applies history; with no stored checkpoint the counter starts from the clock.
`import` restores an exported checkpoint exactly, counter included, so replaying from it
reproduces the versions the documents got the first time.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any

import orjson
import typer

from cdc.cli.common import (
    ConfigOption,
    JsonOption,
    YesOption,
    ago,
    confirm,
    describe_runner,
    fail,
    fail_with,
    holding_lease,
    load,
    paragraphs,
    reported,
    source,
    when,
)
from cdc.config import ConnectorConfig
from cdc.errors import CdcError, PositionError
from cdc.model.checkpoint import Checkpoint
from cdc.model.gtid import MariadbGtidList, MysqlGtidSet, looks_like_mariadb, parse_gtid
from cdc.model.lag import Behind, measure_behind
from cdc.model.position import Position, ServerInfo
from cdc.model.versions import initial_counter
from cdc.source import positions
from cdc.source.mysql import Connection, binary_logs, current_position
from cdc.source.positions import earliest_position, position_at
from cdc.source.prereq import Check
from cdc.state.backends import open_stores
from cdc.state.stores import HeartbeatStore

ForceOption = Annotated[
    bool,
    typer.Option(
        "--force",
        help="Act even though a connector with this name reports itself running. It will "
        "overwrite the position at its next checkpoint: stop it first unless its heartbeat is "
        "stale.",
    ),
]

app = typer.Typer(
    help="Show, set, reset, export and import the stored binlog position.",
    no_args_is_help=True,
    add_completion=False,
)

Target = Callable[[Connection, ServerInfo, Checkpoint | None], Checkpoint]
"""Builds the new checkpoint from the server and the stored one."""


# -- changing the checkpoint ------------------------------------------------------------------


def _refuse_if_running(heartbeats: HeartbeatStore, name: str, force: bool) -> None:
    status = heartbeats.read()
    if status is None or not status.running:
        return
    if not force:
        fail(
            f"connector {name!r} is running ({describe_runner(status)})",
            "stop it first; a running connector overwrites the position at its next "
            "checkpoint (pass --force only if that heartbeat is stale)",
        )
    typer.echo(
        f"warning: connector {name!r} reports itself running ({describe_runner(status)}); "
        "going ahead because of --force",
        err=True,
    )


def _refuse_if_active(name: str, holder: str, force: bool) -> None:
    """Another connector holds the lease (`ha.enabled`): it is streaming, and would overwrite
    the position at its next checkpoint."""
    if not force:
        fail(
            f"connector {name!r} is active: {holder} holds its lease",
            "stop every connector with this name first (all replicas: a standby would take "
            "over); pass --force only if you accept that the active one overwrites the "
            "position at its next checkpoint",
        )
    typer.echo(
        f"warning: connector {name!r} is active ({holder} holds its lease); going ahead "
        "because of --force, unfenced",
        err=True,
    )


def _validate(conn: Connection, info: ServerInfo, position: Position) -> None:
    """Raise PositionError unless the server can stream from `position`; warn on a doubt."""
    check = positions.check_position(conn, info, position)
    if not check.ok and check.fatal:
        raise PositionError(check.detail, hint=check.fix or None)
    if not check.ok:
        typer.echo(f"warning: {check.detail} — {check.fix}", err=True)


def _describe_checkpoint(checkpoint: Checkpoint | None) -> str:
    if checkpoint is None:
        return "(none: `cdc run` would start at the server's current position)"
    return checkpoint.position.describe()


def _plan(where: str, old: Checkpoint | None, new: Checkpoint, counter_note: str) -> None:
    typer.echo(f"checkpoint in {where}:")
    typer.echo(f"  position  {_describe_checkpoint(old)}")
    typer.echo(f"        ->  {new.position.describe()}")
    if old is None or old.counter == new.counter:
        typer.echo(f"  counter   {new.counter} ({counter_note})")
    else:
        typer.echo(f"  counter   {old.counter} -> {new.counter} ({counter_note})")


def _change(
    cfg: ConnectorConfig,
    target: Target,
    *,
    yes: bool,
    force: bool,
    counter_note: Callable[[Checkpoint | None, Checkpoint], str],
    after: str,
) -> None:
    with reported(), open_stores(cfg) as stores, holding_lease(cfg, stores) as lease:
        if isinstance(lease, str):
            _refuse_if_active(cfg.name, lease, force)
        _refuse_if_running(stores.heartbeats, cfg.name, force)
        old = stores.checkpoints.load()
        with source(cfg) as (conn, info):
            new = target(conn, info, old)
            _validate(conn, info, new.position)
        _plan(stores.checkpoints.describe(), old, new, counter_note(old, new))
        confirm(yes, "Change the position?", "changing the position")
        stores.checkpoints.save(new)
    typer.echo(f"position saved: {new.position.describe()}, counter {new.counter}. {after}")


def _kept_counter(old: Checkpoint | None) -> int:
    return old.counter if old is not None else initial_counter()


def _keep_note(old: Checkpoint | None, new: Checkpoint) -> str:
    if old is None:
        return "new, from the clock"
    return "kept: transactions read from here on get higher versions, so history re-applies"


def _parse_gtid_argument(text: str) -> str:
    """Syntax-check an operator-typed GTID in the notation its shape suggests (the server's
    flavor is compared later); exits 2 with the reason when malformed or blank."""
    if not text.strip():
        fail("--gtid is empty", "to read every binlog the server has, use `reset --to earliest`", 2)
    try:
        if looks_like_mariadb(text):
            return str(MariadbGtidList.parse(text))
        return str(MysqlGtidSet.parse(text))
    except PositionError as exc:
        fail_with(exc, 2)


# -- commands ---------------------------------------------------------------------------------


@app.command(
    help=paragraphs(
        "Show the stored checkpoint, the server's current position, and how far behind it is.",
        "Behind is counted in transactions (MySQL: executed GTIDs not in the checkpoint; "
        "MariaDB: sequence numbers per domain), in bytes of binlog, and in seconds since the "
        "checkpoint's last transaction was written on the server. It also says whether the "
        "server can still stream from the checkpoint (not purged). Exits 1 when the server "
        "cannot be reached (after printing the checkpoint).",
    )
)
def show(config: ConfigOption, json: JsonOption = False) -> None:
    """Print the checkpoint, the server's position and the distance between them."""
    cfg = load(config)
    with reported(), open_stores(cfg) as stores:
        where = stores.checkpoints.describe()
        checkpoint = stores.checkpoints.load()
    server: dict[str, Any] | None = None
    behind: Behind | None = None
    resumable: Check | None = None
    error: CdcError | None = None
    try:
        with source(cfg) as (conn, info):
            now = current_position(conn, info)
            server = {
                "address": f"{cfg.source.host}:{cfg.source.port}",
                "flavor": info.flavor,
                "version": info.version,
                "position": now.to_dict(),
            }
            if checkpoint is not None and checkpoint.position.flavor == info.flavor:
                behind = measure_behind(checkpoint, now, binary_logs(conn), time.time())
                resumable = positions.check_position(conn, info, checkpoint.position)
    except CdcError as exc:
        error = exc
    if json:
        typer.echo(
            orjson.dumps(
                {
                    "name": cfg.name,
                    "store": where,
                    "checkpoint": checkpoint.to_dict() if checkpoint else None,
                    "server": server,
                    "behind": asdict(behind) if behind else None,
                    "resumable": None
                    if resumable is None
                    else {"ok": resumable.ok, "detail": resumable.detail, "fix": resumable.fix},
                    "error": error.message if error else None,
                },
                option=orjson.OPT_INDENT_2,
            ).decode()
        )
    else:
        _print_show(where, checkpoint, server, behind, resumable)
    if error is not None:
        fail_with(error, 1)


def _print_show(
    where: str,
    checkpoint: Checkpoint | None,
    server: dict[str, Any] | None,
    behind: Behind | None,
    resumable: Check | None,
) -> None:
    typer.echo(f"checkpoint ({where}):")
    if checkpoint is None:
        typer.echo("  none stored; `cdc run` starts at the server's current position")
    else:
        typer.echo(f"  position    {checkpoint.position.describe()}")
        typer.echo(f"  counter     {checkpoint.counter}")
        event = when(checkpoint.event_time) if checkpoint.event_time else "unknown"
        typer.echo(f"  event time  {event}")
        written = (
            f"{when(checkpoint.written_at)} ({ago(checkpoint.written_at)})"
            if checkpoint.written_at
            else "unknown"
        )
        typer.echo(f"  written at  {written}")
    if server is None:
        return
    typer.echo(f"server ({server['address']}, {server['flavor']} {server['version']}):")
    typer.echo(f"  position    {Position.from_dict(server['position']).describe()}")
    if checkpoint is not None and behind is None:
        typer.echo(f"behind: unknown (the checkpoint is for a {checkpoint.position.flavor} server)")
    if behind is not None:
        typer.echo(f"behind: {behind.describe()}")
    if resumable is not None:
        if resumable.ok:
            typer.echo(f"resumable: yes ({resumable.detail})")
        else:
            typer.echo(f"resumable: no: {resumable.detail} — {resumable.fix}")


@app.command(
    "set",
    help=paragraphs(
        "Set where the next `cdc run` resumes: after a GTID state (--gtid), or at a binlog "
        "file offset where a transaction starts (--file with --pos).",
        "The target is checked against the server first: a malformed GTID, a GTID the server "
        "never had, a purged position, or an offset inside a transaction is refused with the "
        "reason. On MariaDB a file offset is turned into the GTID state there (MariaDB streams "
        "by GTID only); on MySQL with GTIDs on, give --gtid.",
        "The stored version counter is kept, so after a rewind the transactions read again "
        "get higher versions than before and Elasticsearch applies them again.",
        "Shows the change and asks before saving (--yes to skip; required without a "
        "terminal). Refuses while the connector runs, unless --force.",
    ),
)
def set_position(
    config: ConfigOption,
    gtid: Annotated[
        str | None,
        typer.Option(
            help="Resume after this GTID state: MySQL's full executed set (uuid:1-N,...) or "
            "MariaDB's per-domain list (domain-server-seq,...).",
            show_default=False,
        ),
    ] = None,
    file: Annotated[
        str | None,
        typer.Option(help="Resume at this binlog file (with --pos).", show_default=False),
    ] = None,
    pos: Annotated[
        int | None,
        typer.Option(
            help="Offset in --file where a transaction starts (a Gtid event).", show_default=False
        ),
    ] = None,
    yes: YesOption = False,
    force: ForceOption = False,
) -> None:
    """Store a checkpoint at a GTID state or a binlog file offset (counter kept)."""
    if gtid is not None and (file is not None or pos is not None):
        fail("give either --gtid or --file with --pos, not both", code=2)
    if gtid is None and file is None and pos is None:
        fail("give --gtid SET, or --file F --pos N", code=2)
    if pos is not None and file is None:
        fail("--pos needs --file", code=2)
    if file is not None and pos is None:
        fail("--file needs --pos", code=2)
    cfg = load(config)
    if gtid is not None:
        text = _parse_gtid_argument(gtid)

        def target(conn: Connection, info: ServerInfo, old: Checkpoint | None) -> Checkpoint:
            if looks_like_mariadb(text) != (info.flavor == "mariadb"):
                kind = "MariaDB GTID list" if looks_like_mariadb(text) else "MySQL GTID set"
                fail(
                    f"{gtid!r} is a {kind} but the source {cfg.source.host}:{cfg.source.port} "
                    f"is {info.flavor}",
                    "write the position in the server's own notation (SELECT "
                    + (
                        "@@GLOBAL.gtid_binlog_pos)"
                        if info.flavor == "mariadb"
                        else "@@GLOBAL.gtid_executed)"
                    ),
                    code=2,
                )
            if info.flavor == "mysql" and not info.gtid_mode:
                fail(
                    "this MySQL server has GTIDs off",
                    "set the position with --file and --pos",
                    code=2,
                )
            position = Position(info.flavor, str(parse_gtid(info.flavor, text)))
            return Checkpoint(position, _kept_counter(old), server=info.identity).stamped()
    else:
        assert file is not None and pos is not None
        binlog_file, offset = file, pos

        def target(conn: Connection, info: ServerInfo, old: Checkpoint | None) -> Checkpoint:
            position = position_at(conn, info, binlog_file, offset)
            return Checkpoint(position, _kept_counter(old), server=info.identity).stamped()

    _change(
        cfg,
        target,
        yes=yes,
        force=force,
        counter_note=_keep_note,
        after="The next `cdc run` resumes from there.",
    )


@app.command(
    help=paragraphs(
        "Move the position to the server's current position (--to now) or to the start of "
        "the oldest binlog it still has (--to earliest).",
        "`now` is the way out after the server purged the binlogs holding the stored "
        "position: changes made before it are not copied, so re-snapshot the tables. "
        "`earliest` re-reads every binlog the server has (MariaDB: from the oldest binlog's "
        "GTID list; MySQL: from gtid_purged, or the oldest file without GTIDs).",
        "The stored version counter is kept. Shows the change and asks before saving (--yes "
        "to skip; required without a terminal). Refuses while the connector runs, unless "
        "--force.",
    )
)
def reset(
    config: ConfigOption,
    to: Annotated[
        str,
        typer.Option(
            "--to",
            help="`now`: the server's current position (earlier rows are not copied). "
            "`earliest`: the start of the oldest binlog the server still has.",
            show_default=False,
        ),
    ],
    yes: YesOption = False,
    force: ForceOption = False,
) -> None:
    """Store a checkpoint at the server's current position or its oldest binlog."""
    if to not in ("now", "earliest"):
        fail(f"--to must be `now` or `earliest`, not {to!r}", code=2)
    cfg = load(config)

    def target(conn: Connection, info: ServerInfo, old: Checkpoint | None) -> Checkpoint:
        position = current_position(conn, info) if to == "now" else earliest_position(conn, info)
        return Checkpoint(position, _kept_counter(old), server=info.identity).stamped()

    after = (
        "Changes made before it are not copied; re-snapshot the tables if the index misses them."
        if to == "now"
        else "The next `cdc run` reads every binlog the server still has."
    )
    _change(cfg, target, yes=yes, force=force, counter_note=_keep_note, after=after)


def _default_export_path(name: str) -> Path:
    return Path("checkpoints") / f"{name}.position.json"


@app.command(
    "export",
    help=paragraphs(
        "Write the stored checkpoint (position and version counter) to a JSON file, by "
        "default checkpoints/<name>.position.json.",
        "It only reads the store, so the connector may keep running (the file is then a "
        "snapshot of a moving position). Asks before replacing an existing file (--yes to "
        "skip).",
    ),
)
def export_position(
    config: ConfigOption,
    file: Annotated[
        Path | None,
        typer.Argument(
            help="Where to write (default: checkpoints/<name>.position.json).", show_default=False
        ),
    ] = None,
    yes: YesOption = False,
) -> None:
    """Write the stored checkpoint to a JSON file that `import` restores."""
    cfg = load(config)
    path = file if file is not None else _default_export_path(cfg.name)
    with reported(), open_stores(cfg) as stores:
        checkpoint = stores.checkpoints.load()
        where = stores.checkpoints.describe()
    if checkpoint is None:
        fail(f"no checkpoint stored in {where}; nothing to export")
    if path.exists():
        typer.echo(f"{path} exists and will be replaced")
        confirm(yes, f"Overwrite {path}?", "replacing the file")
    data = orjson.dumps(checkpoint.to_dict(), option=orjson.OPT_INDENT_2) + b"\n"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_bytes(data)
        tmp.replace(path)
    except OSError as exc:
        fail(f"cannot write {path}: {exc.strerror}")
    typer.echo(f"exported {checkpoint.position.describe()}, counter {checkpoint.counter} to {path}")


@app.command(
    "import",
    help=paragraphs(
        "Restore a checkpoint written by `cdc position export`, exactly as it was.",
        "Its version counter is restored too (unlike `set` and `reset`): replaying from an "
        "exported checkpoint gives every change the same version it got the first time, so "
        "Elasticsearch skips what it already has and documents changed since keep their newer "
        "version.",
        "The position is checked against the server first. Shows the change and asks before "
        "saving (--yes to skip; required without a terminal). Refuses while the connector "
        "runs, unless --force.",
    ),
)
def import_position(
    config: ConfigOption,
    file: Annotated[
        Path, typer.Argument(help="A file written by `cdc position export`.", show_default=False)
    ],
    yes: YesOption = False,
    force: ForceOption = False,
) -> None:
    """Store the checkpoint of an export file exactly as it is, counter included."""
    try:
        data = file.read_bytes()
    except OSError as exc:
        fail(f"cannot read {file}: {exc.strerror}", code=2)
    try:
        imported = Checkpoint.from_json(data, str(file))
    except PositionError as exc:
        fail_with(exc, 2)
    cfg = load(config)

    def target(conn: Connection, info: ServerInfo, old: Checkpoint | None) -> Checkpoint:
        return imported

    def note(old: Checkpoint | None, new: Checkpoint) -> str:
        if old is not None and new.counter < old.counter:
            return "restored from the file: replayed changes get the versions they had"
        return "restored from the file"

    _change(
        cfg,
        target,
        yes=yes,
        force=force,
        counter_note=note,
        after="The next `cdc run` resumes from there.",
    )
