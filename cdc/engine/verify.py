"""`cdc verify`: compare the index with the document every MySQL row should produce.

For every index, three passes, with memory bounded by the chunk size and the differences:

1. Rows: each table feeding the index is read in primary-key chunks inside consistent
   snapshots; the chunk's documents are fetched with `_mget` and compared with what the table
   mapping builds from the rows (the same `Mapper` as the stream; for a mapping with children
   the same `Tree`, its children read in the chunk's snapshot). What differs is a candidate.
2. Extras: one scroll over the index's document ids; an id no row renders is a candidate.
3. Settling: a candidate is read again, in rounds. The rows are read in a new consistent
   snapshot whose binlog position P is known (an upper bound on MySQL), the running
   connector's checkpoint is awaited past P, the documents fetched, the rows read once more.
   A document that matches is no difference (the stream had not caught up). One that does
   not, while the row stayed the same, is confirmed when the next round finds the same: a row
   that changed and changed back between two reads cannot pass for a difference. A row that
   keeps changing until `settle_timeout` (or a checkpoint that does not move) is reported as
   `changing`. So a busy database gives the same report as a quiet one. Candidates are
   settled in batches of `SETTLE_BATCH` while the passes go on.

A table that cannot be read in chunks (no primary key and no unique key on NOT NULL columns)
is reported as unverified, and the others are verified.

`repair` re-sends what differs with the version `(C, MAX_ROW_SLOT)`, C being the checkpoint's
counter read before the rows are. Every transaction up to C is in those rows, and its writes
(snapshot chunks and replays of C included, which use the lower `COPY_SLOT`, and documents
something else re-indexed or deleted with Elasticsearch's internal versioning, which adds
one) are below the repair; every later transaction is above it and wins, so a repair can
never roll back a change the stream applies meanwhile (see `cdc.engine.replay`). A document
whose version is above even that (written by something else with external versions) cannot
be repaired without that risk: it stays in the report.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal
from zoneinfo import ZoneInfo

import orjson

from cdc.config import ConnectorConfig, TableMapping
from cdc.config.mappings import index_template
from cdc.engine.ports import Documents, VerifyRows, Writer
from cdc.engine.rebuilds import fetcher
from cdc.engine.snapshotter import read_tree_chunk
from cdc.errors import Interrupted
from cdc.model.lag import reached
from cdc.model.position import Position
from cdc.model.versions import MAX_ROW_SLOT, initial_counter, version
from cdc.sink.bulk import BulkItem
from cdc.state.stores import CheckpointStore, SnapshotStore
from cdc.transform.mapping import Action, Mapper, Mappers
from cdc.transform.trees import Tree, build_problem, compile_tree

log = logging.getLogger(__name__)

Kind = Literal["missing", "different", "extra"]
Expected = dict[str, Any] | None
"""A document's expected source (JSON values), or None when no document should exist."""

KINDS = ("missing", "different", "extra", "changing")
"""The kinds of result a document can have besides equal, in report order."""

PAGE = 500
"""Documents compared per `_mget`, and ids per settling round."""
SETTLE_BATCH = 10_000
"""Candidates held before they are settled (a bound on memory under heavy writes)."""
SCAN_PAGE = 2000
"""Document ids per page of the scroll for extra documents."""
POLL_SECONDS = 0.2
MAX_SPLITS = 64
"""Ways a composite document id is tried as key parts (a separator may occur inside a part,
as `:` does in times); an id with more is not looked up."""


@dataclass
class IndexReport:
    """What one index holds against its tables."""

    checked: int = 0
    """Rows compared."""
    missing: list[str] = field(default_factory=list)
    """Ids of documents a row should produce that the index lacks."""
    different: list[dict[str, Any]] = field(default_factory=list)
    """`{"id": ..., "fields": [...]}` of documents whose fields differ from the row's."""
    extra: list[str] = field(default_factory=list)
    """Ids of documents no row should produce."""
    changing: list[str] = field(default_factory=list)
    """Ids whose rows kept changing (or whose changes the connector did not apply in time),
    so they could not be compared."""
    unverified: list[dict[str, str]] = field(default_factory=list)
    """`{"table": ..., "reason": ...}` of tables feeding the index that could not be read."""
    repaired: list[str] | None = None
    """Ids `repair` re-sent or deleted (None when it did not run)."""
    reported: set[str] = field(default_factory=set, repr=False)
    """Ids already in one of the lists (a document is reported once)."""

    @property
    def differences(self) -> int:
        return len(self.missing) + len(self.different) + len(self.extra)

    @property
    def equal(self) -> bool:
        """Nothing differs, and everything could be compared."""
        return not (self.differences or self.changing or self.unverified)

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "checked": self.checked,
            "missing": sorted(self.missing),
            "different": sorted(self.different, key=lambda d: str(d["id"])),
            "extra": sorted(self.extra),
            "changing": sorted(self.changing),
            "unverified": sorted(self.unverified, key=lambda u: u["table"]),
        }
        if self.repaired is not None:
            data["repaired"] = sorted(self.repaired)
        return data


@dataclass
class Report:
    """The result of one verification."""

    indices: dict[str, IndexReport] = field(default_factory=dict)

    @property
    def equal(self) -> bool:
        """Every index equals its tables, and everything could be compared."""
        return all(r.equal for r in self.indices.values())

    def to_dict(self) -> dict[str, Any]:
        return {"indices": {name: r.to_dict() for name, r in sorted(self.indices.items())}}


Progress = Callable[[str, int, int], None]
"""Called with (table, rows checked, rows estimated) as the rows pass goes."""


@dataclass
class _Candidate:
    """A document that differs, until settling says otherwise."""

    key: tuple[str, ...] | None = None
    """The row's key, when the candidate came from a row (the rows pass)."""
    table: str | None = None
    strike: tuple[Kind, list[str], Expected] | None = None
    """What the last settling round found, when it found the row unchanged and the document
    different: confirmed if the next round finds the same."""


@dataclass(frozen=True, slots=True)
class _Row:
    """The document a row of `table` says one id should hold."""

    table: str
    action: Action
    """An index of the document, or its delete (a soft-deleted row)."""
    want: Expected


class Verifier:
    """Verifies the indices of one connector config (see the module docstring)."""

    def __init__(
        self,
        cfg: ConnectorConfig,
        rows: VerifyRows,
        docs: Documents,
        checkpoints: CheckpointStore,
        *,
        mappers: Mappers | None = None,
        stop: threading.Event | None = None,
        max_rows_per_second: int = 0,
        catch_up_timeout: float = 10.0,
        settle_timeout: float = 60.0,
        on_progress: Progress | None = None,
    ) -> None:
        self._cfg = cfg
        self._rows = rows
        self._docs = docs
        self._checkpoints = checkpoints
        self._mappers = mappers or Mappers(cfg.mapping_for, ZoneInfo(cfg.source.time_zone))
        self._stop = stop or threading.Event()
        self._rate = max_rows_per_second
        self._catch_up_timeout = catch_up_timeout
        self._settle_timeout = settle_timeout
        self._on_progress = on_progress
        self._stalled = False
        self._trees: dict[str, Tree] = {}

    # -- the passes -------------------------------------------------------------------------

    def run(self, tables: Iterable[str] | None = None) -> Report:
        """Verify every index fed by `tables` (default: every mapped table that exists)."""
        wanted = set(tables) if tables is not None else None
        by_index: dict[str, list[str]] = {}
        for table in self._rows.list_tables():
            mapping = self._mapping(table)
            if mapping is not None and (wanted is None or table in wanted):
                by_index.setdefault(mapping.index, []).append(table)
        report = Report()
        for index, members in sorted(by_index.items()):
            result = report.indices[index] = IndexReport()
            feeding = []
            for table in self._feeding(index):
                reason = None
                if index_template(index) is not None:
                    reason = "its index is one per period, which verify does not compare yet"
                elif self._rows.unique_key(*_names(table)) is None:
                    reason = "no primary key and no unique key on NOT NULL columns"
                if reason is not None:
                    log.warning("%s cannot be verified: %s", table, reason)
                    result.unverified.append({"table": table, "reason": reason})
                else:
                    feeding.append(table)
            candidates: dict[str, _Candidate] = {}
            for table in members:
                if table in feeding:
                    self._rows_pass(index, table, feeding, result, candidates)
            if feeding:
                self._extras_pass(index, feeding, result, candidates)
                self._settle(index, feeding, result, candidates)
        return report

    def _mapping(self, table: str) -> TableMapping | None:
        return self._cfg.mapping_for(*_names(table))

    def _feeding(self, index: str) -> list[str]:
        """Every existing table whose mapping writes to `index`."""
        return [
            t
            for t in self._rows.list_tables()
            if (m := self._mapping(t)) is not None and m.index == index
        ]

    def _tree(self, table: str) -> Tree | None:
        """The compiled tree of a table whose mapping has children (compiled on first use)."""
        mapping = self._mapping(table)
        if mapping is None or not mapping.children:
            return None
        tree = self._trees.get(table)
        if tree is None:
            found, problems = compile_tree(
                mapping, self._rows, ZoneInfo(self._cfg.source.time_zone)
            )
            if found is None:
                raise build_problem(mapping, problems[0])
            tree = self._trees[table] = found
        return tree

    def _mapper(self, table: str) -> Mapper:
        mapping = self._mapping(table)
        assert mapping is not None
        return self._mappers.with_mapping(mapping, self._rows.table_schema(*_names(table)))

    def _rows_pass(
        self,
        index: str,
        table: str,
        feeding: list[str],
        result: IndexReport,
        candidates: dict[str, _Candidate],
    ) -> None:
        schema_name, table_name = _names(table)
        key = self._rows.unique_key(schema_name, table_name)
        assert key is not None
        total = self._rows.estimate_rows(schema_name, table_name)
        size = self._cfg.snapshot.chunk_size
        after: tuple[Any, ...] | None = None
        done = 0
        while True:
            self._check_stop()
            began = time.monotonic()
            tree = self._tree(table)
            if tree is None:
                described, rows, _ = self._rows.consistent_chunk(
                    schema_name, table_name, key, after, size
                )
                mapping = self._mapping(table)
                assert mapping is not None
                documents: Iterable[list[Action]] = map(
                    self._mappers.with_mapping(mapping, described).map_row, rows
                )
            else:
                (_, rows, documents), _ = read_tree_chunk(self._rows, tree, key, after, size)
            expected: dict[str, tuple[Expected, tuple[str, ...]]] = {}
            routes: dict[str, str] = {}
            for actions in documents:
                for action in actions:
                    expected[action.doc_id] = (_expected(action), action.key)
                    if action.routing is not None:
                        routes[action.doc_id] = action.routing
            for doc_id in self._differing(index, list(expected), expected, routes):
                _, row_key = expected[doc_id]
                candidates[doc_id] = _Candidate(row_key, table)
            if len(candidates) >= SETTLE_BATCH:
                # Rows changing faster than the stream: settle these now, to bound memory.
                self._settle(index, feeding, result, candidates)
                candidates.clear()
            done += len(rows)
            result.checked += len(rows)
            if self._on_progress is not None:
                self._on_progress(table, done, max(total, done))
            if len(rows) < size:
                return
            after = tuple(rows[-1][c] for c in key)
            self._throttle(len(rows), began)

    def _differing(
        self,
        index: str,
        ids: list[str],
        expected: dict[str, tuple[Expected, tuple[str, ...]]],
        routes: dict[str, str],
    ) -> list[str]:
        """The ids among `ids` whose document differs from the expected one (each looked for
        on the shard its routing value names)."""
        differ = []
        for page in _pages(ids):
            actual = self._docs.mget(index, page, routes)
            differ += [i for i in page if _compare(expected[i][0], actual.get(i)) is not None]
        return differ

    def _extras_pass(
        self,
        index: str,
        feeding: list[str],
        result: IndexReport,
        candidates: dict[str, _Candidate],
    ) -> None:
        """Every document id no row renders becomes a candidate. Only the key columns are
        read: a row whose document should not exist (soft-deleted) was already found by the
        rows pass."""
        mappers = [(t, self._mapper(t)) for t in feeding]
        keep_alive = 2 * (self._settle_timeout + self._catch_up_timeout) + 120
        scan = self._docs.scan_ids(index, SCAN_PAGE, keep_alive)
        with contextlib.closing(scan):
            for ids in scan:
                self._check_stop()
                began = time.monotonic()
                unknown = {i for i in ids if i not in candidates and i not in result.reported}
                for table, mapper in mappers:
                    if not unknown:
                        break
                    keys = [k for i in unknown for k in self._keys_of(i, table, mapper)]
                    if keys:
                        found = self._rows.fetch_key_columns(
                            *_names(table), mapper.id_columns, keys
                        )
                        # The id the row's document has, as the mapping renders it: an id that
                        # only compares equal (`007` for 7, `ABC` for `abc`) is extra.
                        unknown.difference_update(mapper.doc_id(row) for row in found)
                for doc_id in unknown:
                    candidates[doc_id] = _Candidate()
                if len(candidates) >= SETTLE_BATCH:
                    self._settle(index, feeding, result, candidates)
                    candidates.clear()
                self._throttle(len(ids), began)

    def _settle(
        self,
        index: str,
        feeding: list[str],
        result: IndexReport,
        candidates: dict[str, _Candidate],
    ) -> None:
        """Confirm or dismiss every candidate (see the module docstring); what neither
        happens to before `settle_timeout` is changing."""
        pending = {i: c for i, c in candidates.items() if i not in result.reported}
        deadline = time.monotonic() + self._settle_timeout
        rounds = 0
        while pending and (rounds < 2 or time.monotonic() < deadline):
            unsure = rounds > 0 and any(c.strike is None for c in pending.values())
            if unsure:
                self._stop.wait(1.0)
            rounds += 1
            for ids in _pages(list(pending)):
                self._check_stop()
                with self._rows.snapshot() as (file, offset):
                    before = self._expected_now(feeding, ids, pending)
                if not self._await(file, offset):
                    for doc_id in ids:
                        pending[doc_id].strike = None
                    continue
                routes = {
                    doc_id: row.action.routing
                    for doc_id, row in before.items()
                    if row.action.routing is not None
                }
                actual = self._docs.mget(index, ids, routes)
                now = self._expected_now(feeding, ids, pending)
                for doc_id in ids:
                    row = before.get(doc_id)
                    want = row.want if row else None
                    kind = _compare(want, actual.get(doc_id))
                    candidate = pending[doc_id]
                    current = now.get(doc_id)
                    if kind is None:
                        del pending[doc_id]
                    elif want != (current.want if current else None):
                        candidate.strike = None  # the row changed meanwhile
                    elif candidate.strike == (*kind, want):
                        del pending[doc_id]
                        _record(result, doc_id, kind)
                    else:
                        candidate.strike = (*kind, want)
        for doc_id in pending:
            if doc_id not in result.reported:
                result.reported.add(doc_id)
                result.changing.append(doc_id)

    # -- reading rows -----------------------------------------------------------------------

    def _keys_of(
        self, doc_id: str, table: str, mapper: Mapper, known: dict[str, _Candidate] | None = None
    ) -> list[tuple[str, ...]]:
        """The keys of `table` a row rendering `doc_id` could have."""
        candidate = known.get(doc_id) if known else None
        if candidate is not None and candidate.key is not None and candidate.table == table:
            return [candidate.key]
        return [
            key
            for key in _splits(doc_id, mapper)
            if self._rows.valid_key(*_names(table), mapper.id_columns, key)
        ]

    def _expected_now(
        self, feeding: list[str], ids: Sequence[str], known: dict[str, _Candidate] | None = None
    ) -> dict[str, _Row]:
        """For each id some row of a feeding table renders, that row's document (or its
        delete, for a soft-deleted row); ids no row renders are left out."""
        found: dict[str, _Row] = {}
        for table in feeding:
            mapper = self._mapper(table)
            keys: dict[tuple[str, ...], str] = {}
            for doc_id in ids:
                if doc_id not in found:
                    keys.update(
                        (key, doc_id) for key in self._keys_of(doc_id, table, mapper, known)
                    )
            if not keys:
                continue
            rows = self._rows.fetch_by_keys(*_names(table), mapper.id_columns, list(keys))
            present = [(key, row) for key, row in rows.items() if row is not None]
            tree = self._tree(table)
            if tree is None:
                documents: Iterable[list[Action]] = (mapper.map_row(row) for _, row in present)
            else:
                schema = self._rows.table_schema(*_names(table))
                documents = tree.documents(schema, [row for _, row in present], fetcher(self._rows))
            for (key, _), actions in zip(present, documents, strict=True):
                doc_id = keys[key]
                if doc_id in found:
                    continue
                for action in actions:
                    if action.doc_id == doc_id:
                        found[doc_id] = _Row(table, action, _expected(action))
        return found

    def _await(self, file: str, offset: int) -> bool:
        """Whether the running connector's checkpoint has passed the binlog position
        `file:offset`, waiting up to `catch_up_timeout` for it (True without a checkpoint:
        nothing is streaming). The checkpoint has also passed it when it has reached the
        server's current position (an idle server whose binlog rotated since its last
        transaction reports a snapshot position in the new file).

        Once a wait has timed out, later calls look without waiting, so a connector that is
        stopped costs one timeout, not one per chunk."""
        deadline = time.monotonic() + (0.0 if self._stalled else self._catch_up_timeout)
        while True:
            checkpoint = self._checkpoints.load()
            if checkpoint is None:
                return True
            at = checkpoint.position
            if reached(at, Position(at.flavor, "", file, offset)) or reached(
                at, self._rows.position()
            ):
                self._stalled = False
                return True
            if time.monotonic() >= deadline:
                if not self._stalled:
                    log.warning(
                        "the connector's checkpoint (%s) has not reached %s:%d within %.0f s: "
                        "differences on rows changed since cannot be confirmed yet",
                        at.describe(),
                        file,
                        offset,
                        self._catch_up_timeout,
                    )
                self._stalled = True
                return False
            self._stop.wait(POLL_SECONDS)
            self._check_stop()

    def _throttle(self, rows: int, began: float) -> None:
        """Wait so that `rows` read since `began` keep to `max_rows_per_second`."""
        if self._rate:
            self._stop.wait(max(0.0, rows / self._rate - (time.monotonic() - began)))
            self._check_stop()

    def _check_stop(self) -> None:
        if self._stop.is_set():
            raise Interrupted("verification stopped")

    # -- repairing --------------------------------------------------------------------------

    def repair(self, report: Report, sink: Writer) -> Report:
        """Re-send every missing and different document and delete every extra one, with
        versions that cannot roll back the stream; then verify those documents again. Returns
        the report of what still differs (with `repaired` filled in)."""
        checkpoint = self._checkpoints.load()
        counter = checkpoint.counter if checkpoint is not None else initial_counter()
        repair_version = version(counter, MAX_ROW_SLOT)
        after = Report()
        for index, found in report.indices.items():
            ids = found.missing + [d["id"] for d in found.different] + found.extra
            fixed = after.indices[index] = IndexReport(checked=found.checked, repaired=[])
            fixed.changing = list(found.changing)
            fixed.unverified = list(found.unverified)
            fixed.reported = set(found.changing)
            if not ids:
                continue
            feeding = [t for t in self._feeding(index) if self._rows.unique_key(*_names(t))]
            items = []
            for page in _pages(ids):
                rows = self._expected_now(feeding, page)
                for doc_id in page:
                    row = rows.get(doc_id)
                    if row is not None:
                        items.append(BulkItem(row.action, repair_version, row.table))
                    else:
                        action = Action("delete", index, doc_id, None)
                        items.append(BulkItem(action, repair_version, ""))
            rejected = sink.write(items, stop=self._stop)
            refused = {item.action.doc_id for item, _ in rejected}
            fixed.repaired = [i.action.doc_id for i in items if i.action.doc_id not in refused]
            for item, outcome in rejected:
                log.warning(
                    "repair of %s/%s rejected: %s", index, item.action.doc_id, outcome.error
                )
            self._settle(index, feeding, fixed, {i: _Candidate() for i in ids})
            unrepaired = fixed.differences - len(refused)
            if unrepaired > 0:
                log.warning(
                    "the repair could not fix %s of %s: versions above %d, the highest a "
                    "repair can use without risking a change the stream applies (something "
                    "else writes to the index with external versions)",
                    f"{unrepaired} document" + ("s" if unrepaired != 1 else ""),
                    index,
                    repair_version,
                )
        return after


def snapshotting(snapshots: SnapshotStore, tables: Iterable[str] | None) -> list[str]:
    """The tables among `tables` (default: all) whose snapshot is requested or under way:
    their documents are still being copied, so they cannot be verified yet."""
    wanted = set(tables) if tables is not None else None
    return sorted(
        table
        for table, progress in snapshots.load_all().items()
        if progress.active and (wanted is None or table in wanted)
    )


def _expected(action: Action) -> Expected:
    """The source an action leaves in the index, as JSON reads it back (decimals as numbers,
    fragments resolved): what a document read from the index is compared with."""
    if action.op == "delete":
        return None
    if action.body is not None:
        encoded: dict[str, Any] = orjson.loads(action.body)
        return encoded
    if action.source is None:
        return None
    loaded: dict[str, Any] = orjson.loads(orjson.dumps(action.source))
    return loaded


def _compare(want: Expected, have: dict[str, Any] | None) -> tuple[Kind, list[str]] | None:
    """How a document differs from the expected one; None when it does not."""
    if want is None:
        return None if have is None else ("extra", [])
    if have is None:
        return ("missing", [])
    keys = want.keys() | have.keys()
    fields = sorted(k for k in keys if want.get(k, _ABSENT) != have.get(k, _ABSENT))
    return ("different", fields) if fields else None


_ABSENT = object()


def _record(result: IndexReport, doc_id: str, kind: tuple[Kind, list[str]]) -> None:
    if doc_id in result.reported:
        return
    result.reported.add(doc_id)
    if kind[0] == "missing":
        result.missing.append(doc_id)
    elif kind[0] == "extra":
        result.extra.append(doc_id)
    else:
        result.different.append({"id": doc_id, "fields": kind[1]})


def _splits(doc_id: str, mapper: Mapper) -> list[tuple[str, ...]]:
    """The ways `doc_id` can be the key parts of `mapper`'s mapping joined by its separator
    (a part may hold the separator itself, as a time holds `:`); at most `MAX_SPLITS`."""
    count = len(mapper.id_columns)
    if count == 1:
        return [(doc_id,)]
    sep = mapper.mapping.id_separator
    at = [i for i in range(len(doc_id)) if doc_id.startswith(sep, i)]
    splits: list[tuple[str, ...]] = []
    for cuts in itertools.combinations(at, count - 1):
        starts = [0, *(cut + len(sep) for cut in cuts)]
        ends = [*cuts, len(doc_id)]
        if any(start > end for start, end in zip(starts, ends, strict=True)):
            continue  # two separators overlap
        splits.append(tuple(doc_id[a:b] for a, b in zip(starts, ends, strict=True)))
        if len(splits) == MAX_SPLITS:
            break
    return splits


def _names(table: str) -> tuple[str, str]:
    schema, name = table.split(".", 1)
    return schema, name


def _pages(ids: list[str]) -> Iterable[list[str]]:
    for start in range(0, len(ids), PAGE):
        yield ids[start : start + PAGE]
