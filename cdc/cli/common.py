"""What every `cdc` command shares: its options, the config, logging, and one error format.

Every command takes the connector's config with `-c/--config` or the `CDC_CONFIG` environment
variable (the container sets it, so its HEALTHCHECK is plain `cdc health`).

Errors go to stderr in one format, `error: <what went wrong> — <how to fix it>`, on one line
(a config with several problems gets one line per problem). Exit status: 0 done; 1 failed,
refused or declined; 2 a bad config or a bad argument. Two commands differ, by their nature:
`cdc run` logs its errors (its output is a log), and `cdc health` answers `unhealthy: ...` and
exits 1 for any reason, a bad config included (a container HEALTHCHECK knows only 0 and 1).
"""

from __future__ import annotations

import contextlib
import fnmatch
import logging
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, NoReturn

import orjson
import typer

from cdc.config import ConnectorConfig, load_config
from cdc.engine.lease import Lease
from cdc.errors import CdcError
from cdc.model.position import ServerInfo
from cdc.model.status import Status
from cdc.source.mysql import Connection, Session
from cdc.state.stores import Stores

ConfigOption = Annotated[
    Path,
    typer.Option(
        "--config",
        "-c",
        envvar="CDC_CONFIG",
        help="Connector config YAML (or the CDC_CONFIG environment variable).",
        show_default=False,
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print one JSON object instead of text.")]
YesOption = Annotated[
    bool, typer.Option("--yes", "-y", help="Do not ask for confirmation (needed without a TTY).")
]


def paragraphs(*texts: str) -> str:
    """Command help from paragraphs (the help renderer keeps single line breaks)."""
    return "\n\n".join(texts)


# -- errors --------------------------------------------------------------------------------------


def error(message: str, hint: str | None = None) -> None:
    """Print `error: message — hint` on stderr (a line per line of `message`)."""
    lines = [line for line in message.splitlines() if line.strip()] or [message]
    text = "\n".join(f"error: {line}" for line in lines)
    typer.echo(text + (f" — {' '.join(hint.split())}" if hint else ""), err=True)


def fail(message: str, hint: str | None = None, code: int = 1) -> NoReturn:
    """Print `error: message — hint` on stderr and exit with `code`."""
    error(message, hint)
    raise typer.Exit(code)


def fail_with(exc: CdcError, code: int = 1) -> NoReturn:
    fail(exc.message, exc.hint, code)


@contextlib.contextmanager
def reported(code: int = 1) -> Iterator[None]:
    """Turn a `CdcError` raised inside into the one error line and exit `code`."""
    try:
        yield
    except CdcError as exc:
        fail_with(exc, code)


def load(config: Path) -> ConnectorConfig:
    """The validated config; exits 2 with its problems when it is not."""
    try:
        return load_config(config)
    except CdcError as exc:
        fail_with(exc, 2)


def confirm(yes: bool, question: str, doing: str) -> None:
    """Go on when `--yes` was given or the operator answers yes; exit 1 otherwise. Without a
    terminal to ask on, it refuses, saying it is not `doing` (e.g. "changing the position")."""
    if yes:
        return
    if not sys.stdin.isatty():
        fail(f"not {doing} without confirmation (stdin is not a terminal)", "pass --yes")
    if not typer.confirm(question, default=False):
        typer.echo("cancelled; nothing changed", err=True)
        raise typer.Exit(1)


def matching_tables(covered: list[str], patterns: list[str]) -> list[str]:
    """The mapped tables (`covered`) matching the `--table` patterns (globs allowed); exits 2
    naming a pattern that matches none."""
    missing = [p for p in patterns if not fnmatch.filter(covered, p)]
    if missing:
        fail(
            f"no mapped table matches {', '.join(missing)}; mapped tables: "
            f"{', '.join(covered) or '(none exist)'}",
            code=2,
        )
    return sorted({t for pattern in patterns for t in fnmatch.filter(covered, pattern)})


# -- logging -------------------------------------------------------------------------------------


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S%z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(entry).decode()


def setup_logging(fmt: str, level: str = "INFO") -> None:
    """Log to stderr as text or JSON lines (`log_format`)."""
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(_JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("elastic_transport", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # The binlog library warns on every reconnect attempt we refuse; our own log says it once.
    logging.getLogger("pymysqlreplication").setLevel(logging.ERROR)


def setup_command_logging(cfg: ConnectorConfig) -> None:
    """Logging for the operator commands: warnings only, and no line per failed request (the
    command says once that it is waiting)."""
    setup_logging(cfg.log_format, "WARNING")
    logging.getLogger("elastic_transport").setLevel(logging.ERROR)


# -- the source server ---------------------------------------------------------------------------


@contextlib.contextmanager
def source(cfg: ConnectorConfig) -> Iterator[tuple[Connection, ServerInfo]]:
    """A connection to the source server and what it is."""
    with Session(cfg.source) as session:
        yield session.connection(), session.info()


# -- wording -------------------------------------------------------------------------------------


def when(timestamp: float) -> str:
    """A Unix time as `2024-05-01 12:00:00 UTC`."""
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def ago(timestamp: float) -> str:
    """How long ago `timestamp` was, e.g. `5 s ago`, `3 min ago`, `2 h 5 min ago`."""
    return f"{duration(time.time() - timestamp)} ago"


def duration(seconds: float) -> str:
    s = max(0, int(seconds))
    if s < 120:
        return f"{s} s"
    if s < 7200:
        return f"{s // 60} min"
    if s < 172_800:
        return f"{s // 3600} h {s % 3600 // 60} min"
    return f"{s // 86400} d {s % 86400 // 3600} h"


def describe_runner(status: Status) -> str:
    """`pid 123 on host, heartbeat 2 s ago`."""
    return f"pid {status.pid} on {status.host}, heartbeat {ago(status.updated_at)}"


@contextlib.contextmanager
def holding_lease(cfg: ConnectorConfig, stores: Stores) -> Iterator[Lease | str | None]:
    """For a command that changes what the connector does next (`cdc position set/reset/
    import`, a `cdc snapshot` run here): take the connector's lease (Redis) for as long as the
    command runs, so that no connector with `ha.enabled` starts streaming meanwhile, and fence
    the command's checkpoint writes by it, so that one taking over could not be overwritten.
    Yields the held lease; or the token of the connector holding it now (the command refuses
    or defers to it); or None when the store has no lease (the file store serves one connector).
    The lease is given up at the end, so a standby takes over at once."""
    if stores.lease is None:
        yield None
        return
    lease = Lease(stores.lease, cfg.ha.lease_ttl, threading.Event())
    holder = lease.take()
    if holder is not None:
        yield holder
        return
    stores.checkpoints.hold(lease.token)
    try:
        yield lease
    finally:
        stores.checkpoints.hold(None)
        lease.release()
