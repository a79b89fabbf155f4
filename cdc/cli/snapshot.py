"""`cdc snapshot`: copy (or re-copy) tables into the index while streaming goes on."""

from __future__ import annotations

import re
import signal
import threading
import time
from types import FrameType
from typing import Annotated

import typer

from cdc.cli.common import (
    ConfigOption,
    error,
    fail,
    holding_lease,
    load,
    matching_tables,
    reported,
    setup_command_logging,
)
from cdc.config import ConnectorConfig, TableMapping
from cdc.engine.lease import Lease
from cdc.engine.pipeline import Pipeline
from cdc.engine.snapshotter import request, resolve_tables
from cdc.engine.startup import check_mappings
from cdc.errors import CdcError, Interrupted
from cdc.model.progress import Progress
from cdc.sink.elastic import ElasticSink
from cdc.source.rows import RowReader
from cdc.state.backends import open_stores
from cdc.state.stores import SnapshotStore, Stores


def snapshot(
    config: ConfigOption,
    table: Annotated[
        list[str] | None,
        typer.Option("--table", "-t", help="schema.table to copy (repeatable; globs allowed)."),
    ] = None,
    all_tables: Annotated[
        bool, typer.Option("--all", help="Copy every table the mappings cover.")
    ] = False,
    rebuild: Annotated[
        bool,
        typer.Option(
            help="Fill a fresh versioned index (e.g. products_v2) behind the alias while the old "
            "one keeps serving, then swap the alias atomically. The old index is left for you "
            "to delete. Every table feeding the alias is copied."
        ),
    ] = False,
    wait: Annotated[
        bool,
        typer.Option(help="Show progress until done (a running connector does the work)."),
    ] = True,
) -> None:
    """Copy the current rows of tables into their indices, without locks or pauses.

    If a connector with this config's name is running, it performs the snapshot and this
    command shows the progress. Otherwise this command streams and snapshots by itself until
    the snapshot is done and the stream has caught up, then exits. A crash or Ctrl-C resumes
    from the last completed chunk next time.
    """
    cfg = load(config)
    if bool(table) == all_tables:
        fail("give --table (one or more) or --all", code=2)
    setup_command_logging(cfg)
    with reported(), open_stores(cfg) as stores, holding_lease(cfg, stores) as lease:
        with RowReader(cfg.source) as reader:
            covered = resolve_tables(cfg, reader)
        tables = covered if all_tables else matching_tables(covered, table or [])
        if not tables:
            fail("none of the mapped tables exists on the server", code=2)
        status = stores.heartbeats.read()
        if rebuild:
            tables = _request_rebuild(cfg, stores.snapshots, covered, tables)
        else:
            request(stores.snapshots, tables)
        typer.echo(f"snapshot requested for {', '.join(tables)}")
        if isinstance(lease, str):
            typer.echo(f"the active connector ({lease} holds the lease) performs it")
            if wait:
                _follow(stores.snapshots, tables, None)
            return
        if status is not None and status.running:
            typer.echo(f"the running connector (pid {status.pid}) performs it")
            if wait:
                _follow(stores.snapshots, tables, None)
            return
        _run_here(cfg, stores, tables, lease)


def _run_here(cfg: ConnectorConfig, stores: Stores, tables: list[str], lease: Lease | None) -> None:
    """Stream and snapshot in this process until the snapshot is done and the stream caught up;
    holding the lease (Redis), it stops if the lease is lost."""
    sink = ElasticSink(cfg.sink)
    stop = lease.ends if lease is not None else threading.Event()
    interrupted = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        interrupted.set()
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    pipeline = Pipeline(cfg, sink, stores, stop=stop)
    failure: list[BaseException] = []

    def work() -> None:
        try:
            pipeline.run(until_caught_up=True)
        except BaseException as exc:
            failure.append(exc)

    worker = threading.Thread(target=work, name="pipeline", daemon=True)
    worker.start()
    try:
        _follow(stores.snapshots, tables, worker)
    finally:
        # Also when a table failed: the run stops cleanly before its sink and stores close.
        if worker.is_alive():
            stop.set()
        worker.join()
        sink.close()
    if failure and not isinstance(failure[0], Interrupted):
        raise failure[0]
    if interrupted.is_set():
        typer.echo("interrupted: the next `cdc snapshot` or `cdc run` resumes it")
        raise typer.Exit(1)
    if stop.is_set():  # set by the lease's renewal: another connector took the lease
        fail(
            "lost the lease to another connector with this name",
            "it goes on with the snapshot; `cdc status` shows the progress",
        )


def _next_index(alias: str, current: str) -> str:
    match = re.fullmatch(r"(.+)_v(\d+)", current)
    return f"{match.group(1)}_v{int(match.group(2)) + 1}" if match else f"{alias}_v2"


def _request_rebuild(
    cfg: ConnectorConfig, snapshots: SnapshotStore, covered: list[str], tables: list[str]
) -> list[str]:
    """Create the new index of every alias the tables feed, and request a snapshot of every
    table feeding those aliases into it. Returns the tables requested."""

    def mapping_of(table: str) -> TableMapping:
        mapping = cfg.mapping_for(*table.split(".", 1))
        assert mapping is not None
        return mapping

    aliases = sorted({mapping_of(t).index for t in tables})
    with RowReader(cfg.source) as reader:
        fields = check_mappings(cfg, reader).fields
    sink = ElasticSink(cfg.sink)
    try:
        for alias in aliases:
            current = sink.alias_target(alias)
            if current is None:
                raise CdcError(
                    f"{alias} is not an alias, so it cannot be swapped atomically",
                    hint=f"create an index {alias}_v1 holding the documents with the alias "
                    f"{alias} (the connector does this for indices it creates), or snapshot "
                    "without --rebuild",
                )
            new = _next_index(alias, current)
            members = sorted(t for t in covered if mapping_of(t).index == alias)
            if not sink.create_index(new, mapping_of(members[0]), fields=fields.get(alias)):
                raise CdcError(
                    f"index {new} already exists",
                    hint=f"delete it if it is a leftover of an earlier rebuild of {alias}",
                )
            typer.echo(f"rebuilding {alias}: {current} -> {new} from {', '.join(members)}")
            request(snapshots, members, target_index=new)
    finally:
        sink.close()
    return sorted(t for t in covered if mapping_of(t).index in aliases)


def _follow(snapshots: SnapshotStore, tables: list[str], worker: threading.Thread | None) -> None:
    """Print one progress line per table every few seconds until every table is done."""
    started = time.monotonic()
    last_line = 0.0
    while True:
        states = {t: p for t, p in snapshots.load_all().items() if t in tables}
        finished = all(t in states and states[t].state in ("done", "failed") for t in tables)
        now = time.monotonic()
        if finished or now - last_line >= 2.0:
            last_line = now
            for t in tables:
                typer.echo(_line(states.get(t), t, now - started))
        if finished:
            failed = [t for t in tables if states[t].state == "failed"]
            if failed:
                for t in failed:
                    # The stored error is a CdcError's text: the message, then "Fix: <hint>".
                    message, _, hint = (states[t].error or "failed").partition("\nFix: ")
                    error(f"{t}: {message}", hint or None)
                raise typer.Exit(1)
            if worker is None or not worker.is_alive():
                return
        if worker is not None and not worker.is_alive():
            return
        time.sleep(0.5)


def _line(progress: Progress | None, table: str, elapsed: float) -> str:
    if progress is None or progress.state == "pending":
        return f"{table}: waiting"
    done, total = progress.rows_done, max(progress.rows_total, progress.rows_done, 1)
    percent = 100 * done / total
    bar = "#" * int(percent // 5)
    rate = done / elapsed if elapsed > 0 else 0.0
    eta = f", ETA {int((total - done) / rate)} s" if rate and progress.state == "running" else ""
    return f"{table}: [{bar:<20}] {done:,}/{total:,} rows ({percent:.0f}%) {progress.state}{eta}"
