"""The snapshotter: reads requested tables chunk by chunk, on a thread of its own.

Each chunk is read by key in a consistent-snapshot transaction whose binlog position is known,
and handed to the main loop, which versions it against the stream (`cdc.engine.snapshots`).
Up to `snapshot.chunks_in_flight` chunks are out at a time: the next is read while earlier ones
are being sent. Progress is recorded for a chunk only once it and every earlier chunk are
acknowledged, so a crash resumes after the last chunk that completed in order; a chunk that
comes back dropped is read again, and so is everything read after it. Requests come from
the snapshot store (`request`, used at start and by `cdc snapshot`). See "Lock-free snapshots
merged with the stream" in docs/design.md.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from cdc.config import ConnectorConfig, TableMapping
from cdc.engine.ports import Rows
from cdc.engine.rebuilds import fetcher
from cdc.errors import CdcError, Interrupted, MappingError, TransientError
from cdc.model.events import TableSchema
from cdc.model.progress import Progress, decode_key, encode_key
from cdc.retry import Backoff, Outage, retry
from cdc.source.mysql import quote_name
from cdc.state.stores import SnapshotStore
from cdc.transform.filters import RowFilter
from cdc.transform.mapping import Action
from cdc.transform.trees import Tree

log = logging.getLogger(__name__)

POLL_SECONDS = 1.0
"""How often an idle snapshotter looks for new requests."""


@dataclass
class Chunk:
    """Rows of one table read at one binlog position, handed to the main loop."""

    table: str
    mapping: TableMapping
    schema: TableSchema
    """The table as it was when the rows were read."""
    rows: list[dict[str, Any]]
    position: tuple[str, int]
    target_index: str | None = None
    actions: list[list[Action]] | None = None
    """The operations of each row, built with its children in the rows' snapshot, when the
    mapping has children (else the main loop maps the rows)."""
    done: threading.Event = field(default_factory=threading.Event)
    """Set by the main loop once the chunk is acknowledged (or `dropped`)."""
    dropped: bool = False
    """Set by the main loop when the chunk cannot be versioned (read too long ago, or the
    connector is stopping): it is read again."""


def read_tree_chunk(
    rows: Rows,
    tree: Tree,
    key: Sequence[str],
    after: tuple[Any, ...] | None,
    limit: int,
    condition: tuple[str, Sequence[Any]] | None = None,
) -> tuple[tuple[TableSchema, list[dict[str, Any]], list[list[Action]]], tuple[str, int]]:
    """A chunk of a tree's root rows (those `condition` is true for) and the operations of
    their whole documents, every row read in one consistent snapshot, with its binlog
    position."""
    schema_name, table_name = _split(tree.mapping.table)

    def read() -> tuple[TableSchema, list[dict[str, Any]], list[list[Action]]]:
        schema = rows.table_schema(schema_name, table_name)
        chunk = rows.fetch_chunk(schema_name, table_name, key, after, limit, condition)
        return schema, chunk, tree.documents(schema, chunk, fetcher(rows))

    rows.forget()  # every chunk sees the tables as they are now (a snapshot spans DDLs)
    return rows.consistent_read(read)


def resolve_tables(cfg: ConnectorConfig, rows: Rows) -> list[str]:
    """Every existing `schema.table` some mapping covers (globs expanded)."""
    return sorted(t for t in rows.list_tables() if cfg.mapping_for(*_split(t)) is not None)


def request(store: SnapshotStore, tables: list[str], target_index: str | None = None) -> None:
    """Mark tables for a (re-)snapshot; the running connector (or `cdc snapshot`) performs it."""
    for table in tables:
        store.save(Progress(table=table, target_index=target_index, updated_at=time.time()))


def _split(table: str) -> tuple[str, str]:
    schema, name = table.split(".", 1)
    return schema, name


class Snapshotter:
    """Reads the requested tables and hands their chunks to `submit`; runs on its own thread.

    `on_rebuild(alias, index)` is called before a rebuild's first chunk is read (changes must
    reach the new index from then on), `on_rebuilt(alias, index)` when every table feeding the
    new index is copied (retried while Elasticsearch is unavailable). Links that are down are
    retried; a table that cannot be copied (no usable key, not mapped) is marked failed and the
    others go on; a bug stops the thread and is kept in `failure` for the main loop.
    """

    def __init__(
        self,
        cfg: ConnectorConfig,
        rows: Callable[[], Rows],
        store: SnapshotStore,
        submit: Callable[[Chunk], None],
        stop: threading.Event,
        on_progress: Callable[[Progress], None],
        on_rebuild: Callable[[str, str], None],
        on_rebuilt: Callable[[str, str], None],
        trees: dict[str, Tree] | None = None,
    ) -> None:
        self.cfg = cfg
        self._trees = trees if trees is not None else {}
        self._rows = rows
        self.store = store
        self._submit = submit
        self._stop = stop
        self._on_progress = on_progress
        self._on_rebuild = on_rebuild
        self._on_rebuilt = on_rebuilt
        self._outage = Outage("MySQL (snapshot reads)")
        self._store_outage = Outage("checkpoint store (snapshot progress)")
        self._sink_outage = Outage("Elasticsearch (alias swap)")
        self._thread = threading.Thread(target=self._run, name="snapshot", daemon=True)
        self.failure: BaseException | None = None
        self.idle = threading.Event()
        """Set while no snapshot is requested or running."""

    def start(self) -> None:
        self._thread.start()

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)

    def _run(self) -> None:
        reader = self._rows()
        backoff = Backoff(first=0.5)
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
                    if not self._outage.down:
                        backoff.reset()  # reads worked until now: a new outage starts
                    self._outage.failed(exc)
                    reader.close()
                    backoff.wait(self._stop)
                except Interrupted:
                    return
                except CdcError as exc:
                    todo.state = "failed"
                    todo.error = str(exc)
                    log.error("snapshot of %s failed: %s", todo.table, exc)
                    self._save(todo)
        except Interrupted:
            return
        except BaseException as exc:  # reported by the main loop, which owns the process
            self.failure = exc
        finally:
            reader.close()

    def _load(self) -> list[Progress]:
        """Every table's progress; waits while the store is unavailable (an empty answer would
        read as "nothing to do")."""
        return list(retry(self.store.load_all, self._store_outage, self._stop).values())

    @staticmethod
    def _next(states: list[Progress]) -> Progress | None:
        for wanted in ("running", "pending"):
            for progress in sorted(states, key=lambda p: p.table):
                if progress.state == wanted:
                    return progress
        return None

    def _save(self, progress: Progress) -> None:
        progress.updated_at = time.time()
        retry(lambda: self.store.save(progress), self._store_outage, self._stop)
        self._on_progress(progress)

    def _table(self, reader: Rows, progress: Progress) -> None:
        schema_name, table_name = _split(progress.table)
        mapping = self.cfg.mapping_for(schema_name, table_name)
        if mapping is None:
            raise MappingError(f"{progress.table} is not covered by any table mapping")
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
        self._save(progress)
        if progress.target_index is not None:
            # Changes must reach the new index before the first chunk is read: those after a
            # chunk's position are not in the chunk.
            self._on_rebuild(mapping.index, progress.target_index)
        size = self.cfg.snapshot.chunk_size
        rate = self.cfg.snapshot.max_rows_per_second
        after = decode_key(progress.after)
        # Only the rows of the mapping's `where` are read (the stream keeps the same ones).
        condition = None
        if mapping.where is not None:
            where = RowFilter(mapping.where, reader.table_schema(schema_name, table_name))
            condition = where.sql(quote_name)
        tree = self._trees.get(progress.table) if mapping.children else None
        if mapping.children and tree is None:
            raise MappingError(f"the children of {progress.table}'s mapping were not compiled")
        depth = self.cfg.snapshot.chunks_in_flight
        out: deque[tuple[Chunk, tuple[Any, ...]]] = deque()
        """Chunks submitted and not acknowledged yet, oldest first, with their last key."""
        read_all = False
        """The last chunk read was the table's last (shorter than a full one)."""
        while not self._stop.is_set():
            if not read_all and len(out) < depth:
                began = time.monotonic()
                if tree is None:
                    schema, rows, position = reader.consistent_chunk(
                        schema_name, table_name, key, after, size, condition
                    )
                    actions = None
                else:
                    (schema, rows, actions), position = read_tree_chunk(
                        reader, tree, key, after, size, condition
                    )
                self._outage.recovered()
                progress.rows_read += len(rows)
                read_all = len(rows) < size
                if rows:
                    chunk = Chunk(
                        progress.table,
                        mapping,
                        schema,
                        rows,
                        position,
                        progress.target_index,
                        actions,
                    )
                    after = tuple(rows[-1][c] for c in key)
                    out.append((chunk, after))
                    self._submit(chunk)
                if rate:
                    self._stop.wait(max(0.0, len(rows) / rate - (time.monotonic() - began)))
            elif out and not out[0][0].done.wait(0.2):
                continue
            while out and out[0][0].done.is_set():
                chunk, last = out.popleft()
                if chunk.dropped:
                    # Read again from the last chunk completed in order; the later ones too.
                    out.clear()
                    after = decode_key(progress.after)
                    read_all = False
                    break
                progress.after = encode_key(last)
                progress.rows_done += len(chunk.rows)
                if out or not read_all:
                    self._save(progress)
            if read_all and not out:
                progress.state = "done"
                self._save(progress)
                log.info("snapshot of %s done: %d rows", progress.table, progress.rows_done)
                self._finish_rebuild(mapping, progress)
                return

    def _finish_rebuild(self, mapping: TableMapping, progress: Progress) -> None:
        target = progress.target_index
        if target is None:
            return
        others = [p for p in self._load() if p.target_index == target and p.active]
        if not others:
            retry(lambda: self._on_rebuilt(mapping.index, target), self._sink_outage, self._stop)
