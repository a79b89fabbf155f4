"""Dead letters, the file store's crash handling, replay decisions and `cdc dlq` output,
without servers (the shared store contract runs in
tests/integration/state/test_dlq.py)."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson
import pytest

from cdc.cli.dlq import format_outcome, format_table
from cdc.config import ConnectorConfig
from cdc.engine import replay as replay_module
from cdc.engine.loop import dead_letter
from cdc.engine.replay import Outcome, replay
from cdc.errors import CdcError, SourceUnavailable
from cdc.model.checkpoint import Checkpoint
from cdc.model.events import Column, ForeignKey, Kind, TableSchema
from cdc.model.letters import MAX_ERROR_CHARS, DeadLetter
from cdc.model.position import Position
from cdc.model.versions import COPY_SLOT, version
from cdc.sink.bulk import BulkItem, ItemResult
from cdc.state.files import FileDeadLetters
from cdc.transform.mapping import Action

COUNTER = 7_000


def _letter(n: int, table: str = "shop.items", **changes: Any) -> DeadLetter:
    fields: dict[str, Any] = {
        "op": "index",
        "index": "items",
        "doc_id": str(n),
        "table": table,
        "key": {"id": str(n)},
        "error": "mapper_parsing_exception: failed to parse field [price]",
        "status": 400,
        "version": version(COUNTER - 1, n),
        "gtid": f"0-1-{n}",
        "time": 1_718_000_000.0,
    }
    fields.update(changes)
    return DeadLetter(**fields)


# -- letters ------------------------------------------------------------------------------------


def test_a_letter_keeps_what_a_replay_needs_from_the_rejected_item() -> None:
    action = Action("index", "items", "7:eu", {"id": 7}, ("7", "eu"))
    item = BulkItem(action, 12345, "shop.orders", "0-1-99", ("id", "region"))
    letter = dead_letter(item, ItemResult("rejected", 400, "x" * 10_000))
    assert letter.key == {"id": "7", "region": "eu"}
    assert (letter.op, letter.index, letter.doc_id, letter.table) == (
        "index",
        "items",
        "7:eu",
        "shop.orders",
    )
    assert (letter.version, letter.gtid, letter.status) == (12345, "0-1-99", 400)
    assert len(letter.error) == MAX_ERROR_CHARS and letter.error.endswith("...")
    assert dead_letter(item, ItemResult("rejected", 413)).error == "HTTP 413"
    assert DeadLetter.from_json(letter.to_json()) == letter


def test_a_letter_of_another_format_is_refused_with_a_fix() -> None:
    data = orjson.loads(_letter(1).to_json())
    with pytest.raises(CdcError) as err:
        DeadLetter.from_json(orjson.dumps({**data, "format": 2}), "entry 1-0")
    assert str(err.value) == (
        "entry 1-0 has format 2; this version of the connector reads format 1\n"
        "Fix: replay or purge the dead-letter queue with the version that wrote it"
    )


# -- the file store after a crash ---------------------------------------------------------------


def test_a_line_torn_by_a_crash_is_ignored_and_cut_off_by_the_next_park(tmp_path: Path) -> None:
    dlq = FileDeadLetters(tmp_path, "c")
    (first,) = dlq.park([_letter(1)])
    with open(dlq.path, "ab") as fh:
        fh.write(b'{"id":"99999999999999-0","letter":{"op":"ind')  # park() never returned
    assert dlq.list() == [(first, _letter(1))]
    (second,) = dlq.park([_letter(2)])
    assert dlq.list() == [(first, _letter(1)), (second, _letter(2))]
    lines = dlq.path.read_bytes().splitlines()
    assert len(lines) == 3  # the header and two letters, nothing of the torn line
    assert all(isinstance(orjson.loads(line), dict) for line in lines)


def test_a_corrupt_line_names_the_file_and_line(tmp_path: Path) -> None:
    dlq = FileDeadLetters(tmp_path, "c")
    dlq.park([_letter(1), _letter(2)])
    lines = dlq.path.read_bytes().splitlines(keepends=True)
    lines[2] = b"not json\n"
    dlq.path.write_bytes(b"".join(lines))
    with pytest.raises(CdcError) as err:
        dlq.list()
    assert f"{dlq.path}:3 is not valid JSON" in err.value.message
    assert not err.value.transient


# -- replay ------------------------------------------------------------------------------------

ITEMS = TableSchema(
    schema="shop",
    table="items",
    columns=(
        Column("id", Kind.INT, is_primary=True),
        Column("name", Kind.STRING),
        Column("price", Kind.STRING),
    ),
    primary_key=("id",),
)


class FakeRows:
    """The rows MySQL holds now, per table."""

    def __init__(self, rows: dict[int, dict[str, Any]], fail: BaseException | None = None) -> None:
        self.rows = rows
        self.fail = fail
        self.fetched: list[list[tuple[str, ...]]] = []

    def table_schema(self, schema: str, table: str) -> TableSchema:
        if (schema, table) != ("shop", "items"):
            raise CdcError(f"table {schema}.{table} does not exist")
        return ITEMS

    def fetch_by_keys(
        self,
        schema: str,
        table: str,
        id_columns: Sequence[str],
        keys: Sequence[tuple[str, ...]],
    ) -> dict[tuple[str, ...], dict[str, Any] | None]:
        if self.fail is not None:
            raise self.fail
        assert list(id_columns) == ["id"]
        self.fetched.append(list(keys))
        return {key: self.rows.get(int(key[0])) for key in keys}

    def list_tables(self) -> list[str]:
        return ["shop.items"]

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
        raise AssertionError("no mapping here has children")


class FakeSink:
    """Accepts everything except documents whose id is in `reject`."""

    def __init__(self, reject: set[str] | None = None, on_write: Any = None) -> None:
        self.reject = reject or set()
        self.on_write = on_write
        self.sent: list[BulkItem] = []

    def write(
        self, items: Sequence[BulkItem], stop: threading.Event | None = None, on_retry: Any = None
    ) -> list[tuple[BulkItem, ItemResult]]:
        self.sent += items
        if self.on_write is not None:
            self.on_write()
        return [
            (item, ItemResult("rejected", 400, f"still bad: {item.action.doc_id}"))
            for item in items
            if item.action.doc_id in self.reject
        ]


class FakeStore:
    def __init__(self, counter: int | None) -> None:
        self.checkpoint = (
            None if counter is None else Checkpoint(Position("mariadb", "0-1-50"), counter)
        )

    def load(self) -> Checkpoint | None:
        return self.checkpoint

    def describe(self) -> str:
        return "the fake store"


def _config(**mapping: Any) -> ConnectorConfig:
    return ConnectorConfig.model_validate(
        {
            "name": "t",
            "source": {"user": "u", "server_id": 1},
            "sink": {"urls": ["http://localhost:9200"]},
            "checkpoint": {"file": {"path": "/tmp"}},
            "tables": [{"table": "shop.items", "index": "items_v2", **mapping}],
        }
    )


def _row(n: int, price: str = "1") -> dict[str, Any]:
    return {"id": n, "name": f"item {n}", "price": price}


def _replay(dlq: FileDeadLetters, rows: FakeRows, sink: FakeSink, **kwargs: Any) -> Any:
    cfg = kwargs.pop("cfg", _config(rename={"name": "title"}))
    store = kwargs.pop("store", FakeStore(COUNTER))
    return replay(cfg, dlq, store, rows, sink, **kwargs)


def test_replay_sends_the_current_row_or_a_delete_at_the_checkpoint_version(
    tmp_path: Path,
) -> None:
    dlq = FileDeadLetters(tmp_path, "c")
    dlq.park([_letter(1), _letter(2)])
    sink = FakeSink()
    report = _replay(dlq, FakeRows({1: _row(1, "12")}), sink)
    assert (report.replayed, report.rejected, report.failed) == (2, 0, 0)
    assert dlq.size() == 0
    sent = {item.action.doc_id: item for item in sink.sent}
    # The row as it is now, through the mapping as it is now (renamed field, new index)...
    assert sent["1"].action.op == "index"
    assert sent["1"].action.index == "items_v2"
    assert sent["1"].action.document() == {"id": 1, "title": "item 1", "price": "12"}
    # ...and a row that is gone is deleted.
    assert (sent["2"].action.op, sent["2"].action.index) == ("delete", "items_v2")
    assert {item.version for item in sink.sent} == {version(COUNTER, COPY_SLOT)}


def test_a_letter_newer_than_the_checkpoint_is_replayed_above_its_own_transaction(
    tmp_path: Path,
) -> None:
    # The checkpoint is written after the letter is parked, so a quick replay can see a stored
    # counter below the letter's transaction; a document the stream wrote in between (older
    # than the rejected change) must not win over the current row.
    dlq = FileDeadLetters(tmp_path, "c")
    dlq.park([_letter(1, version=version(COUNTER + 5, 3)), _letter(2)])
    sink = FakeSink()
    _replay(dlq, FakeRows({1: _row(1), 2: _row(2)}), sink)
    versions = {item.action.doc_id: item.version for item in sink.sent}
    assert versions == {
        "1": version(COUNTER + 5, COPY_SLOT),
        "2": version(COUNTER, COPY_SLOT),
    }


def test_letters_rejected_again_stay_with_the_new_error_and_are_not_retried_in_the_same_run(
    tmp_path: Path,
) -> None:
    dlq = FileDeadLetters(tmp_path, "c")
    ids = dlq.park([_letter(1), _letter(2), _letter(3)])
    sink = FakeSink(reject={"2"})
    outcomes: list[Outcome] = []
    report = _replay(
        dlq, FakeRows({n: _row(n) for n in (1, 2, 3)}), sink, on_outcome=outcomes.append
    )
    assert (report.replayed, report.rejected, report.failed) == (2, 1, 0)
    assert len(sink.sent) == 3
    (kept_id, kept), *_ = dlq.list()
    assert dlq.size() == 1 and kept_id not in ids
    assert kept.error == "still bad: 2" and kept.gtid == "0-1-2" and kept.time == 1_718_000_000.0
    assert kept.version == version(COUNTER, COPY_SLOT) and kept.index == "items_v2"
    assert [(o.result, o.letter_id) for o in outcomes] == [
        ("replayed", ids[0]),
        ("rejected", kept_id),
        ("replayed", ids[2]),
    ]
    assert report.problems == [outcomes[1]]


def test_letters_that_cannot_be_sent_fail_and_stay_as_they_were(tmp_path: Path) -> None:
    dlq = FileDeadLetters(tmp_path, "c")
    ids = dlq.park(
        [
            _letter(1, table="shop.gone"),
            _letter(2, table="other.items"),
            _letter(3, key={}),
            _letter(4),
        ]
    )
    cfg = ConnectorConfig.model_validate(
        {
            **_config().model_dump(),
            "tables": [
                {"table": "shop.items", "index": "items_v2"},
                {"table": "shop.gone", "index": "gone"},
            ],
        }
    )
    rows = FakeRows({4: {"id": 4, "name": "x", "price": None}})
    report = _replay(dlq, rows, FakeSink(), cfg=cfg)
    assert (report.replayed, report.failed) == (1, 3)
    reasons = {o.letter_id: o.reason for o in report.problems}
    assert reasons == {
        ids[0]: "table shop.gone does not exist",
        ids[1]: "table other.items is not mapped by the config any more",
        ids[2]: "the letter records no key to find its row by",
    }
    assert [i for i, _ in dlq.list()] == ids[:3]


def test_letters_about_one_row_are_sent_once(tmp_path: Path) -> None:
    dlq = FileDeadLetters(tmp_path, "c")
    dlq.park([_letter(1), _letter(2), _letter(1, gtid="0-1-9")])
    rows = FakeRows({1: _row(1), 2: _row(2)})
    sink = FakeSink()
    report = _replay(dlq, rows, sink)
    assert report.replayed == 3 and dlq.size() == 0
    assert sorted(item.action.doc_id for item in sink.sent) == ["1", "2"]
    assert rows.fetched == [[("1",), ("2",)]]


def test_only_the_letters_there_at_the_start_are_replayed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(replay_module, "PAGE_SIZE", 2)
    dlq = FileDeadLetters(tmp_path, "c")
    dlq.park([_letter(n) for n in range(1, 6)])
    connector = FileDeadLetters(tmp_path, "c")
    # The running connector parks a new letter during each bulk request of the replay.
    sink = FakeSink(reject={"1", "4"}, on_write=lambda: connector.park([_letter(100)]))
    report = _replay(dlq, FakeRows({n: _row(n) for n in range(1, 6)}), sink)
    assert (report.replayed, report.rejected) == (3, 2)
    assert sorted(item.action.doc_id for item in sink.sent) == ["1", "2", "3", "4", "5"]
    assert [d.doc_id for _, d in dlq.list()] == ["100", "1", "100", "4", "100"]


def test_replay_by_id_reports_unknown_ids(tmp_path: Path) -> None:
    dlq = FileDeadLetters(tmp_path, "c")
    ids = dlq.park([_letter(1), _letter(2)])
    sink = FakeSink()
    report = _replay(dlq, FakeRows({2: _row(2)}), sink, ids=[ids[1], "5-0", ids[1]])
    assert (report.replayed, report.failed) == (1, 1)
    assert report.problems == [Outcome("5-0", None, "failed", "no such letter in the queue")]
    assert [i for i, _ in dlq.list()] == [ids[0]]


def test_replay_needs_a_checkpoint_and_lets_outages_through(tmp_path: Path) -> None:
    dlq = FileDeadLetters(tmp_path, "c")
    dlq.park([_letter(1)])
    with pytest.raises(CdcError, match="there is no checkpoint in the fake store"):
        _replay(dlq, FakeRows({}), FakeSink(), store=FakeStore(None))
    with pytest.raises(SourceUnavailable):
        _replay(dlq, FakeRows({}, fail=SourceUnavailable("MySQL is down")), FakeSink())
    assert dlq.size() == 1


# -- output -----------------------------------------------------------------------------------


def test_the_list_is_one_aligned_line_per_letter_with_the_error_cut_short() -> None:
    letters = [
        ("1718000000000-0", _letter(1, error="bad\n  value " + "x" * 300)),
        ("1718000000000-12", _letter(22, op="delete", table="shop.orders_eu", status=413)),
    ]
    lines = format_table(letters)
    assert lines[0].split() == ["ID", "PARKED", "(UTC)", "TABLE", "DOCUMENT", "OP", "ERROR"]
    assert lines[1].startswith("1718000000000-0   2024-06-10 06:13:20  shop.items      items/1 ")
    assert lines[1].endswith("...") and "bad value xxx" in lines[1]
    assert lines[2].split()[3:8] == [
        "shop.orders_eu",
        "items/22",
        "delete",
        "413",
        "mapper_parsing_exception:",
    ]
    # Columns line up: every line has its error at the same offset.
    assert (
        len({line.index(word) for line, word in zip(lines, ["ERROR", "400", "413"], strict=True)})
        == 1
    )


def test_a_problem_line_names_the_letter_its_document_and_the_reason() -> None:
    outcome = Outcome("1-0", _letter(3), "rejected", "mapper_parsing_exception:\n bad")
    assert format_outcome(outcome) == (
        "rejected: 1-0 shop.items items/3: mapper_parsing_exception: bad"
    )
    missing = Outcome("5-0", None, "failed", "no such letter in the queue")
    assert format_outcome(missing) == "failed: 5-0: no such letter in the queue"
