"""`cdc status`, `cdc health` and `cdc check`: what an operator asks a connector.

- `status` reads the heartbeat the running connector keeps in its store (state, since when,
  counts, degraded links, last error), the stored checkpoint, the dead-letter queue's size,
  and how far the checkpoint is behind the source server.
- `health` turns the heartbeat into an exit code for a container HEALTHCHECK: 0 when a
  connector is alive and running (or degraded), 1 otherwise. It only reads the store, with
  one-second timeouts.
- `check` validates the config and every prerequisite the connector needs from the source,
  the search cluster and the checkpoint store, one line per check:

      ✓ name: detail
      ✗ name: detail — fix      (fatal: the connector would not work)
      ! name: detail — fix      (a warning: it works, with the limitation named)

  It exits 1 when any fatal check failed and 2 when the config is invalid.
"""

from __future__ import annotations

import os
import time
from typing import Any, NoReturn
from urllib.parse import quote

import orjson
import typer

from cdc.cli.position import (
    Behind,
    ConfigOption,
    JsonOption,
    ago,
    behind_server,
    describe_runner,
    duration,
    is_running,
    load,
    paragraphs,
    source,
    store_for,
    when,
)
from cdc.config import ConnectorConfig, load_config
from cdc.errors import CdcError
from cdc.model.checkpoint import Checkpoint, FileCheckpointStore
from cdc.model.position import Position
from cdc.sink.elastic import ElasticSink
from cdc.source import positions, prereq
from cdc.state.dlq import open_dlq
from cdc.state.redis import RedisCheckpointStore

HEALTH_TIMEOUT = 1.0
"""Seconds `cdc health` waits for the store: a HEALTHCHECK must answer quickly."""

# Major versions the connector is built and tested for.
_SUPPORTED = {"Elasticsearch": (8, 9), "OpenSearch": (2, 3)}


def register(app: typer.Typer) -> None:
    """Add `status`, `health` and `check` to the `cdc` command."""
    app.command("status", help=STATUS_HELP)(status)
    app.command("health", help=HEALTH_HELP)(health)
    app.command("check", help=CHECK_HELP)(check)


# -- status -----------------------------------------------------------------------------------


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
CHECK_HELP = paragraphs(
    "Validate the config and check everything the connector needs, one line per check.",
    "Source server: connection, version, log_bin, binlog_format ROW, binlog_row_image FULL, "
    "binlog_row_metadata FULL, no binlog compression, GTID mode, privileges, and whether the "
    "stored position can still be streamed from. Search cluster: reachable, version, each "
    "target index present or to be created, field types against index_mappings. Checkpoint "
    "store: reachable and writable.",
    "Lines read `✓ name: detail`, `✗ name: detail — fix` (fatal) or `! name: detail — fix` "
    "(a warning). Exits 1 if any check marked ✗ failed, 2 if the config is invalid.",
)


def status(config: ConfigOption, json: JsonOption = False) -> None:
    """Print the connector's state, position, lag, errors and counts."""
    cfg = load(config)
    report: dict[str, Any] = {"name": cfg.name}
    try:
        with store_for(cfg) as store:
            report["store"] = store.describe()
            heartbeat = store.read_status()
            checkpoint = store.load()
    except CdcError as exc:
        typer.echo(f"error: {exc.message}" + (f" — {exc.hint}" if exc.hint else ""), err=True)
        raise typer.Exit(1) from None
    report["running"] = is_running(heartbeat)
    report["state"] = heartbeat.get("state") if heartbeat else "not running"
    report["heartbeat"] = heartbeat
    report["checkpoint"] = orjson.loads(checkpoint.to_json()) if checkpoint else None
    report["behind"], report["behind_error"] = _behind(cfg, checkpoint)
    report["dead_letters"], report["dead_letters_error"] = _dlq_size(cfg)
    if json:
        typer.echo(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode())
    else:
        _print_status(report, heartbeat, checkpoint)


def _behind(
    cfg: ConnectorConfig, checkpoint: Checkpoint | None
) -> tuple[dict[str, Any] | None, str | None]:
    if checkpoint is None:
        return None, None
    try:
        with source(cfg) as (conn, info):
            if checkpoint.position.flavor != info.flavor:
                return None, f"the checkpoint is for a {checkpoint.position.flavor} server"
            b = behind_server(conn, info, checkpoint)
    except CdcError as exc:
        return None, exc.message
    return {
        "transactions": b.transactions,
        "bytes": b.bytes,
        "seconds": b.seconds,
        "file_purged": b.file_purged,
    }, None


def _dlq_size(cfg: ConnectorConfig) -> tuple[int | None, str | None]:
    try:
        dlq = open_dlq(cfg)
        try:
            return dlq.size(), None
        finally:
            dlq.close()
    except CdcError as exc:
        return None, exc.message


def _print_status(
    report: dict[str, Any], heartbeat: dict[str, Any] | None, checkpoint: Checkpoint | None
) -> None:
    typer.echo(f"connector {report['name']} ({report['store']})")
    if heartbeat is None:
        typer.echo("  state        not running (no heartbeat)")
    elif is_running(heartbeat):
        started = float(heartbeat.get("started_at") or 0)
        typer.echo(f"  state        {heartbeat['state']} ({describe_runner(heartbeat)})")
        typer.echo(f"  since        {when(started)} ({duration(time.time() - started)})")
    else:
        stopped = float(heartbeat.get("updated_at") or 0)
        typer.echo(f"  state        {heartbeat.get('state')} at {when(stopped)} ({ago(stopped)})")
    if checkpoint is None:
        typer.echo("  position     none stored (the connector starts at the server's position)")
    else:
        written = ago(checkpoint.written_at) if checkpoint.written_at else "at an unknown time"
        typer.echo(f"  position     {checkpoint.position.describe()} (saved {written})")
    behind = report["behind"]
    if behind is not None:
        typer.echo(f"  lag          {Behind(**behind).describe()}")
    elif report["behind_error"]:
        typer.echo(f"  lag          unknown ({report['behind_error']})")
    if heartbeat and heartbeat.get("lag_seconds") is not None and is_running(heartbeat):
        typer.echo(
            f"  stream lag   {float(heartbeat['lag_seconds']):.1f} s (reported by the connector)"
        )
    last_error = heartbeat.get("last_error") if heartbeat else None
    typer.echo(f"  last error   {last_error or 'none'}")
    if report["dead_letters"] is not None:
        typer.echo(f"  dead letters {report['dead_letters']}")
    else:
        typer.echo(f"  dead letters unknown ({report['dead_letters_error']})")
    if heartbeat is None:
        return
    degraded = heartbeat.get("degraded") or []
    typer.echo(f"  degraded     {', '.join(degraded) if degraded else 'none'}")
    run = "this run" if is_running(heartbeat) else "last run"
    typer.echo(
        f"  {run}     {heartbeat.get('transactions', 0)} transactions, "
        f"{heartbeat.get('changes', 0)} row changes, {heartbeat.get('actions', 0)} document "
        f"operations, {heartbeat.get('reconnects', 0)} reconnects"
    )
    by_table: dict[str, int] = heartbeat.get("by_table") or {}
    for table in sorted(by_table):
        typer.echo(f"    {table}  {by_table[table]} row changes")


# -- health -----------------------------------------------------------------------------------


def health(config: ConfigOption) -> None:
    """Exit 0 if a live heartbeat says running or degraded, else 1; one line says why."""
    try:
        cfg = load_config(config)
    except CdcError as exc:
        _unhealthy(f"the config is invalid: {exc.message}")
    try:
        with store_for(cfg, HEALTH_TIMEOUT) as store:
            heartbeat = store.read_status()
            where = store.describe()
    except CdcError as exc:
        _unhealthy(f"cannot read the heartbeat: {exc.message}")
    if heartbeat is None:
        _unhealthy(f"no heartbeat next to {where}: the connector is not running")
    if not is_running(heartbeat):
        error = heartbeat.get("last_error")
        stopped = float(heartbeat.get("updated_at") or 0)
        _unhealthy(
            f"the connector {heartbeat.get('state')} {ago(stopped)}"
            + (f"; last error: {error}" if error else "")
        )
    degraded = heartbeat.get("degraded") or []
    state = f"degraded ({', '.join(degraded)} unavailable)" if degraded else "running"
    typer.echo(f"healthy: {state}, {describe_runner(heartbeat)}")


def _unhealthy(reason: str) -> NoReturn:
    typer.echo(f"unhealthy: {reason}".replace("\n", " "), err=True)
    raise typer.Exit(1)


# -- check ------------------------------------------------------------------------------------


class _Report:
    """Prints checks as they complete and remembers whether a fatal one failed."""

    def __init__(self) -> None:
        self.failed = 0
        self.warnings = 0
        self.passed = 0

    def add(self, check: prereq.Check) -> prereq.Check:
        if check.ok:
            self.passed += 1
            typer.echo(f"✓ {check.name}: {check.detail}")
        else:
            mark = "✗" if check.fatal else "!"
            if check.fatal:
                self.failed += 1
            else:
                self.warnings += 1
            typer.echo(f"{mark} {check.name}: {check.detail} — {check.fix}".replace("\n", " "))
        return check

    def ok(self, name: str, detail: str) -> None:
        self.add(prereq.Check(name, True, detail, None))

    def fail(self, name: str, detail: str, fix: str | None, fatal: bool = True) -> None:
        self.add(prereq.Check(name, False, detail, fix or "see the message", fatal))

    def error(self, name: str, exc: CdcError, fix: str) -> None:
        self.fail(name, exc.message, exc.hint or fix)


def check(config: ConfigOption) -> None:
    """Print one line per prerequisite; exit 1 if a fatal one fails, 2 on a bad config."""
    report = _Report()
    try:
        cfg = load_config(config)
    except CdcError as exc:
        report.fail("config", str(exc).replace("\n", "; "), "fix the config file")
        raise typer.Exit(2) from None
    mappings = "1 table mapping" if len(cfg.tables) == 1 else f"{len(cfg.tables)} table mappings"
    report.ok("config", f"{config}: connector {cfg.name!r}, {mappings}")
    stored = _check_store(cfg, report)
    _check_source(cfg, report, stored)
    _check_sink(cfg, report)
    parts = [f"{report.passed} passed"]
    if report.failed:
        parts.append(f"{report.failed} failed")
    if report.warnings:
        parts.append(f"{report.warnings} warning{'s' if report.warnings > 1 else ''}")
    typer.echo(", ".join(parts))
    if report.failed:
        raise typer.Exit(1)


def _check_store(cfg: ConnectorConfig, report: _Report) -> Checkpoint | CdcError | None:
    """Check the store is reachable and writable; returns the stored checkpoint (or the error
    that kept it from being read)."""
    try:
        with store_for(cfg) as store:
            where = store.describe()
            stored = store.load()
            store.read_status()
    except CdcError as exc:
        report.error(
            "checkpoint_store",
            exc,
            "check checkpoint.redis.url and that Redis is up"
            if cfg.checkpoint.redis
            else "check checkpoint.file.path",
        )
        return exc
    # The write is tried on a scratch checkpoint next to the real one (same prefix, same
    # directory), so a running connector is not disturbed.
    scratch_name = f"{cfg.name}.check-{os.getpid()}"
    if cfg.checkpoint.redis is not None:
        r = cfg.checkpoint.redis
        scratch: RedisCheckpointStore | FileCheckpointStore = RedisCheckpointStore(
            r.url, r.key_prefix, scratch_name
        )
        fix = (
            "make the Redis user able to write keys under the prefix (and not a read-only replica)"
        )
    else:
        assert cfg.checkpoint.file is not None
        scratch = FileCheckpointStore(cfg.checkpoint.file.path, scratch_name)
        fix = f"make {cfg.checkpoint.file.path} writable by the connector's user"
    probe = Checkpoint(Position("mysql", "", "probe", 4), 0).stamped()
    try:
        scratch.save(probe)
        readable = scratch.load() == probe
        scratch.delete()
    except CdcError as exc:
        report.fail("checkpoint_store", f"{where} is readable but not writable: {exc.message}", fix)
        return stored
    finally:
        scratch.close()
    if not readable:
        report.fail("checkpoint_store", f"{where}: a test write did not read back", fix)
    else:
        report.ok("checkpoint_store", f"{where} is reachable and writable")
    return stored


def _mapped_schemas(cfg: ConnectorConfig) -> list[str]:
    return sorted({m.table.split(".", 1)[0] for m in cfg.tables})


def _check_source(
    cfg: ConnectorConfig, report: _Report, stored: Checkpoint | CdcError | None
) -> None:
    address = f"{cfg.source.host}:{cfg.source.port}"
    try:
        with source(cfg) as (conn, info):
            report.ok("source", f"connected to {address} as {cfg.source.user} ({info.version})")
            for result in prereq.check_source(conn, info, _mapped_schemas(cfg)):
                report.add(result)
            if isinstance(stored, CdcError):
                return
            if stored is None:
                report.ok(
                    "position",
                    "no stored checkpoint: the connector starts at the server's current "
                    "position (earlier rows need a snapshot)",
                )
                return
            report.add(positions.check_position(conn, info, stored.position))
    except CdcError as exc:
        report.error("source", exc, f"check source.host/port ({address}) and that the server is up")


def _check_sink(cfg: ConnectorConfig, report: _Report) -> None:
    urls = ", ".join(cfg.sink.urls)
    sink = ElasticSink(cfg.sink)
    try:
        try:
            info = sink.info()
        except CdcError as exc:
            report.error("sink", exc, f"check sink.urls ({urls}) and that the cluster is up")
            return
        _check_version(report, urls, info)
        for index in sorted({m.index for m in cfg.tables}):
            _check_index(cfg, sink, report, index)
    finally:
        sink.close()


def _check_version(report: _Report, urls: str, info: dict[str, Any]) -> None:
    version = info.get("version") if isinstance(info.get("version"), dict) else {}
    assert isinstance(version, dict)
    number = str(version.get("number", "unknown"))
    product = "OpenSearch" if version.get("distribution") == "opensearch" else "Elasticsearch"
    found = f"{urls} answers: {product} {number}"
    try:
        major = int(number.split(".")[0])
    except ValueError:
        major = 0
    low, high = _SUPPORTED[product]
    if low <= major <= high:
        report.ok("sink", found)
    else:
        report.fail(
            "sink",
            f"{found}, which the connector is not tested with",
            f"use {product} {low}.x to {high}.x",
            fatal=False,
        )


def _check_index(cfg: ConnectorConfig, sink: ElasticSink, report: _Report, index: str) -> None:
    name = f"index {index}"
    mapping = next(m for m in cfg.tables if m.index == index)
    try:
        status, _ = sink.request("HEAD", f"/{quote(index)}")
        if status == 404:
            if mapping.index_mappings:
                how = "the configured mappings"
            else:
                how = "dynamic mappings (no index_mappings configured)"
            report.ok(name, f"does not exist yet; the connector creates it with {how}")
            return
        if status != 200:
            report.fail(
                name, f"HEAD /{index} answered HTTP {status}", "check the user's index privileges"
            )
            return
        if not mapping.index_mappings:
            report.ok(name, "exists (no index_mappings configured to compare)")
            return
        status, body = sink.request("GET", f"/{quote(index)}/_mapping")
    except CdcError as exc:
        report.error(name, exc, "check that the cluster is up")
        return
    if status != 200 or not isinstance(body, dict):
        report.fail(
            name, f"reading its mapping answered HTTP {status}", "check the user's privileges"
        )
        return
    wanted = field_types(mapping.index_mappings)
    differences: list[str] = []
    for concrete in sorted(body):
        actual = field_types((body[concrete] or {}).get("mappings") or {})
        differences += mapping_differences(wanted, actual, concrete if concrete != index else "")
    if differences:
        report.fail(
            name,
            f"exists, but its field types differ from index_mappings: {'; '.join(differences)}",
            "reindex into an index created with the configured mappings, or change "
            "index_mappings to match (the connector never changes an existing index)",
            fatal=False,
        )
    else:
        fields = "1 field" if len(wanted) == 1 else f"{len(wanted)} fields"
        report.ok(name, f"exists; the {fields} of index_mappings have the configured types")


def field_types(mappings: dict[str, Any]) -> dict[str, str]:
    """Dotted field path -> type, from a `mappings` object (`properties`, nested objects)."""
    types: dict[str, str] = {}

    def walk(properties: dict[str, Any], prefix: str) -> None:
        for field, spec in properties.items():
            if not isinstance(spec, dict):
                continue
            path = prefix + field
            children = spec.get("properties")
            kind = spec.get("type") or ("object" if isinstance(children, dict) else None)
            if kind:
                types[path] = str(kind)
            if isinstance(children, dict):
                walk(children, path + ".")

    props = mappings.get("properties")
    if isinstance(props, dict):
        walk(props, "")
    return types


def mapping_differences(
    wanted: dict[str, str], actual: dict[str, str], concrete: str = ""
) -> list[str]:
    """Human lines for every configured field whose type the index does not have."""
    where = f" in {concrete}" if concrete else ""
    out = []
    for field in sorted(wanted):
        have = actual.get(field)
        if have is None:
            out.append(f"{field} is not mapped{where} (configured {wanted[field]})")
        elif have != wanted[field]:
            out.append(f"{field} is {have}{where} (configured {wanted[field]})")
    return out
