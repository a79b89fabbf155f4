"""`cdc dlq ...`: list, replay and purge the documents Elasticsearch rejected.

`replay` exits 1 unless every letter was replayed.
"""

from __future__ import annotations

import re
import threading
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import orjson
import typer

from cdc.cli.common import (
    ConfigOption,
    YesOption,
    confirm,
    fail,
    load,
    reported,
    setup_command_logging,
)
from cdc.config import ConnectorConfig
from cdc.config.problems import mask_url
from cdc.engine.replay import Outcome, ReplayReport, replay
from cdc.errors import CdcError, Interrupted
from cdc.model.letters import DeadLetter, parse_id
from cdc.sink.elastic import ElasticSink
from cdc.source.rows import RowReader
from cdc.state.backends import open_stores

app = typer.Typer(
    help="Inspect, replay and purge rejected documents (the dead-letter queue).\n\n"
    "A document Elasticsearch refuses for its content (a mapping or parse error) is parked "
    "with its table, row key, error and GTID while the connector goes on. Fix the index or "
    "the mapping, then `cdc dlq replay` re-reads those rows from MySQL and sends them again.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

_ERROR_WIDTH = 100


@app.command("list")
def list_letters(
    config: ConfigOption,
    limit: Annotated[
        int,
        typer.Option(
            "--limit", "-n", min=1, metavar="N", help="Show at most this many, oldest first."
        ),
    ] = 100,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print one JSON object per letter, all fields.")
    ] = False,
) -> None:
    """Show parked letters, oldest first: id, time, table, document, operation, error."""
    cfg = _load(config)
    with reported(), open_stores(cfg) as stores:
        dlq = stores.letters
        letters = dlq.list(limit=limit)
        if as_json:
            for letter_id, letter in letters:
                typer.echo(orjson.dumps({"id": letter_id, **asdict(letter)}).decode())
            return
        total = dlq.size()
        if not letters:
            typer.echo(f"The dead-letter queue is empty ({dlq.describe()}).")
            return
        for line in format_table(letters):
            typer.echo(line)
        if total > len(letters):
            typer.echo(f"Showing the oldest {len(letters)} of {total}; use --limit to see more.")
        else:
            typer.echo(f"{total} letter{'s' if total != 1 else ''} in {dlq.describe()}.")


@app.command(
    "replay",
    help="Re-read the rows of parked letters from MySQL and send them again.\n\n"
    "A row that still exists is indexed with the table's current mapping; a row that is gone "
    "is deleted. Letters Elasticsearch accepts are removed, the others stay with the new "
    "error. Exits 1 unless every letter was replayed.",
)
def replay_letters(
    config: ConfigOption,
    ids: Annotated[
        list[str] | None,
        typer.Option(
            "--id", metavar="ID", help="Replay only this letter (repeatable). Default: all."
        ),
    ] = None,
    yes: YesOption = False,
    timeout: Annotated[
        float,
        typer.Option(
            min=1,
            metavar="SECONDS",
            help="Give up after this many seconds of Elasticsearch not accepting writes.",
        ),
    ] = 120.0,
) -> None:
    cfg = _load(config)
    with reported(), open_stores(cfg) as stores:
        dlq = stores.letters
        for letter_id in ids or []:
            parse_id(letter_id)
        count = len(set(ids)) if ids else dlq.size()
        if count == 0:
            typer.echo(f"Nothing to replay: the dead-letter queue is empty ({dlq.describe()}).")
            return
        urls = ", ".join(mask_url(url) for url in cfg.sink.urls)
        confirm(
            yes,
            f"Replay {_letters(count)} from {dlq.describe()}: re-read the rows from "
            f"{cfg.source.host}:{cfg.source.port} and send them to {urls}?",
            "replaying",
        )
        report = ReplayReport()
        patience = _Patience(timeout)

        def show(outcome: Outcome) -> None:
            patience.progressed()
            report.add(outcome)
            if outcome.result != "replayed":
                typer.echo(format_outcome(outcome))

        sink = ElasticSink(cfg.sink)
        reader = RowReader(cfg.source)
        try:
            replay(
                cfg,
                dlq,
                stores.checkpoints,
                reader,
                sink,
                ids=ids or None,
                stop=patience.stop,
                on_outcome=show,
                on_retry=patience.failing,
            )
        except Interrupted:
            _partial(report)
            fail(f"Elasticsearch did not accept the documents within {timeout:g} s")
        except CdcError:
            _partial(report)
            raise
        finally:
            patience.cancel()
            reader.close()
            sink.close()
        typer.echo(_summary(report))
        if report.rejected or report.failed:
            raise typer.Exit(1)


@app.command("purge")
def purge_letters(config: ConfigOption, yes: YesOption = False) -> None:
    """Delete every parked letter. They cannot be replayed afterwards."""
    cfg = _load(config)
    with reported(), open_stores(cfg) as stores:
        dlq = stores.letters
        count = dlq.size()
        if count == 0:
            typer.echo(f"The dead-letter queue is already empty ({dlq.describe()}).")
            return
        confirm(
            yes,
            f"Delete {_letters(count)} from {dlq.describe()}? They cannot be replayed afterwards.",
            "purging",
        )
        purged = dlq.purge()
        typer.echo(f"Purged {_letters(purged)} from {dlq.describe()}.")


# -- output ------------------------------------------------------------------------------------


def format_table(letters: list[tuple[str, DeadLetter]]) -> list[str]:
    """One header line and one line per letter; the error is cut to fit one line."""
    rows = [("ID", "PARKED (UTC)", "TABLE", "DOCUMENT", "OP", "ERROR")]
    for letter_id, letter in letters:
        rows.append(
            (
                letter_id,
                _when(letter.time),
                letter.table,
                _clip(f"{letter.index}/{letter.doc_id}", 60),
                letter.op,
                _clip(f"{letter.status} {_one_line(letter.error)}", _ERROR_WIDTH),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    return [
        "  ".join(cell.ljust(width) for cell, width in zip(row[:5], widths, strict=True))
        + "  "
        + row[5]
        for row in rows
    ]


def format_outcome(outcome: Outcome) -> str:
    """One line for a letter that was not replayed."""
    letter = outcome.letter
    where = f" {letter.table} {letter.index}/{letter.doc_id}" if letter is not None else ""
    reason = _clip(_one_line(outcome.reason or ""), 200)
    return f"{outcome.result}: {outcome.letter_id}{where}: {reason}"


def _summary(report: ReplayReport) -> str:
    return f"Replayed {report.replayed}, still rejected {report.rejected}, failed {report.failed}."


def _partial(report: ReplayReport) -> None:
    if report.replayed or report.rejected or report.failed:
        typer.echo(f"Stopped early. {_summary(report)}", err=True)


def _letters(n: int) -> str:
    return f"{n} dead letter{'s' if n != 1 else ''}"


def _when(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _one_line(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."


# -- plumbing ----------------------------------------------------------------------------------


class _Patience:
    """Sets `stop` once Elasticsearch has refused writes for `timeout` seconds in a row, and
    says once per outage that it is waiting."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self.stop = threading.Event()
        self._timer: threading.Timer | None = None

    def failing(self, error: BaseException) -> None:
        if self._timer is not None:
            return
        typer.echo(
            f"Elasticsearch is not accepting writes ({_one_line(str(error))}); "
            f"retrying for up to {self.timeout:g} s",
            err=True,
        )
        self._timer = threading.Timer(self.timeout, self.stop.set)
        self._timer.daemon = True
        self._timer.start()

    def progressed(self) -> None:
        self.cancel()

    def cancel(self) -> None:
        if self._timer is not None and not self.stop.is_set():
            self._timer.cancel()
            self._timer = None


def _load(config: Path) -> ConnectorConfig:
    cfg = load(config)
    setup_command_logging(cfg)
    return cfg
