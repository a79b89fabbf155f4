"""`cdc snapshot`: copy (or re-copy) tables into the index while streaming goes on."""

from __future__ import annotations

import logging
import re
import signal
import threading
import time
from pathlib import Path
from types import FrameType
from typing import Annotated

import typer

from cdc.config import ConnectorConfig, load_config
from cdc.engine.pipeline import Pipeline
from cdc.engine.snapshot import Progress, request, resolve_tables
from cdc.errors import CdcError
from cdc.model.checkpoint import CheckpointStore
from cdc.sink.elastic import ElasticSink, Interrupted
from cdc.source.rows import RowReader

log = logging.getLogger("cdc")


def snapshot(
    config: Annotated[
        Path,
        typer.Option(
            "--config", "-c", envvar="CDC_CONFIG", help="Connector config YAML.", show_default=False
        ),
    ],
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
    from cdc.cli import make_store, setup_logging

    try:
        cfg = load_config(config)
    except CdcError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    if bool(table) == all_tables:
        typer.echo("error: give --table (one or more) or --all", err=True)
        raise typer.Exit(2)
    setup_logging(cfg.log_format, "WARNING")
    store = make_store(cfg)
    try:
        reader = RowReader(cfg.source)
        try:
            covered = resolve_tables(cfg, reader)
        finally:
            reader.close()
        if all_tables:
            tables = covered
        else:
            import fnmatch

            tables = sorted(
                {t for pattern in table or [] for t in fnmatch.filter(covered, pattern)}
            )
            missing = [p for p in table or [] if not fnmatch.filter(covered, p)]
            if missing:
                typer.echo(
                    f"error: no mapped table matches {', '.join(missing)}; mapped tables: "
                    f"{', '.join(covered) or '(none exist)'}",
                    err=True,
                )
                raise typer.Exit(2)
        if not tables:
            typer.echo("error: none of the mapped tables exists on the server", err=True)
            raise typer.Exit(2)
        status = store.read_status()
        running = status is not None and status.get("state") in ("running", "degraded")
        if rebuild:
            tables = _request_rebuild(cfg, store, covered, tables)
        else:
            request(cfg, store, tables)
        typer.echo(f"snapshot requested for {', '.join(tables)}")
        if running:
            typer.echo(f"the running connector (pid {status['pid']}) performs it")  # type: ignore[index]
            if wait:
                _follow(store, tables, None)
            return
        sink = ElasticSink(cfg.sink)
        stop = threading.Event()

        def on_signal(signum: int, frame: FrameType | None) -> None:
            stop.set()

        signal.signal(signal.SIGINT, on_signal)
        signal.signal(signal.SIGTERM, on_signal)
        pipeline = Pipeline(cfg, sink, store, stop=stop)
        failure: list[BaseException] = []

        def work() -> None:
            try:
                pipeline.run(until_caught_up=True)
            except BaseException as exc:
                failure.append(exc)

        worker = threading.Thread(target=work, name="pipeline", daemon=True)
        worker.start()
        _follow(store, tables, worker)
        worker.join()
        sink.close()
        if failure and not isinstance(failure[0], Interrupted):
            raise failure[0]
        if stop.is_set():
            typer.echo("interrupted: the next `cdc snapshot` or `cdc run` resumes it")
            raise typer.Exit(1)
    except CdcError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    finally:
        store.close()


def _next_index(alias: str, current: str) -> str:
    match = re.fullmatch(r"(.+)_v(\d+)", current)
    return f"{match.group(1)}_v{int(match.group(2)) + 1}" if match else f"{alias}_v2"


def _request_rebuild(
    cfg: ConnectorConfig, store: CheckpointStore, covered: list[str], tables: list[str]
) -> list[str]:
    """Create the new index of every alias the tables feed, and request a snapshot of every
    table feeding those aliases into it. Returns the tables requested."""
    from cdc.config import TableMapping

    def mapping_of(table: str) -> TableMapping:
        mapping = cfg.mapping_for(*table.split(".", 1))
        assert mapping is not None
        return mapping

    aliases = sorted({mapping_of(t).index for t in tables})
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
            if not sink.create_index(new, mapping_of(members[0])):
                raise CdcError(
                    f"index {new} already exists",
                    hint=f"delete it if it is a leftover of an earlier rebuild of {alias}",
                )
            typer.echo(f"rebuilding {alias}: {current} -> {new} from {', '.join(members)}")
            for table in members:
                request(cfg, store, [table], target_index=new)
    finally:
        sink.close()
    return sorted(t for t in covered if mapping_of(t).index in aliases)


def _follow(store: object, tables: list[str], worker: threading.Thread | None) -> None:
    """Print one progress line per table every few seconds until every table is done."""
    load = store.load_snapshots  # type: ignore[attr-defined]
    started = time.monotonic()
    last_line = 0.0
    while True:
        states = {t: Progress.from_dict(v) for t, v in load().items() if t in tables}
        finished = all(states.get(t) and states[t].state in ("done", "failed") for t in tables)
        now = time.monotonic()
        if finished or now - last_line >= 2.0:
            last_line = now
            for t in tables:
                typer.echo(_line(states.get(t), t, now - started))
        if finished:
            failed = [t for t in tables if states[t].state == "failed"]
            if failed:
                for t in failed:
                    typer.echo(f"error: {t}: {states[t].error}", err=True)
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
