"""Fakes of the engine's collaborators: a scripted feed, a sink that keeps documents the way
Elasticsearch does (external versions), a recorder, a clock, and a source that plays a binlog."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Generator, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from cdc.config import ConnectorConfig, TableMapping
from cdc.errors import SourceUnavailable
from cdc.model.checkpoint import Checkpoint
from cdc.model.events import (
    Begin,
    Column,
    Commit,
    Event,
    ForeignKey,
    Heartbeat,
    Kind,
    RowChange,
    TableSchema,
)
from cdc.model.position import Position, ServerInfo
from cdc.sink.bulk import BulkItem, ItemResult
from cdc.source.handoff import Failed

T = TypeVar("T")

ITEMS = TableSchema(
    "shop",
    "items",
    (Column("id", Kind.INT, is_primary=True), Column("name", Kind.STRING)),
    ("id",),
)
INFO = ServerInfo("mariadb", "10.11.0-MariaDB", 1, None, True)


def config(**sections: Any) -> ConnectorConfig:
    """A valid config whose one mapping sends `shop.items` to the index `items`."""
    data: dict[str, Any] = {
        "name": "unit",
        "source": {"user": "cdc", "server_id": 7},
        "sink": {"urls": ["http://es.invalid:9200"]},
        "checkpoint": {"file": {"path": "unused"}},
        "tables": [{"table": "shop.items", "index": "items"}],
        "snapshot": {"mode": "never"},
    }
    for name, values in sections.items():
        data[name] = {**data.get(name, {}), **values}
    return ConnectorConfig.model_validate(data)


def position(seq: int) -> Position:
    """The MariaDB position after transaction `seq` of the played binlog."""
    return Position("mariadb", f"0-1-{seq}", "bin.000001", 1000 + 100 * seq)


def insert(row_id: int, name: str = "x") -> RowChange:
    return RowChange(ITEMS, "insert", None, {"id": row_id, "name": name})


def update(row_id: int, name: str) -> RowChange:
    return RowChange(ITEMS, "update", {"id": row_id, "name": "?"}, {"id": row_id, "name": name})


def transaction(seq: int, *changes: RowChange) -> list[Event]:
    return [Begin(f"0-1-{seq}"), *changes, Commit(position(seq), timestamp=1_700_000_000 + seq)]


class Clock:
    """A monotonic clock that moves only when told to."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class ScriptedFeed:
    """Hands out scripted batches of events, one per `get`, each at its own clock time; then
    nothing (idle), forever. A `Failed` in the script is handed out as the source's failure."""

    def __init__(self, clock: Clock, *batches: tuple[float, list[Event] | Failed]) -> None:
        self.clock = clock
        self.batches = list(batches)

    def get(self, timeout: float) -> list[Event] | Failed | None:
        if not self.batches:
            self.clock.now += timeout
            return None
        at, batch = self.batches.pop(0)
        self.clock.now = max(self.clock.now, at)
        return batch

    def empty(self) -> bool:
        return not self.batches

    def wake(self) -> None:
        return None


@dataclass
class Request:
    """One `write` call of the fake sink."""

    items: list[BulkItem]
    at: float


class FakeSink:
    """Keeps documents as Elasticsearch does with external versions (a stale write is ignored)
    and rejects the documents whose id is in `reject`."""

    def __init__(self, clock: Callable[[], float] = lambda: 0.0) -> None:
        self.clock = clock
        self.requests: list[Request] = []
        self.docs: dict[tuple[str, str], tuple[int, dict[str, Any] | None]] = {}
        self.reject: set[str] = set()
        self.on_request: Callable[[float], None] | None = None
        self.on_items: Callable[[str, int], None] | None = None
        self.log: list[str] | None = None
        """When set, each request appends a line here (to order it against other events)."""

    def write(
        self,
        items: Sequence[BulkItem],
        stop: threading.Event | None = None,
        on_retry: Callable[[BaseException], None] | None = None,
    ) -> list[tuple[BulkItem, ItemResult]]:
        self.requests.append(Request(list(items), self.clock()))
        if self.log is not None:
            self.log.append(f"write {[i.action.doc_id for i in items]}")
        rejected = []
        for item in items:
            action = item.action
            if action.doc_id in self.reject:
                rejected.append((item, ItemResult("rejected", 400, "mapper_parsing_exception")))
                continue
            key = (action.index, action.doc_id)
            held = self.docs.get(key)
            if held is None or held[0] < item.version:
                self.docs[key] = (item.version, action.document())
        return rejected

    def sent(self) -> list[BulkItem]:
        return [item for request in self.requests for item in request.items]

    def live(self, index: str = "items") -> dict[str, dict[str, Any]]:
        """The documents of `index` that exist (deletes leave tombstones)."""
        return {i: src for (idx, i), (_, src) in self.docs.items() if idx == index and src}

    def mget(
        self, index: str, ids: Sequence[str], routing: Mapping[str, str] | None = None
    ) -> dict[str, dict[str, Any]]:
        live = self.live(index)
        return {i: live[i] for i in ids if i in live}

    def scan_ids(
        self, index: str, page: int, keep_alive: float = 120.0
    ) -> Generator[list[str], None, None]:
        ids = sorted(self.live(index))
        for start in range(0, len(ids), page):
            yield ids[start : start + page]

    def ensure_indices(
        self, mappings: Sequence[TableMapping], fields: Mapping[str, dict[str, Any]] | None = None
    ) -> list[str]:
        return []

    def alias_target(self, alias: str) -> str | None:
        return None

    def swap_alias(self, alias: str, old: str, new: str) -> None:
        raise AssertionError("no rebuild in these tests")


class FakeRecorder:
    """Remembers the checkpoints offered to it."""

    def __init__(self) -> None:
        self.offered: list[Checkpoint] = []
        self.failure: BaseException | None = None
        self.log: list[str] | None = None

    def offer(self, checkpoint: Checkpoint) -> None:
        self.offered.append(checkpoint)
        if self.log is not None:
            self.log.append(f"offer {checkpoint.position.gtid}")


@dataclass
class PlayedBinlog:
    """A binlog as a list of transactions; a stream plays it from any position, and the first
    `cuts` streams break right after the event at index `cut_after` of what they play."""

    transactions: list[list[Event]]
    cut_after: int | None = None
    cuts: int = 0
    streams: list[Position] = field(default_factory=list)

    def events_after(self, start: Position) -> list[Event]:
        done = int(start.gtid.rsplit("-", 1)[1])
        return [e for t in self.transactions[done:] for e in t]


class PlayedStream:
    def __init__(self, events: list[Event], cut_after: int | None) -> None:
        self._events = events
        self._cut_after = cut_after
        self._stopped = threading.Event()

    def events(self) -> Iterator[Event]:
        for i, event in enumerate(self._events):
            yield event
            if self._cut_after is not None and i == self._cut_after:
                raise SourceUnavailable("the binlog stream connection was lost")
        last = self._events[-1] if self._events else None
        if isinstance(last, Commit) and last.position.file and last.position.offset:
            yield Heartbeat(last.position.file, last.position.offset)
        self._stopped.wait(30)
        raise SourceUnavailable("the stream was interrupted")

    def interrupt(self) -> None:
        self._stopped.set()


class NoRows:
    """A row reader for a connector that snapshots nothing: it only describes the tables."""

    def list_tables(self) -> list[str]:
        return ["shop.items"]

    def table_schema(self, schema: str, table: str) -> TableSchema:
        assert (schema, table) == ("shop", "items")
        return ITEMS

    def unique_key(self, schema: str, table: str) -> tuple[str, ...] | None:
        raise AssertionError("nothing is snapshotted")

    def estimate_rows(self, schema: str, table: str) -> int:
        raise AssertionError("nothing is snapshotted")

    def consistent_chunk(
        self,
        schema: str,
        table: str,
        key_columns: Sequence[str],
        after: tuple[Any, ...] | None,
        limit: int,
        condition: tuple[str, Sequence[Any]] | None = None,
    ) -> tuple[TableSchema, list[dict[str, Any]], tuple[str, int]]:
        raise AssertionError("nothing is snapshotted")

    def fetch_by_keys(
        self,
        schema: str,
        table: str,
        id_columns: Sequence[str],
        keys: Sequence[tuple[str, ...]],
    ) -> dict[tuple[str, ...], dict[str, Any] | None]:
        raise AssertionError("nothing is read by key")

    def fetch_key_columns(
        self,
        schema: str,
        table: str,
        id_columns: Sequence[str],
        keys: Sequence[tuple[str, ...]],
    ) -> list[dict[str, Any]]:
        raise AssertionError("nothing is read by key")

    def valid_key(
        self, schema: str, table: str, id_columns: Sequence[str], key: tuple[str, ...]
    ) -> bool:
        raise AssertionError("nothing is read by key")

    def snapshot(self) -> contextlib.AbstractContextManager[tuple[str, int]]:
        raise AssertionError("nothing is verified")

    def fetch_chunk(
        self,
        schema: str,
        table: str,
        key_columns: Sequence[str],
        after: tuple[Any, ...] | None,
        limit: int,
        condition: tuple[str, Sequence[Any]] | None = None,
    ) -> list[dict[str, Any]]:
        raise AssertionError("nothing is snapshotted")

    def indexes(self, schema: str, table: str) -> list[tuple[str, ...]]:
        return [("id",)]

    def foreign_keys(self, schema: str, table: str) -> list[ForeignKey]:
        return []

    def fetch_in(
        self,
        schema: str,
        table: str,
        columns: Sequence[str],
        values: Sequence[tuple[Any, ...]],
        order: Sequence[tuple[str, bool]] = (),
    ) -> tuple[TableSchema, list[dict[str, Any]]]:
        raise AssertionError("no documents are rebuilt")

    def consistent_read(self, read: Callable[[], T]) -> tuple[T, tuple[str, int]]:
        raise AssertionError("no documents are rebuilt")

    def forget(self) -> None:
        return None

    def position(self) -> Position:
        raise AssertionError("nothing is verified")

    def close(self) -> None:
        return None


class FakeSource:
    """A source server whose binlog is `binlog` and whose position now is its last commit."""

    def __init__(self, binlog: PlayedBinlog) -> None:
        self.binlog = binlog

    def inspect(self) -> tuple[ServerInfo, Position]:
        return INFO, position(len(self.binlog.transactions))

    def check_position(self, info: ServerInfo, start: Position) -> None:
        return None

    def stream(self, start: Position, info: ServerInfo) -> PlayedStream:
        self.binlog.streams.append(start)
        cut = self.binlog.cut_after if len(self.binlog.streams) <= self.binlog.cuts else None
        return PlayedStream(self.binlog.events_after(start), cut)

    def rows(self) -> NoRows:
        return NoRows()
