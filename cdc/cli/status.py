"""`cdc status` and `cdc health`: what an operator (or a container) asks a running connector.

- `status` reads the heartbeat the running connector keeps in its store (state, since when,
  counts, degraded links, last error), the stored checkpoint, the dead-letter queue's size,
  and how far the checkpoint is behind the source server.
- `health` turns the heartbeat into an exit code for a container HEALTHCHECK: 0 when a
  connector is alive and running (or degraded), 1 otherwise. It only reads the store, with
  one-second timeouts.
"""

from __future__ import annotations

import socket
import time
from typing import Any, NoReturn

import orjson
import typer

from cdc.cli.common import (
    ConfigOption,
    JsonOption,
    ago,
    describe_runner,
    duration,
    load,
    paragraphs,
    reported,
    source,
    when,
)
from cdc.config import ConnectorConfig, load_config
from cdc.errors import CdcError
from cdc.model.checkpoint import Checkpoint
from cdc.model.lag import Behind, measure_behind
from cdc.model.status import Status, VerifySummary
from cdc.source.mysql import binary_logs, current_position
from cdc.state.backends import open_stores
from cdc.state.stores import DeadLetterQueue

HEALTH_TIMEOUT = 1.0
"""Seconds `cdc health` waits for the store: a HEALTHCHECK must answer quickly."""

STATUS_HELP = paragraphs(
    "Show whether the connector runs, since when, its position and lag, the last error, the "
    "dead-letter queue size, row changes per table and degraded links.",
    "Running or not comes from the heartbeat the connector keeps in its checkpoint store; the "
    "lag is measured against the source server when it answers.",
)
HEALTH_HELP = paragraphs(
    "Exit 0 when the connector's heartbeat is alive and it is running (or degraded: a link "
    "is down and being retried), 1 otherwise, printing one line that says why.",
    "Made for a container HEALTHCHECK: it only reads the checkpoint store, with one-second "
    "timeouts.",
)


def status(config: ConfigOption, json: JsonOption = False) -> None:
    """Print the connector's state, position, lag, errors and counts."""
    cfg = load(config)
    report: dict[str, Any] = {"name": cfg.name, "verify_interval": cfg.verify.interval}
    with reported(), open_stores(cfg) as stores:
        report["store"] = stores.checkpoints.describe()
        heartbeat = stores.heartbeats.read()
        checkpoint = stores.checkpoints.load()
        report["dead_letters"], report["dead_letters_error"] = _dlq_size(stores.letters)
        if cfg.ha.enabled and stores.lease is not None:
            report["lease"] = {
                "holder": stores.lease.holder(),
                "standbys": stores.lease.standbys(),
            }
    report["running"] = heartbeat is not None and heartbeat.running
    report["state"] = heartbeat.state if heartbeat else "not running"
    report["heartbeat"] = heartbeat.to_dict() if heartbeat else None
    report["checkpoint"] = checkpoint.to_dict() if checkpoint else None
    behind, report["behind_error"] = _behind(cfg, checkpoint)
    report["behind"] = (
        {
            "transactions": behind.transactions,
            "bytes": behind.bytes,
            "seconds": behind.seconds,
            "file_purged": behind.file_purged,
        }
        if behind
        else None
    )
    if json:
        typer.echo(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode())
    else:
        _print_status(report, heartbeat, checkpoint, behind)
        lease = report.get("lease")
        if lease is not None:
            typer.echo(f"  active       {lease['holder'] or 'none (the lease is free)'}")
            standbys = ", ".join(lease["standbys"]) or "none"
            typer.echo(f"  standby      {standbys}")


def _behind(
    cfg: ConnectorConfig, checkpoint: Checkpoint | None
) -> tuple[Behind | None, str | None]:
    if checkpoint is None:
        return None, None
    try:
        with source(cfg) as (conn, info):
            if checkpoint.position.flavor != info.flavor:
                return None, f"the checkpoint is for a {checkpoint.position.flavor} server"
            now = current_position(conn, info)
            return measure_behind(checkpoint, now, binary_logs(conn), time.time()), None
    except CdcError as exc:
        return None, exc.message


def _dlq_size(letters: DeadLetterQueue) -> tuple[int | None, str | None]:
    try:
        return letters.size(), None
    except CdcError as exc:
        return None, exc.message


def _print_status(
    report: dict[str, Any],
    heartbeat: Status | None,
    checkpoint: Checkpoint | None,
    behind: Behind | None,
) -> None:
    typer.echo(f"connector {report['name']} ({report['store']})")
    if heartbeat is None:
        typer.echo("  state        not running (no heartbeat)")
    elif heartbeat.running:
        typer.echo(f"  state        {heartbeat.state} ({describe_runner(heartbeat)})")
        started = heartbeat.started_at
        typer.echo(f"  since        {when(started)} ({duration(time.time() - started)})")
    else:
        stopped = heartbeat.updated_at
        typer.echo(f"  state        {heartbeat.state} at {when(stopped)} ({ago(stopped)})")
    if checkpoint is None:
        typer.echo("  position     none stored (the connector starts at the server's position)")
    else:
        written = ago(checkpoint.written_at) if checkpoint.written_at else "at an unknown time"
        typer.echo(f"  position     {checkpoint.position.describe()} (saved {written})")
    if behind is not None:
        typer.echo(f"  lag          {behind.describe()}")
    elif report["behind_error"]:
        typer.echo(f"  lag          unknown ({report['behind_error']})")
    if heartbeat and heartbeat.lag_seconds is not None and heartbeat.running:
        typer.echo(f"  stream lag   {heartbeat.lag_seconds:.1f} s (reported by the connector)")
    last_error = heartbeat.last_error if heartbeat else None
    typer.echo(f"  last error   {last_error or 'none'}")
    if report["dead_letters"] is not None:
        typer.echo(f"  dead letters {report['dead_letters']}")
    else:
        typer.echo(f"  dead letters unknown ({report['dead_letters_error']})")
    if heartbeat is None:
        return
    degraded = heartbeat.degraded
    typer.echo(f"  degraded     {', '.join(degraded) if degraded else 'none'}")
    snapshot = heartbeat.snapshot
    if snapshot is not None:
        total = max(snapshot.rows_total, snapshot.rows_done)
        typer.echo(
            f"  snapshot     {snapshot.table} {snapshot.state}, "
            f"{snapshot.rows_done:,} of about {total:,} rows"
        )
    verify_line = describe_verify(heartbeat.verify, report["verify_interval"])
    if verify_line:
        typer.echo(f"  verify       {verify_line}")
    run = "this run" if heartbeat.running else "last run"
    typer.echo(
        f"  {run}     {heartbeat.transactions} transactions, {heartbeat.changes} row changes, "
        f"{heartbeat.actions} document operations, {heartbeat.reconnects} reconnects"
    )
    for table in sorted(heartbeat.by_table):
        typer.echo(f"    {table}  {heartbeat.by_table[table]} row changes")


def describe_verify(summary: VerifySummary | None, interval: float) -> str | None:
    """The last continuous-verification pass in one line; None when it is off and never ran."""
    if summary is None:
        return f"every {duration(interval)}; no pass finished yet" if interval > 0 else None
    finished = f"last pass {ago(summary.finished_at)}"
    if summary.error is not None:
        return f"{finished} failed: {summary.error}"
    found = [
        f"{index} " + ", ".join(f"{n} {kind}" for kind, n in kinds.items() if n)
        for index, kinds in sorted(summary.differences.items())
        if any(kinds.values())
    ]
    repaired = f"; {summary.repaired} repaired" if summary.repaired else ""
    if summary.unverified:
        found.append(f"not verified (no usable key): {', '.join(summary.unverified)}")
    result = "; ".join(found) if found else "every index equals MySQL"
    return (
        f"{finished}: {summary.checked:,} rows in {duration(summary.seconds)}, {result}{repaired}"
    )


def health(config: ConfigOption) -> None:
    """Exit 0 if a live heartbeat says running or degraded, or this host's connector waits as
    a standby (`ha.enabled`), else 1; one line says why."""
    try:
        cfg = load_config(config)
    except CdcError as exc:
        _unhealthy(f"the config is invalid: {exc.message}")
    standby_here: str | None = None
    try:
        with open_stores(cfg, HEALTH_TIMEOUT) as stores:
            heartbeat = stores.heartbeats.read()
            where = stores.checkpoints.describe()
            if cfg.ha.enabled and stores.lease is not None:
                standby_here = _standby_here(stores.lease.holder(), stores.lease.standbys())
    except CdcError as exc:
        _unhealthy(f"cannot read the heartbeat: {exc.message}")
    if standby_here is not None:
        typer.echo(f"healthy: standby, {standby_here}")
        return
    if heartbeat is None:
        _unhealthy(f"no heartbeat next to {where}: the connector is not running")
    if not heartbeat.running:
        error = heartbeat.last_error
        _unhealthy(
            f"the connector {heartbeat.state} {ago(heartbeat.updated_at)}"
            + (f"; last error: {error}" if error else "")
        )
    degraded = heartbeat.degraded
    state = f"degraded ({', '.join(degraded)} unavailable)" if degraded else "running"
    typer.echo(f"healthy: {state}, {describe_runner(heartbeat)}")


def _standby_here(holder: str | None, standbys: list[str]) -> str | None:
    """With `ha.enabled`, `cdc health` runs beside its own `cdc run` (a container's probe):
    when a standby of this host waits and the lease is not held from this host, it answers
    for that standby, which is healthy whatever the active's state. Lease tokens start with
    the host name (`cdc.engine.lease.new_token`)."""
    host = socket.gethostname()
    if holder is not None and holder.split(":", 1)[0] == host:
        return None
    if not any(token.split(":", 1)[0] == host for token in standbys):
        return None
    if holder is None:
        return "waiting for the lease, which is free: a connector takes it over now"
    return f"waiting for the lease ({holder} holds it)"


def _unhealthy(reason: str) -> NoReturn:
    typer.echo(f"unhealthy: {reason}".replace("\n", " "), err=True)
    raise typer.Exit(1)
