"""The small Protocols the engine is written against: the source, the sink, and row reads.

The real implementations are `cdc.source.server.MysqlSource`, `cdc.sink.elastic.ElasticSink`
and `cdc.source.rows.RowReader` (both row protocols); the stores are `cdc.state.stores.Stores`.
Unit tests drive the engine with fakes of these (`tests/unit/engine`).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Generator, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Any, Protocol, TypeVar

from cdc.config import TableMapping
from cdc.model.events import ForeignKey, TableSchema
from cdc.model.position import Position, ServerInfo
from cdc.sink.bulk import BulkItem, ItemResult
from cdc.source.handoff import Stream

_T = TypeVar("_T")


class RowsByKey(Protocol):
    """Current rows of the source by key, in the value shapes the binlog stream produces (what
    a dead-letter replay reads)."""

    def table_schema(self, schema: str, table: str) -> TableSchema:
        """The table as the binlog stream would describe it; `CdcError` if it does not exist."""
        ...

    def fetch_by_keys(
        self,
        schema: str,
        table: str,
        id_columns: Sequence[str],
        keys: Sequence[tuple[str, ...]],
    ) -> dict[tuple[str, ...], dict[str, Any] | None]:
        """The current row of each key (rendered as in document ids), or None when none has
        it."""
        ...


class ReplayRows(RowsByKey, Protocol):
    """What a dead-letter replay reads: rows by key, and for a mapping with children the
    catalog its tree is compiled against and the child rows."""

    def list_tables(self) -> list[str]: ...

    def indexes(self, schema: str, table: str) -> list[tuple[str, ...]]: ...

    def foreign_keys(self, schema: str, table: str) -> list[ForeignKey]: ...

    def fetch_in(
        self,
        schema: str,
        table: str,
        columns: Sequence[str],
        values: Sequence[tuple[Any, ...]],
        order: Sequence[tuple[str, bool]] = (),
    ) -> tuple[TableSchema, list[dict[str, Any]]]: ...


class Rows(Protocol):
    """The source's tables, and their current rows in key-ordered chunks, in the value shapes
    the binlog stream produces (what a snapshot and the startup checks read)."""

    def table_schema(self, schema: str, table: str) -> TableSchema:
        """The table as the binlog stream would describe it; `CdcError` if it does not exist."""
        ...

    def unique_key(self, schema: str, table: str) -> tuple[str, ...] | None: ...

    def estimate_rows(self, schema: str, table: str) -> int: ...

    def list_tables(self) -> list[str]: ...

    def consistent_chunk(
        self,
        schema: str,
        table: str,
        key_columns: Sequence[str],
        after: tuple[Any, ...] | None,
        limit: int,
        condition: tuple[str, Sequence[Any]] | None = None,
    ) -> tuple[TableSchema, list[dict[str, Any]], tuple[str, int]]: ...

    def fetch_chunk(
        self,
        schema: str,
        table: str,
        key_columns: Sequence[str],
        after: tuple[Any, ...] | None,
        limit: int,
        condition: tuple[str, Sequence[Any]] | None = None,
    ) -> list[dict[str, Any]]:
        """Up to `limit` rows ordered by `key_columns`, after the key `after` (None: from the
        start), read in whatever transaction is open."""
        ...

    def indexes(self, schema: str, table: str) -> list[tuple[str, ...]]:
        """The columns of each index of the table, in index order."""
        ...

    def foreign_keys(self, schema: str, table: str) -> list[ForeignKey]:
        """The table's FOREIGN KEY constraints."""
        ...

    def fetch_in(
        self,
        schema: str,
        table: str,
        columns: Sequence[str],
        values: Sequence[tuple[Any, ...]],
        order: Sequence[tuple[str, bool]] = (),
    ) -> tuple[TableSchema, list[dict[str, Any]]]:
        """The table, and its rows whose `columns` equal one of `values` (the shapes rows
        and the binlog hold), ordered by (column, descending) pairs."""
        ...

    def consistent_read(self, read: Callable[[], _T]) -> tuple[_T, tuple[str, int]]:
        """`read()` in one consistent snapshot, and a binlog position (file, offset) every
        transaction the snapshot holds is at or before (exact on MariaDB)."""
        ...

    def forget(self) -> None:
        """Drop cached table descriptions (a table may have been altered)."""
        ...

    def close(self) -> None: ...


class VerifyRows(Rows, RowsByKey, Protocol):
    """What `cdc verify` reads: chunks, rows by key, and rows by key inside one consistent
    snapshot."""

    def valid_key(
        self, schema: str, table: str, id_columns: Sequence[str], key: tuple[str, ...]
    ) -> bool:
        """Whether `key` can be a key of the table (each part a value of its column)."""
        ...

    def fetch_key_columns(
        self,
        schema: str,
        table: str,
        id_columns: Sequence[str],
        keys: Sequence[tuple[str, ...]],
    ) -> list[dict[str, Any]]:
        """Only the `id_columns` of the rows whose key is among `keys`."""
        ...

    def position(self) -> Position:
        """The server's binlog position now."""
        ...

    def snapshot(self) -> AbstractContextManager[tuple[str, int]]:
        """A block whose reads see one consistent snapshot, yielding a binlog position
        (file, offset) at or after every transaction the snapshot holds."""
        ...


class Documents(Protocol):
    """The documents of an index, read back (what `cdc verify` compares)."""

    def mget(
        self, index: str, ids: Sequence[str], routing: Mapping[str, str] | None = None
    ) -> dict[str, dict[str, Any]]:
        """The source of each of `ids` the index holds (real time: no refresh needed);
        ids it lacks are left out."""
        ...

    def scan_ids(
        self, index: str, page: int, keep_alive: float = 120.0
    ) -> Generator[list[str], None, None]:
        """Every document id of the index, `page` at a time, from one point-in-time view
        taken after a refresh and kept `keep_alive` seconds between pages; closing the
        generator releases the view. A missing index has none."""
        ...


class Source(Protocol):
    """The source server, as the engine sees it."""

    def inspect(self) -> tuple[ServerInfo, Position]:
        """Refuse a server that lacks a prerequisite (`PrerequisiteError`); else its identity
        and current position."""
        ...

    def check_position(self, info: ServerInfo, position: Position) -> None:
        """Raise `PositionError` unless streaming can resume from `position`."""
        ...

    def stream(self, start: Position, info: ServerInfo) -> Stream:
        """A stream of the committed changes after `start`."""
        ...

    def rows(self) -> VerifyRows:
        """A reader of current rows (one connection; the caller closes it)."""
        ...


class Writer(Protocol):
    """Where document operations go."""

    def write(
        self,
        items: Sequence[BulkItem],
        stop: threading.Event | None = None,
        on_retry: Callable[[BaseException], None] | None = None,
    ) -> list[tuple[BulkItem, ItemResult]]:
        """Write every item until each is acknowledged or rejected, retrying transient failures
        (each reported to `on_retry`) until `stop` is set (`Interrupted`). Returns the
        rejected items."""
        ...


class Sink(Writer, Documents, Protocol):
    """The search cluster, as the engine sees it."""

    on_request: Callable[[float], None] | None
    """Called with the duration of every `_bulk` request (metrics)."""
    on_items: Callable[[str, int], None] | None
    """Called with (outcome, count) after every `_bulk` response (metrics)."""

    def ensure_indices(
        self, mappings: Sequence[TableMapping], fields: Mapping[str, dict[str, Any]] | None = None
    ) -> list[str]:
        """Create the missing target indices (idempotent), with the field mappings derived
        from the column types (`fields`, by index) under the configured ones."""
        ...

    def alias_target(self, alias: str) -> str | None:
        """The index an alias points at; None when `alias` is a concrete index (or missing)."""
        ...

    def swap_alias(self, alias: str, old: str, new: str) -> None:
        """Move `alias` from index `old` to index `new` in one atomic step."""
        ...
