"""Rebuilding denormalized documents as their rows change (the stream's side of trees).

A row change of any table of a tree (`cdc.transform.trees`) does not map to one document:
it names the documents it affects, and those are rebuilt whole from MySQL's current rows. The
main loop hands every such change to `Rebuilds.touch` with the version of its slot; the
affected documents are collected per transaction, become due at its commit, and are resolved
and read at the next bulk flush: each table of a tree is read once per flush (`IN` queries,
every read of a flush inside one consistent snapshot), each document once, with the greatest
version among the changes that named it.

Why this can never leave a document older than MySQL once the stream has caught up (see
"Denormalized documents" in docs/design.md): a flush's reads happen in a snapshot that holds
every transaction whose changes it rebuilds (`_read` waits until the snapshot's binlog
position is at or after the newest of their commits), so a rebuilt document is at least as new
as its version says. The last transaction that touches a document names it and rebuilds it
from rows that already hold that transaction, with a version above every earlier write;
later writes of the document come only from later transactions, which rebuild it again.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol, TypeVar

from cdc.errors import SchemaChanged, SourceUnavailable
from cdc.model.events import RowChange, TableSchema
from cdc.sink.bulk import BulkItem
from cdc.transform.mapping import Action
from cdc.transform.trees import Lookup, Row, Tree, Values

log = logging.getLogger(__name__)

_T = TypeVar("_T")

VISIBLE_WAIT_SECONDS = 30.0
"""How long a flush waits for the source's snapshots to hold the transactions it rebuilds (a
commit reaches the binlog a moment before other sessions see it)."""

Tag = tuple[int, str]
"""(version, GTID) of the change that named a document; the greatest wins."""


class InRows(Protocol):
    """Rows by the values of some columns (`cdc.source.rows.RowReader.fetch_in`)."""

    def fetch_in(
        self,
        schema: str,
        table: str,
        columns: Sequence[str],
        values: Sequence[Values],
        order: Sequence[tuple[str, bool]] = (),
    ) -> tuple[TableSchema, list[Row]]:
        """The rows whose `columns` equal one of `values`, ordered by `order`."""
        ...


class TreeRows(InRows, Protocol):
    """What rebuilding reads from the source (`cdc.source.rows.RowReader`)."""

    def consistent_read(self, read: Callable[[], _T]) -> tuple[_T, tuple[str, int]]:
        """`read()` in one consistent snapshot, and a binlog position every transaction the
        snapshot holds is at or before (a lower bound: exact on MariaDB)."""
        ...

    def forget(self) -> None:
        """Drop cached table descriptions."""
        ...

    def close(self) -> None: ...


def fetcher(rows: InRows) -> Callable[..., tuple[TableSchema, list[Row]]]:
    """`Fetch` for `cdc.transform.trees` over a reader."""

    def fetch(
        table: str, columns: Sequence[str], values: Iterable[Values], order: Sequence[Any]
    ) -> tuple[TableSchema, list[Row]]:
        schema, name = table.split(".", 1)
        return rows.fetch_in(schema, name, columns, list(values), order)

    return fetch


class Rebuilds:
    """Documents of trees named by the stream and not rebuilt yet; see the module docstring."""

    def __init__(
        self,
        trees: Sequence[Tree],
        rows: Callable[[], TreeRows],
        stop: threading.Event,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._trees = list(trees)
        self._number = {id(tree): number for number, tree in enumerate(self._trees)}
        self._rows = rows
        self._reader: TreeRows | None = None
        self._stop = stop
        self._clock = clock
        self._by_table: dict[str, list[Tree]] = {}
        for tree in self._trees:
            for table in tree.tables:
                self._by_table.setdefault(table, []).append(tree)
        self._seen: dict[int, tuple[TableSchema, list[Tree]]] = {}
        self._open: list[tuple[Tree, Lookup, Values, Tag]] = []
        self._due: dict[int, dict[Lookup, dict[Values, Tag]]] = {}
        """Per tree (by position in `_trees`), the lookups of committed transactions."""
        self._required: tuple[str, int] | None = None
        """The newest commit among them, which the snapshot rebuilding them must hold."""
        self.pending = 0
        """Lookups due (committed and not rebuilt)."""
        self.rebuilt = 0
        """Documents rebuilt so far."""

    def trees_of(self, table: TableSchema) -> list[Tree]:
        """The trees a streamed table belongs to (empty for most tables). A new description
        of one of their tables (a DDL) makes the reader describe tables afresh."""
        seen = self._seen.get(id(table))
        if seen is not None and seen[0] is table:
            return seen[1]
        trees = self._by_table.get(table.name, [])
        if trees and self._reader is not None:
            self._reader.forget()
        if len(self._seen) > 10_000:
            self._seen.clear()
        self._seen[id(table)] = (table, trees)
        return trees

    def moves(self, trees: list[Tree], change: RowChange) -> list[tuple[Tree, Action]]:
        """The deletes a root change makes where its document was (`Tree.moves`)."""
        return [(tree, action) for tree in trees for action in tree.moves(change)]

    def touch(self, trees: list[Tree], change: RowChange, version: int, gtid: str | None) -> int:
        """Note the documents a change of the open transaction affects; returns how many
        lookups it gave (0: it touched no column any document uses)."""
        tag = (version, gtid or "")
        count = 0
        for tree in trees:
            for lookup, values in tree.lookups(change):
                self._open.append((tree, lookup, values, tag))
                count += 1
        return count

    def commit(self, file: str | None, offset: int | None) -> None:
        """The open transaction committed at `file:offset`: its documents are due."""
        if not self._open:
            return
        for tree, lookup, values, tag in self._open:
            wanted = self._due.setdefault(self._number[id(tree)], {}).setdefault(lookup, {})
            old = wanted.get(values)
            if old is None or tag > old:
                wanted[values] = tag
            self.pending += 1
        self._open = []
        if file and offset is not None:
            point = (file, offset)
            if self._required is None or point > self._required:
                self._required = point

    def drop_open(self) -> None:
        """Forget the open transaction's changes: it is read again whole."""
        self._open = []

    def build(self) -> list[BulkItem]:
        """The operations rebuilding every due document from the rows MySQL has now; the due
        set is cleared only once they are built (a failed read is retried as a whole).
        Raises SourceUnavailable when the source is unreachable, or its snapshots do not
        hold the due transactions within `VISIBLE_WAIT_SECONDS`."""
        if not self._due:
            return []
        if self._reader is None:
            self._reader = self._rows()
        reader = self._reader
        required = self._required
        deadline = self._clock() + VISIBLE_WAIT_SECONDS
        pause = 0.005
        changed = 0
        while True:
            try:
                items, position = reader.consistent_read(lambda: self._read(reader))
            except SchemaChanged:
                # Altered between its description and the read: describe it again.
                changed += 1
                if changed == 3:
                    raise
                reader.forget()
                continue
            if required is None or position >= required:
                break
            if self._clock() >= deadline:
                raise SourceUnavailable(
                    f"the source's snapshots are at {position[0]}:{position[1]}, still before "
                    f"the commit at {required[0]}:{required[1]} that the stream has read; "
                    "documents are rebuilt once they hold it"
                )
            self._stop.wait(pause)
            pause = min(pause * 2, 0.5)
        self._due = {}
        self._required = None
        self.pending = 0
        self.rebuilt += len(items)
        return items

    def _read(self, reader: TreeRows) -> list[BulkItem]:
        fetch = fetcher(reader)
        items: list[BulkItem] = []
        for number, due in self._due.items():
            tree = self._trees[number]
            keys = tree.resolve({lookup: dict(v) for lookup, v in due.items()}, fetch)
            if not keys:
                continue
            table = tree.mapping.table
            for values, actions in tree.build(keys, fetch):
                version, gtid = keys[values]
                for action in actions:
                    items.append(BulkItem(action, version, table, gtid or None, tree.root.key))
        return items

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None
