"""`cdc verify`: compare every index with MySQL, and optionally repair what differs.

Exit status: 0 when the index equals MySQL (or `--repair` fixed everything it found); 1 when
differences remain, rows could not be compared (changing) or a table could not be read; 2 for
a bad config or argument.
"""

from __future__ import annotations

import signal
import sys
import threading
from types import FrameType
from typing import Annotated, Any

import orjson
import typer

from cdc.cli.common import (
    ConfigOption,
    JsonOption,
    describe_runner,
    fail,
    load,
    matching_tables,
    paragraphs,
    reported,
    setup_command_logging,
)
from cdc.config import ConnectorConfig
from cdc.engine.snapshotter import resolve_tables
from cdc.engine.startup import check_mappings
from cdc.engine.verify import IndexReport, Report, Verifier, snapshotting
from cdc.errors import Interrupted
from cdc.sink.elastic import ElasticSink
from cdc.source.rows import RowReader
from cdc.state.backends import open_stores
from cdc.state.stores import Stores

VERIFY_HELP = paragraphs(
    "Compare the document every MySQL row should produce with the document in the index.",
    "Reports, per index: rows checked, missing documents, different documents (with the "
    "fields that differ), extra documents (no row produces them), and rows that kept "
    "changing so they could not be compared. A row that changed while it was being checked "
    "is compared again once the running connector has caught up with it, so writes going on "
    "meanwhile cause no false alarms.",
    "With --repair, missing and different documents are sent again and extra ones deleted, "
    "with versions that never undo a change the stream applies; the repaired documents are "
    "then checked again.",
    "Exit status: 0 equal (or all repaired); 1 when differences remain, rows could not be "
    "compared (changing) or a table could not be read; 2 bad config or argument.",
)

_SHOWN = 20
"""Ids listed per kind in the text report (--json lists all)."""


def verify(
    config: ConfigOption,
    table: Annotated[
        list[str] | None,
        typer.Option(
            "--table",
            "-t",
            help="schema.table to verify (repeatable; globs allowed). Default: every mapped table.",
        ),
    ] = None,
    as_json: JsonOption = False,
    repair: Annotated[
        bool, typer.Option("--repair", help="Re-send what differs and delete extra documents.")
    ] = False,
    max_rows_per_second: Annotated[
        int,
        typer.Option(
            min=0, metavar="N", help="Read at most N rows per second from MySQL (0: no limit)."
        ),
    ] = 0,
    timeout: Annotated[
        float,
        typer.Option(
            min=1,
            metavar="SECONDS",
            help="How long to wait for the running connector to catch up with rows that "
            "changed during the check before reporting them as changing.",
        ),
    ] = 60.0,
) -> None:
    cfg = load(config)
    setup_command_logging(cfg)
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = signal.signal(signal.SIGINT, on_signal), signal.signal(signal.SIGTERM, on_signal)
    try:
        report, after = _check(cfg, table, stop, repair, max_rows_per_second, timeout)
    finally:
        signal.signal(signal.SIGINT, previous[0])
        signal.signal(signal.SIGTERM, previous[1])
    final = after or report
    if as_json:
        data: dict[str, Any] = report.to_dict()
        if after is not None:
            data["after_repair"] = after.to_dict()
        typer.echo(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode())
    else:
        for line in describe(report):
            typer.echo(line)
        if after is not None:
            for line in describe_repair(after):
                typer.echo(line)
    if not final.equal:
        raise typer.Exit(1)


def _check(
    cfg: ConnectorConfig,
    table: list[str] | None,
    stop: threading.Event,
    repair: bool,
    max_rows_per_second: int,
    timeout: float,
) -> tuple[Report, Report | None]:
    """Verify (and repair); exits 2 for tables that match no mapping, 1 on errors."""
    with reported(), open_stores(cfg) as stores, RowReader(cfg.source) as reader:
        covered = resolve_tables(cfg, reader)
        if not covered:
            fail("none of the mapped tables exists on the server", code=2)
        tables = matching_tables(covered, table) if table else covered
        indices = {_index_of(cfg, t) for t in tables}
        busy = snapshotting(stores.snapshots, [t for t in covered if _index_of(cfg, t) in indices])
        if busy:
            fail(
                f"a snapshot of {', '.join(busy)} is under way: its documents are still being "
                "copied, so the index cannot be compared yet",
                "run cdc verify once it is done (cdc status shows its progress)",
            )
        if repair:
            _check_repair_is_safe(stores)
        sink = ElasticSink(cfg.sink)
        bar = _Bar() if sys.stderr.isatty() else None
        repairing = False
        try:
            verifier = Verifier(
                cfg,
                reader,
                sink,
                stores.checkpoints,
                stop=stop,
                max_rows_per_second=max_rows_per_second,
                catch_up_timeout=min(10.0, timeout),
                settle_timeout=timeout,
                on_progress=bar.show if bar else None,
            )
            try:
                report = verifier.run(tables)
            finally:
                if bar:
                    bar.close()
            after = None
            if repair and not report.equal:
                repairing = True
                # Documents go where the connector would put them: a missing index is created
                # behind its alias, as the connector creates it.
                fields = check_mappings(cfg, reader).fields
                sink.ensure_indices([m for m in cfg.tables if m.index in report.indices], fields)
                after = verifier.repair(report, sink)
        except Interrupted:
            if repairing:
                fail("interrupted during the repair", "run cdc verify again to see what is left")
            fail("interrupted")
        finally:
            sink.close()
    return report, after


def _check_repair_is_safe(stores: Stores) -> None:
    """Refuse to repair while a connector runs without a checkpoint: a repair's version comes
    from the checkpoint's counter, and one taken from the clock could beat the stream's."""
    if stores.checkpoints.load() is not None:
        return
    status = stores.heartbeats.read()
    if status is not None and status.running:
        fail(
            f"a connector runs ({describe_runner(status)}) but no checkpoint is stored yet, so "
            "a repair cannot choose versions that the stream's changes are sure to beat",
            "run cdc verify --repair once the connector has stored its first checkpoint",
        )


def _index_of(cfg: ConnectorConfig, table: str) -> str:
    mapping = cfg.mapping_for(*table.split(".", 1))
    assert mapping is not None
    return mapping.index


# -- output ------------------------------------------------------------------------------------


def describe(report: Report) -> list[str]:
    """The text report: a summary line per index, then the ids of each kind of difference."""
    if not report.indices:
        return ["No documents to verify."]
    lines = []
    for index, found in sorted(report.indices.items()):
        lines.append(f"{index}: {_summary(found)}")
        lines += _details(found)
    return lines


def describe_repair(after: Report) -> list[str]:
    """What the repair sent, and what still differs after it."""
    lines = []
    for index, fixed in sorted(after.indices.items()):
        if fixed.repaired is None:
            continue
        if fixed.repaired:
            lines.append(f"{index}: repaired {_count(len(fixed.repaired), 'document')}")
        if fixed.equal:
            lines.append(f"{index}: after repair: equal")
        else:
            lines.append(f"{index}: after repair: {_summary(fixed, checked=False)}")
            lines += _details(fixed)
    return lines or ["Nothing to repair."]


def _summary(found: IndexReport, checked: bool = True) -> str:
    parts = []
    if found.missing:
        parts.append(f"{len(found.missing)} missing")
    if found.different:
        parts.append(f"{len(found.different)} different")
    if found.extra:
        parts.append(f"{len(found.extra)} extra")
    if found.changing:
        parts.append(f"{len(found.changing)} changing (could not be compared)")
    if found.unverified:
        parts.append(f"{_count(len(found.unverified), 'table')} not verified")
    head = f"{_count(found.checked, 'row')} checked; " if checked else ""
    return head + (", ".join(parts) if parts else "equal")


def _details(found: IndexReport) -> list[str]:
    different = [f"{d['id']} ({', '.join(d['fields']) or 'source'})" for d in found.different]
    kinds = [
        ("missing", sorted(found.missing)),
        ("different", sorted(different)),
        ("extra", sorted(found.extra)),
        ("changing", sorted(found.changing)),
    ]
    lines = [f"  {'table':<9} {u['table']}: {u['reason']}" for u in found.unverified]
    for kind, ids in kinds:
        if ids:
            more = (
                f" ... and {len(ids) - _SHOWN} more (--json lists all)" if len(ids) > _SHOWN else ""
            )
            lines.append(f"  {kind:<9} {', '.join(ids[:_SHOWN])}{more}")
    return lines


def _count(n: int, noun: str) -> str:
    return f"{n:,} {noun}" if n == 1 else f"{n:,} {noun}s"


class _Bar:
    """One progress line per table on the terminal (stderr)."""

    def __init__(self) -> None:
        self._table: str | None = None

    def show(self, table: str, done: int, total: int) -> None:
        if table != self._table and self._table is not None:
            sys.stderr.write("\n")
        self._table = table
        width = 30
        filled = width * done // max(total, 1)
        percent = 100 * done // max(total, 1)
        bar = "#" * filled + "-" * (width - filled)
        sys.stderr.write(f"\r{table} [{bar}] {percent:3d}% {done:,}/{total:,} rows")
        sys.stderr.flush()

    def close(self) -> None:
        if self._table is not None:
            sys.stderr.write("\n")
            sys.stderr.flush()
