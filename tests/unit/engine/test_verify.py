"""The verifier against an in-memory table, index and connector whose progress the tests
control: what it reports, what it waits for, and what a repair writes."""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Generator, Iterator, Mapping, Sequence
from typing import Any

import pytest
from fakes import ITEMS, FakeSink, NoRows, config

from cdc.config import ConnectorConfig
from cdc.engine import verify
from cdc.engine.verify import Report, Verifier
from cdc.errors import Interrupted
from cdc.model.checkpoint import Checkpoint
from cdc.model.events import TableSchema
from cdc.model.position import Position
from cdc.model.versions import COPY_SLOT, MAX_ROW_SLOT, version
from cdc.sink.bulk import BulkItem
from cdc.transform.mapping import Action

FILE = "bin.000001"


class World:
    """The table `shop.items`, its binlog (a write advances the position by one) and a
    connector that applies the binlog to the index only when told to."""

    def __init__(self, rows: int = 0) -> None:
        self.rows: dict[int, dict[str, Any]] = {}
        self.binlog: list[tuple[int, int, dict[str, Any] | None]] = []
        self.position = 4
        self.applied = 4
        self.sink = FakeSink()
        self.on_checkpoint: Callable[[], None] = lambda: None
        """Called on every checkpoint read: lets a test move the connector along."""
        self.on_mget: Callable[[], None] = lambda: None
        self.on_fetch: Callable[[], None] = lambda: None
        """Called after every read of rows by key."""
        self.checkpoint_reads = 0
        for row_id in range(1, rows + 1):
            self.write(row_id, f"row {row_id}")
        self.apply()

    def write(self, row_id: int, name: str | None) -> None:
        """Insert or update (a name) or delete (None) a row, as one transaction."""
        self.position += 1
        row = None if name is None else {"id": row_id, "name": name}
        if row is None:
            self.rows.pop(row_id, None)
        else:
            self.rows[row_id] = row
        self.binlog.append((self.position, row_id, row))

    def apply(self, upto: int | None = None) -> None:
        """The connector applies the binlog up to `upto` (default: all) and checkpoints."""
        upto = self.position if upto is None else upto
        for pos, row_id, row in self.binlog:
            if self.applied < pos <= upto:
                action = (
                    Action("delete", "items", str(row_id), None)
                    if row is None
                    else Action("index", "items", str(row_id), row)
                )
                item = BulkItem(action, version(pos, 0), "items")
                assert self.sink.write([item]) == []
        self.applied = max(self.applied, upto)

    def doc(self, row_id: int | str) -> dict[str, Any] | None:
        return self.sink.live().get(str(row_id))

    def put(self, doc_id: str, source: dict[str, Any] | None) -> None:
        """Change the index behind the connector's back (as an operator or a bug would)."""
        held = self.sink.docs.get(("items", doc_id))
        self.sink.docs[("items", doc_id)] = ((held[0] if held else 0) + 1, source)


class Rows(NoRows):
    """`VerifyRows` over the world's table."""

    def __init__(self, world: World) -> None:
        self.world = world

    def list_tables(self) -> list[str]:
        return ["shop.items"]

    def table_schema(self, schema: str, table: str) -> TableSchema:
        return ITEMS

    def unique_key(self, schema: str, table: str) -> tuple[str, ...] | None:
        return ("id",)

    def estimate_rows(self, schema: str, table: str) -> int:
        return len(self.world.rows)

    def consistent_chunk(
        self,
        schema: str,
        table: str,
        key_columns: Sequence[str],
        after: tuple[Any, ...] | None,
        limit: int,
        condition: tuple[str, Sequence[Any]] | None = None,
    ) -> tuple[TableSchema, list[dict[str, Any]], tuple[str, int]]:
        assert condition is None
        ids = sorted(i for i in self.world.rows if after is None or i > after[0])[:limit]
        return ITEMS, [dict(self.world.rows[i]) for i in ids], (FILE, self.world.position)

    def fetch_by_keys(
        self,
        schema: str,
        table: str,
        id_columns: Sequence[str],
        keys: Sequence[tuple[str, ...]],
    ) -> dict[tuple[str, ...], dict[str, Any] | None]:
        found = {key: self.world.rows.get(int(key[0])) for key in keys}
        self.world.on_fetch()
        return found

    def fetch_key_columns(
        self,
        schema: str,
        table: str,
        id_columns: Sequence[str],
        keys: Sequence[tuple[str, ...]],
    ) -> list[dict[str, Any]]:
        return [{"id": int(k[0])} for k in keys if int(k[0]) in self.world.rows]

    def valid_key(
        self, schema: str, table: str, id_columns: Sequence[str], key: tuple[str, ...]
    ) -> bool:
        return len(key) == 1 and key[0].isdigit()

    @contextlib.contextmanager
    def snapshot(self) -> Iterator[tuple[str, int]]:
        yield FILE, self.world.position

    def position(self) -> Position:
        return Position("mariadb", "", FILE, self.world.position)

    def close(self) -> None:
        return None


class Checkpoints:
    """The connector's checkpoint: where it has applied the binlog to."""

    def __init__(self, world: World) -> None:
        self.world = world

    def load(self) -> Checkpoint | None:
        self.world.checkpoint_reads += 1
        self.world.on_checkpoint()
        return Checkpoint(Position("mariadb", "", FILE, self.world.applied), self.world.applied)

    def save(self, checkpoint: Checkpoint) -> None:
        raise AssertionError("the verifier never writes the checkpoint")

    def delete(self) -> None:
        raise AssertionError("the verifier never writes the checkpoint")

    def describe(self) -> str:
        return "memory"

    def hold(self, token: str | None) -> None:
        raise AssertionError("the verifier takes no lease")


class Docs:
    """The index as the verifier reads it, with a hook on every `_mget`."""

    def __init__(self, world: World) -> None:
        self.world = world

    def mget(
        self, index: str, ids: Sequence[str], routing: Mapping[str, str] | None = None
    ) -> dict[str, dict[str, Any]]:
        self.world.on_mget()
        return self.world.sink.mget(index, ids, routing)

    def scan_ids(
        self, index: str, page: int, keep_alive: float = 120.0
    ) -> Generator[list[str], None, None]:
        return self.world.sink.scan_ids(index, page)


def verifier(world: World, tables: list[dict[str, Any]] | None = None, **options: Any) -> Verifier:
    """A verifier of the world, reading chunks of 10 rows."""
    options.setdefault("catch_up_timeout", 1.0)
    options.setdefault("settle_timeout", 2.0)
    cfg = config(snapshot={"chunk_size": 10})
    if tables is not None:
        cfg = ConnectorConfig.model_validate({**cfg.model_dump(), "tables": tables})
    return Verifier(cfg, Rows(world), Docs(world), Checkpoints(world), **options)


def differences(report: Report) -> dict[str, Any]:
    found = report.to_dict()["indices"]["items"]
    del found["checked"]
    found.pop("repaired", None)
    return dict(found)


NONE: dict[str, Any] = {
    "missing": [],
    "different": [],
    "extra": [],
    "changing": [],
    "unverified": [],
}


def test_an_index_that_equals_the_table_has_no_difference() -> None:
    world = World(rows=35)

    report = verifier(world).run()

    assert report.equal
    assert report.indices["items"].checked == 35
    assert differences(report) == NONE


def test_each_corrupted_document_is_reported_by_kind_and_nothing_else() -> None:
    world = World(rows=35)
    world.put("3", None)
    world.put("17", None)
    world.put("8", {"id": 8, "name": "wrong"})
    world.put("9", {"id": 9, "title": "row 9"})
    world.put("500", {"id": 500, "name": "no row"})
    world.put("not-an-id", {"name": "no row either"})

    report = verifier(world).run()

    assert not report.equal
    assert report.indices["items"].checked == 35
    assert differences(report) == {
        "missing": ["17", "3"],
        "different": [{"id": "8", "fields": ["name"]}, {"id": "9", "fields": ["name", "title"]}],
        "extra": ["500", "not-an-id"],
        "changing": [],
        "unverified": [],
    }


def test_many_candidates_are_settled_in_batches_and_reported_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(verify, "SETTLE_BATCH", 4)
    world = World(rows=35)
    for row_id in range(1, 13):
        world.put(str(row_id), {"id": row_id, "name": "wrong"})
    for doc_id in ("100", "101", "102", "103", "104"):
        world.put(doc_id, {"id": 0})

    report = verifier(world).run()

    found = differences(report)
    assert [d["id"] for d in found["different"]] == sorted(str(i) for i in range(1, 13))
    assert found["extra"] == ["100", "101", "102", "103", "104"]
    assert found["missing"] == [] and found["changing"] == []


def test_rows_written_since_the_index_was_read_are_awaited_not_reported() -> None:
    world = World(rows=35)
    world.write(5, "changed")
    world.write(40, "new")
    world.write(12, None)
    # The connector applies one transaction per checkpoint read, as if it were a bit behind.
    world.on_checkpoint = lambda: world.apply(world.applied + 1)

    report = verifier(world).run()

    assert report.equal, report.to_dict()
    assert world.checkpoint_reads >= 3
    assert world.doc(5) == {"id": 5, "name": "changed"}


def test_a_row_changed_while_its_document_is_compared_again_is_no_difference() -> None:
    world = World(rows=20)
    world.put("7", {"id": 7, "name": "stale"})  # a real difference, for contrast
    writes = iter(range(3))

    def busy_writer() -> None:
        # The row changes right after each of the first reads of the index; the connector
        # keeps up.
        if next(writes, None) is not None:
            world.write(4, f"edit {world.position}")
        world.apply()

    world.on_mget = busy_writer

    report = verifier(world).run()

    assert differences(report) == {**NONE, "different": [{"id": "7", "fields": ["name"]}]}


def test_a_difference_the_stream_repairs_while_it_is_confirmed_is_no_difference() -> None:
    world = World(rows=20)
    world.put("4", {"id": 4, "name": "stale"})
    armed: list[bool] = []
    fixed: list[bool] = []

    def stream_fixes_it() -> None:
        # Once the candidates are being confirmed, the row changes and the connector applies
        # that before the index is read: the index is newer than the row the check read.
        if armed and not fixed:
            fixed.append(True)
            world.write(4, "edited")
            world.apply()

    world.on_fetch = lambda: armed.append(True)
    world.on_checkpoint = stream_fixes_it

    report = verifier(world).run()

    assert fixed
    assert differences(report) == NONE


def test_a_row_that_never_stops_changing_is_reported_as_changing() -> None:
    world = World(rows=20)
    world.put("4", {"id": 4, "name": "stale"})

    def hot_row() -> None:
        # Every read of the index sees an older row than the one now in the table.
        world.apply()
        world.write(4, f"edit {world.position}")

    world.on_mget = hot_row

    report = verifier(world, settle_timeout=0.5).run()

    assert differences(report) == {**NONE, "changing": ["4"]}


def test_a_stopped_connector_leaves_changed_rows_unconfirmed_and_is_waited_for_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    world = World(rows=45)
    for row_id in (3, 13, 23, 33, 43):  # one change in each chunk of 10
        world.write(row_id, "changed while the connector is stopped")

    with caplog.at_level(logging.WARNING):
        report = verifier(world, catch_up_timeout=0.3, settle_timeout=0.5).run()

    assert differences(report) == {**NONE, "changing": ["13", "23", "3", "33", "43"]}
    warnings = [r.getMessage() for r in caplog.records if "has not reached" in r.getMessage()]
    assert len(warnings) == 1, warnings
    assert "differences on rows changed since cannot be confirmed yet" in warnings[0]


def test_a_soft_deleted_row_s_document_is_extra() -> None:
    world = World(rows=5)
    world.rows[2]["name"] = "deleted"  # soft-deleted in the table, behind the binlog's back
    soft = {"table": "shop.items", "index": "items"}
    soft["soft_delete"] = {"column": "name", "values": ["deleted"]}  # type: ignore[assignment]

    report = verifier(world, tables=[soft]).run()

    assert differences(report) == {**NONE, "extra": ["2"]}


def test_repair_makes_the_index_equal_with_versions_that_a_later_change_beats() -> None:
    world = World(rows=30)
    world.put("3", None)
    world.put("8", {"id": 8, "name": "wrong"})
    world.put("99", {"id": 99})
    check = verifier(world)
    found = check.run()

    after = check.repair(found, world.sink)

    assert after.to_dict()["indices"]["items"]["repaired"] == ["3", "8", "99"]
    assert after.equal and differences(after) == NONE
    assert world.doc(3) == {"id": 3, "name": "row 3"}
    assert world.doc(8) == {"id": 8, "name": "row 8"}
    assert world.doc(99) is None
    repair_version = version(world.applied, MAX_ROW_SLOT)
    assert world.sink.docs[("items", "8")][0] == repair_version
    # The stream's next change of the row is newer than the repair, and wins.
    world.write(8, "later")
    world.apply()
    assert world.doc(8) == {"id": 8, "name": "later"}
    # A second verification finds nothing, and repairing the same report again leaves every
    # document as it is.
    assert verifier(world).run().equal
    held = world.sink.live()
    assert verifier(world).repair(found, world.sink).equal
    assert world.sink.live() == held


def test_repair_does_not_undo_a_change_the_stream_applies_meanwhile() -> None:
    world = World(rows=10)
    world.put("4", {"id": 4, "name": "wrong"})
    check = verifier(world)
    found = check.run()
    changes = iter([1])

    def stream_overtakes() -> None:
        # Right after the repair read the row, it changes and the connector applies that
        # before the repair's write arrives.
        if next(changes, None) is not None:
            world.write(4, "newer")
            world.apply()

    world.on_fetch = stream_overtakes
    after = check.repair(found, world.sink)

    assert world.doc(4) == {"id": 4, "name": "newer"}
    assert world.sink.docs[("items", "4")][0] == version(world.position, 0)
    assert after.equal


def test_repair_beats_internal_versioning_on_a_copied_document_of_a_quiet_database() -> None:
    world = World(rows=10)
    # Documents as a snapshot wrote them, at the checkpoint's counter; then re-indexed and
    # deleted with internal versioning, which adds one to the version.
    for doc_id in ("2", "5"):
        world.sink.docs[("items", doc_id)] = (
            version(world.applied, COPY_SLOT),
            {"id": int(doc_id), "name": f"row {doc_id}"},
        )
    world.put("2", {"id": 2, "name": "edited by hand"})
    world.put("5", None)
    check = verifier(world)

    after = check.repair(check.run(), world.sink)

    assert after.equal, after.to_dict()
    assert world.doc(2) == {"id": 2, "name": "row 2"}
    assert world.doc(5) == {"id": 5, "name": "row 5"}


def test_a_document_versioned_above_the_stream_is_left_and_reported(
    caplog: pytest.LogCaptureFixture,
) -> None:
    world = World(rows=10)
    ahead = version(world.applied + 10, 0)
    world.sink.docs[("items", "6")] = (ahead, {"id": 6, "name": "written with version ahead"})
    check = verifier(world)

    with caplog.at_level(logging.WARNING):
        after = check.repair(check.run(), world.sink)

    assert differences(after) == {**NONE, "different": [{"id": "6", "fields": ["name"]}]}
    assert world.sink.docs[("items", "6")][0] == ahead
    assert "the repair could not fix 1 document of items: versions above" in caplog.text


def test_a_table_without_a_usable_key_is_reported_unverified(
    caplog: pytest.LogCaptureFixture,
) -> None:
    world = World(rows=5)

    class Keyless(Rows):
        def unique_key(self, schema: str, table: str) -> tuple[str, ...] | None:
            return None

    cfg = config(snapshot={"chunk_size": 10})
    with caplog.at_level(logging.WARNING):
        report = Verifier(cfg, Keyless(world), Docs(world), Checkpoints(world)).run()

    reason = "no primary key and no unique key on NOT NULL columns"
    assert differences(report) == {
        **NONE,
        "unverified": [{"table": "shop.items", "reason": reason}],
    }
    assert not report.equal
    assert f"shop.items cannot be verified: {reason}" in caplog.text


def test_a_set_stop_interrupts_the_verification() -> None:
    world = World(rows=30)
    stop = threading.Event()
    world.on_mget = stop.set

    with pytest.raises(Interrupted):
        verifier(world, stop=stop).run()
