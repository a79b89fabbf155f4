"""Replay dead letters: re-read each rejected document's row from MySQL and send it again.

A letter names a table and a row key, not a document: by the time the operator has fixed the
index or the mapping, the row may have changed or gone, and only its current state matters. So
for each letter the row is read now (`RowReader`), mapped with the table's current mapping, and
indexed; a row that no longer exists becomes a delete of the letter's document.

Each letter ends in one of three outcomes:

- replayed: Elasticsearch acknowledged the operation (or already held a newer version); the
  letter is removed from the queue.
- rejected: Elasticsearch rejected it again; the letter stays, with the new error, at the end
  of the queue.
- failed: it could not be sent (the table is no longer mapped or no longer exists, the row
  cannot be mapped, the letter id is unknown); the letter stays as it was.

Letters about the same row are replayed together, as one document operation. The operation
carries an external version chosen so that it can never undo a change the stream applies (see
`_version`): a newer change always wins.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Literal
from zoneinfo import ZoneInfo

from cdc.config import ConnectorConfig
from cdc.config.mappings import index_template
from cdc.engine.ports import ReplayRows, Writer
from cdc.engine.rebuilds import fetcher
from cdc.errors import CdcError, MappingError
from cdc.model.letters import DeadLetter, clip_error
from cdc.model.versions import COPY_SLOT, counter_of, version
from cdc.sink.bulk import BulkItem, ItemResult
from cdc.state.stores import CheckpointStore, DeadLetterQueue
from cdc.transform.mapping import Action, Mapper
from cdc.transform.trees import Tree, compile_tree

log = logging.getLogger(__name__)

PAGE_SIZE = 500

Result = Literal["replayed", "rejected", "failed"]


@dataclass(frozen=True, slots=True)
class Outcome:
    """What happened to one letter."""

    letter_id: str
    letter: DeadLetter | None
    result: Result
    reason: str | None = None
    """The new rejection or the failure; None when replayed."""


@dataclass
class ReplayReport:
    """Counts and the letters that were not replayed, in queue order."""

    replayed: int = 0
    rejected: int = 0
    failed: int = 0
    problems: list[Outcome] = field(default_factory=list)

    def add(self, outcome: Outcome) -> None:
        if outcome.result == "replayed":
            self.replayed += 1
            return
        if outcome.result == "rejected":
            self.rejected += 1
        else:
            self.failed += 1
        self.problems.append(outcome)


@dataclass
class _Group:
    """Letters about one row, and what replaying it came to."""

    table: str
    columns: tuple[str, ...]
    key: tuple[str, ...]
    letters: list[tuple[str, DeadLetter]] = field(default_factory=list)
    action: Action | None = None
    failure: str | None = None


def replay(
    cfg: ConnectorConfig,
    dlq: DeadLetterQueue,
    store: CheckpointStore,
    rows: ReplayRows,
    sink: Writer,
    ids: Sequence[str] | None = None,
    stop: threading.Event | None = None,
    on_outcome: Callable[[Outcome], None] | None = None,
    on_retry: Callable[[BaseException], None] | None = None,
) -> ReplayReport:
    """Replay every letter, or only those in `ids`, in queue order; see the module docstring.

    `on_outcome` is called for each letter as it is decided, `on_retry` (the error) each
    time a bulk request is retried. Safe while the connector runs. Letters parked after the
    replay started are left for the next one. Raises CdcError when there is no checkpoint to
    take a version from, and lets SourceUnavailable, CheckpointUnavailable and Interrupted
    (`stop` was set while Elasticsearch was failing) through: letters already handled stay
    handled.
    """
    checkpoint = store.load()
    if checkpoint is None:
        raise CdcError(
            f"there is no checkpoint in {store.describe()}, so replayed documents cannot be "
            "given a version that orders them against the stream",
            hint="run the connector (`cdc run`) first; it records a checkpoint at start",
        )
    # Versions: see `_version`.
    floor = checkpoint.counter
    zone = ZoneInfo(cfg.source.time_zone)
    report = ReplayReport()

    def record(outcome: Outcome) -> None:
        report.add(outcome)
        if on_outcome is not None:
            on_outcome(outcome)

    mappers: dict[str, Mapper | Tree | str] = {}
    for page in _pages(dlq, ids, record):
        _replay_page(cfg, dlq, rows, sink, page, floor, zone, mappers, stop, on_retry, record)
    return report


def _pages(
    dlq: DeadLetterQueue, ids: Sequence[str] | None, record: Callable[[Outcome], None]
) -> Iterable[list[tuple[str, DeadLetter]]]:
    if ids is not None:
        wanted = list(dict.fromkeys(ids))
        for start in range(0, len(wanted), PAGE_SIZE):
            page = []
            for letter_id in wanted[start : start + PAGE_SIZE]:
                letter = dlq.get(letter_id)
                if letter is None:
                    record(Outcome(letter_id, None, "failed", "no such letter in the queue"))
                else:
                    page.append((letter_id, letter))
            if page:
                yield page
        return
    # Rejected letters move to the end of the queue, and the connector may park new ones
    # meanwhile: take at most as many as there were at the start, so the replay ends.
    budget = dlq.size()
    after: str | None = None
    while budget > 0:
        page = dlq.list(limit=min(PAGE_SIZE, budget), after=after)
        if not page:
            return
        budget -= len(page)
        after = page[-1][0]
        yield page


def _replay_page(
    cfg: ConnectorConfig,
    dlq: DeadLetterQueue,
    rows: ReplayRows,
    sink: Writer,
    page: list[tuple[str, DeadLetter]],
    floor: int,
    zone: ZoneInfo,
    mappers: dict[str, Mapper | Tree | str],
    stop: threading.Event | None,
    on_retry: Callable[[BaseException], None] | None,
    record: Callable[[Outcome], None],
) -> None:
    groups: dict[tuple[str, tuple[str, ...], tuple[str, ...]], _Group] = {}
    for letter_id, letter in page:
        columns = tuple(letter.key)
        key = tuple(letter.key.values())
        group = groups.setdefault((letter.table, columns, key), _Group(letter.table, columns, key))
        group.letters.append((letter_id, letter))

    by_table: dict[tuple[str, tuple[str, ...]], list[_Group]] = {}
    for group in groups.values():
        by_table.setdefault((group.table, group.columns), []).append(group)
    for (table, columns), members in by_table.items():
        _prepare(cfg, rows, table, columns, members, zone, mappers)

    sent = [
        (group, BulkItem(group.action, _version(floor, group), group.table, None, group.columns))
        for group in groups.values()
        if group.action is not None
    ]
    rejected: dict[int, ItemResult] = {}
    if sent:
        written = sink.write([item for _, item in sent], stop=stop, on_retry=on_retry)
        rejected = {id(item): result for item, result in written}
    rejection = {id(group): rejected.get(id(item)) for group, item in sent}
    done = [i for group, item in sent if id(item) not in rejected for i, _ in group.letters]
    if done:
        dlq.remove(done)

    for group in groups.values():
        result = rejection.get(id(group))
        for letter_id, letter in group.letters:
            if group.failure is not None:
                record(Outcome(letter_id, letter, "failed", group.failure))
            elif result is None:
                record(Outcome(letter_id, letter, "replayed"))
            else:
                _keep_rejected(dlq, letter_id, letter, group, result, floor, record)


def _version(floor: int, group: _Group) -> int:
    """The external version a replayed row is written with: (C, COPY_SLOT), where C is the
    stored checkpoint's counter or the newest letter's transaction counter, if higher.

    Every transaction with a counter <= C committed before the row is read now (the
    checkpoint's ones before it was recorded; a letter's one before it was parked), so the row
    already holds their effect and the version is above every document they wrote: it cannot
    undo a newer change. Every transaction after C carries a higher version and wins, whether
    the stream applied it already (409 here, which counts as success) or applies it later: its
    document is as new as that transaction, and the stream goes on to apply any later one.
    Without the letter's own counter, a replay run before the checkpoint caught up with the
    letter could lose, as "stale", to a document older than the rejected change.
    """
    newest = max(counter_of(letter.version) for _, letter in group.letters)
    return version(max(floor, newest), COPY_SLOT)


def _prepare(
    cfg: ConnectorConfig,
    rows: ReplayRows,
    table: str,
    columns: tuple[str, ...],
    groups: list[_Group],
    zone: ZoneInfo,
    mappers: dict[str, Mapper | Tree | str],
) -> None:
    """Read the rows of `groups` and set each group's action, or its failure. The document of
    a mapping with children is built whole, its children read now as well."""
    mapper = _mapper(cfg, rows, table, zone, mappers)
    if isinstance(mapper, str):
        for group in groups:
            group.failure = mapper
        return
    if not columns:
        for group in groups:
            group.failure = "the letter records no key to find its row by"
        return
    schema, name = table.split(".", 1)
    try:
        found = rows.fetch_by_keys(schema, name, columns, [g.key for g in groups])
    except CdcError as exc:
        if exc.transient:
            raise
        for group in groups:
            group.failure = exc.message
        return
    built: dict[int, list[Action]] = {}
    if isinstance(mapper, Tree):
        present = [g for g in groups if found.get(g.key) is not None]
        try:
            documents = mapper.documents(
                rows.table_schema(schema, name),
                [row for g in present if (row := found.get(g.key)) is not None],
                fetcher(rows),
            )
        except CdcError as exc:
            if exc.transient:
                raise
            for group in groups:
                group.failure = exc.message
            return
        built = {id(g): actions for g, actions in zip(present, documents, strict=True)}
    for group in groups:
        row = found.get(group.key)
        if row is None:
            _, letter = group.letters[0]
            # The mapping's index now (the operator may have changed it), unless it is one per
            # period: then only the letter knows which index the document was in.
            index = letter.index if index_template(mapper.index) else mapper.index
            group.action = Action("delete", index, letter.doc_id, None, group.key)
            continue
        try:
            actions = built[id(group)] if isinstance(mapper, Tree) else mapper.map_row(row)
        except MappingError as exc:
            group.failure = exc.message
            continue
        group.action = actions[-1]


def _mapper(
    cfg: ConnectorConfig,
    rows: ReplayRows,
    table: str,
    zone: ZoneInfo,
    mappers: dict[str, Mapper | Tree | str],
) -> Mapper | Tree | str:
    """The table's mapper (its tree, for a mapping with children), or why there is none
    (cached either way)."""
    if table in mappers:
        return mappers[table]
    schema, name = table.split(".", 1)
    mapping = cfg.mapping_for(schema, name)
    result: Mapper | Tree | str
    if mapping is None:
        result = f"table {table} is not mapped by the config any more"
    else:
        try:
            if mapping.children:
                tree, problems = compile_tree(mapping, rows, zone)
                result = tree if tree is not None else problems[0].message
            else:
                result = Mapper(mapping, rows.table_schema(schema, name), zone)
        except CdcError as exc:
            if exc.transient:
                raise
            result = exc.message
    mappers[table] = result
    return result


def _keep_rejected(
    dlq: DeadLetterQueue,
    letter_id: str,
    letter: DeadLetter,
    group: _Group,
    result: ItemResult,
    floor: int,
    record: Callable[[Outcome], None],
) -> None:
    assert group.action is not None
    error = clip_error(result.error or f"HTTP {result.status}")
    updated = replace(
        letter,
        op=group.action.op,
        index=group.action.index,
        doc_id=group.action.doc_id,
        error=error,
        status=result.status,
        version=_version(floor, group),
    )
    new_id = dlq.update(letter_id, updated)
    if new_id is None:
        log.info("dead letter %s was removed while it was being replayed", letter_id)
    record(Outcome(new_id or letter_id, updated, "rejected", error))
