"""Snapshots: copy the current rows of mapped tables into the index while streaming goes on.

No locks and no pause (design invariant 3). Each chunk of rows is read, by primary key, in a
consistent-snapshot transaction whose binlog position P is known (`RowReader.consistent_chunk`).
The pipeline gives the chunk's documents the external version `(N << 23) | MAX_ROW_SLOT`,
where N is the counter of the last transaction at or before P: higher than every change the
chunk already reflects, lower than every transaction after it. Elasticsearch then keeps
whichever write is newer, so a chunk can neither undo a later change nor be undone by an
earlier one.

Progress is stored per table after each chunk is acknowledged, so a crash resumes from the last
completed chunk. A running connector picks up requests (`cdc snapshot`) from the same store.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from cdc.config import ConnectorConfig, TableMapping
from cdc.errors import CdcError, MappingError, TransientError
from cdc.model.checkpoint import CheckpointStore
from cdc.model.events import TableSchema
from cdc.source.rows import RowReader

log = logging.getLogger(__name__)

POLL_SECONDS = 1.0


def encode_key(key: tuple[Any, ...] | None) -> list[Any] | None:
    """A chunk's last key as JSON (Decimal, dates, times and bytes tagged)."""
    if key is None:
        return None
    out: list[Any] = []
    for value in key:
        if isinstance(value, Decimal):
            out.append({"dec": str(value)})
        elif isinstance(value, dt.datetime):
            out.append({"datetime": value.isoformat()})
        elif isinstance(value, dt.date):
            out.append({"date": value.isoformat()})
        elif isinstance(value, dt.timedelta):
            out.append({"time": value.total_seconds()})
        elif isinstance(value, bytes):
            out.append({"hex": value.hex()})
        elif isinstance(value, set | frozenset):
            out.append({"set": sorted(value)})
        else:
            out.append(value)
    return out


_DECODERS: dict[str, Callable[[Any], Any]] = {
    "dec": Decimal,
    "datetime": dt.datetime.fromisoformat,
    "date": dt.date.fromisoformat,
    "time": lambda seconds: dt.timedelta(seconds=seconds),
    "hex": bytes.fromhex,
    "set": set,
}


def decode_key(data: list[Any] | None) -> tuple[Any, ...] | None:
    """The inverse of `encode_key`."""
    if data is None:
        return None
    out: list[Any] = []
    for value in data:
        if isinstance(value, dict):
            (tag, raw), *_ = value.items()
            out.append(_DECODERS[tag](raw))
        else:
            out.append(value)
    return tuple(out)


@dataclass
class Progress:
    """The persisted state of one table's snapshot."""

    table: str
    state: str = "pending"
    """pending, running, done or failed."""
    after: list[Any] | None = None
    rows_done: int = 0
    rows_total: int = 0
    rows_read: int = 0
    """Rows read by this process (re-reads after a crash included); for progress and tests."""
    started_at: float = 0.0
    updated_at: float = 0.0
    error: str | None = None
    target_index: str | None = None
    """For a rebuild: the new index the rows go to."""

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Progress:
        known = {k: v for k, v in raw.items() if k in cls.__dataclass_fields__}
        return cls(**known)


@dataclass
class Chunk:
    """Rows of one table read at one binlog position, handed to the pipeline."""

    table: str
    mapping: TableMapping
    schema: TableSchema
    rows: list[dict[str, Any]]
    position: tuple[str, int]
    target_index: str | None = None
    done: threading.Event = field(default_factory=threading.Event)
    dropped: bool = False
    """Set by the pipeline when the chunk was read too long ago to be versioned: read again."""


def _split(table: str) -> tuple[str, str]:
    schema, name = table.split(".", 1)
    return schema, name


def resolve_tables(cfg: ConnectorConfig, reader: RowReader) -> list[str]:
    """Every existing `schema.table` some mapping covers (globs expanded)."""
    tables = reader.list_tables()
    return sorted(t for t in tables if cfg.mapping_for(*_split(t)) is not None)


class Snapshotter:
    """Reads the requested tables chunk by chunk and hands each chunk to the pipeline.

    One chunk is in flight at a time: the next is read after the previous was acknowledged,
    and progress is recorded then. Runs on a thread of its own.
    """

    def __init__(
        self,
        cfg: ConnectorConfig,
        store: CheckpointStore,
        submit: Callable[[Chunk], None],
        stop: threading.Event,
        on_progress: Callable[[Progress], None] | None = None,
        on_rebuilt: Callable[[str, str], None] | None = None,
        on_rebuild: Callable[[str, str], None] | None = None,
    ) -> None:
        self.cfg = cfg
        self.store = store
        self._submit = submit
        self._stop = stop
        self._on_progress = on_progress
        self._on_rebuilt = on_rebuilt
        self._on_rebuild = on_rebuild
        self._thread = threading.Thread(target=self._run, name="snapshot", daemon=True)
        self.active: Progress | None = None
        self.failure: BaseException | None = None
        self.idle = threading.Event()

    def start(self) -> None:
        self._thread.start()

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)

    def _run(self) -> None:
        reader = RowReader(self.cfg.source)
        try:
            while not self._stop.is_set():
                todo = self._next(self._load())
                if todo is None:
                    self.idle.set()
                    self._stop.wait(POLL_SECONDS)
                    continue
                self.idle.clear()
                try:
                    self._table(reader, todo)
                except TransientError as exc:
                    log.warning("snapshot of %s interrupted: %s; resuming shortly", todo.table, exc)
                    reader.close()
                    self._stop.wait(2.0)
                except CdcError as exc:
                    todo.state = "failed"
                    todo.error = str(exc)
                    log.error("snapshot of %s failed: %s", todo.table, exc)
                    self._save(todo)
        except BaseException as exc:  # reported by the pipeline, which owns the process
            self.failure = exc
        finally:
            reader.close()

    def _load(self) -> list[Progress]:
        try:
            states = self.store.load_snapshots()
        except TransientError:
            return []
        return [Progress.from_dict(v) for v in states.values()]

    @staticmethod
    def _next(states: list[Progress]) -> Progress | None:
        for wanted in ("running", "pending"):
            for progress in sorted(states, key=lambda p: p.table):
                if progress.state == wanted:
                    return progress
        return None

    def _save(self, progress: Progress) -> None:
        progress.updated_at = time.time()
        while not self._stop.is_set():
            try:
                self.store.save_snapshot(progress.table, progress.to_dict())
                break
            except TransientError:
                self._stop.wait(1.0)
        if self._on_progress is not None:
            self._on_progress(progress)

    def _table(self, reader: RowReader, progress: Progress) -> None:
        schema_name, table_name = _split(progress.table)
        mapping = self.cfg.mapping_for(schema_name, table_name)
        if mapping is None:
            raise MappingError(f"{progress.table} is not covered by any table mapping")
        schema = reader.table_schema(schema_name, table_name)
        key = reader.unique_key(schema_name, table_name)
        if key is None:
            raise MappingError(
                f"{progress.table} has neither a primary key nor a unique key on NOT NULL "
                "columns, so it cannot be read in chunks",
                hint="add a primary key to the table, or set its mapping's snapshot: never",
            )
        if progress.state == "pending":
            progress.state = "running"
            progress.started_at = time.time()
            progress.rows_done = 0
            progress.after = None
            progress.rows_total = reader.estimate_rows(schema_name, table_name)
            log.info("snapshot of %s started (about %d rows)", progress.table, progress.rows_total)
        else:
            log.info("snapshot of %s resumed after %d rows", progress.table, progress.rows_done)
        self.active = progress
        self._save(progress)
        if progress.target_index is not None and self._on_rebuild is not None:
            # Changes must reach the new index before the first chunk is read: those after a
            # chunk's position are not in the chunk.
            self._on_rebuild(mapping.index, progress.target_index)
        size = self.cfg.snapshot.chunk_size
        rate = self.cfg.snapshot.max_rows_per_second
        after = decode_key(progress.after)
        while not self._stop.is_set():
            began = time.monotonic()
            rows, position = reader.consistent_chunk(schema_name, table_name, key, after, size)
            progress.rows_read += len(rows)
            if rows:
                chunk = Chunk(
                    progress.table, mapping, schema, rows, position, progress.target_index
                )
                self._submit(chunk)
                while not chunk.done.wait(0.2):
                    if self._stop.is_set():
                        return
                if chunk.dropped:
                    continue
                after = tuple(rows[-1][c] for c in key)
                progress.after = encode_key(after)
                progress.rows_done += len(rows)
            if len(rows) < size:
                progress.state = "done"
                self._save(progress)
                log.info("snapshot of %s done: %d rows", progress.table, progress.rows_done)
                self.active = None
                target = progress.target_index
                if target is not None and self._on_rebuilt is not None:
                    others = [
                        p
                        for p in self._load()
                        if p.target_index == target and p.state in ("pending", "running")
                    ]
                    if not others:
                        self._on_rebuilt(mapping.index, target)
                return
            self._save(progress)
            if rate:
                self._stop.wait(max(0.0, len(rows) / rate - (time.monotonic() - began)))


def request(
    cfg: ConnectorConfig, store: CheckpointStore, tables: list[str], target_index: str | None = None
) -> None:
    """Mark tables for a (re-)snapshot; the running connector (or `cdc snapshot`) performs it."""
    for table in tables:
        store.save_snapshot(
            table,
            Progress(table=table, target_index=target_index, updated_at=time.time()).to_dict(),
        )
