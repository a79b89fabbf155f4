"""Operator position targets on MySQL, against a scripted connection (no MySQL server here)."""

from __future__ import annotations

import re
from typing import Any

import pymysql
import pytest

from cdc.errors import PositionError
from cdc.model.position import Position, ServerInfo
from cdc.source.positions import earliest_position, position_at

UUID_A = "3e11fa47-71ca-11e1-9e33-c80aa9429562"
UUID_B = "b7a5e3c2-0000-11ee-8000-0242ac120002"


Answer = list[tuple[object, ...]] | Exception


class _ScriptedCursor:
    """Answers each query with the rows (or error) of the first prefix it starts with."""

    def __init__(self, answers: dict[str, Answer]) -> None:
        self.answers = answers
        self.rows: list[tuple[object, ...]] = []

    def __enter__(self) -> _ScriptedCursor:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def execute(self, sql: str, args: object = None) -> None:
        for prefix, answer in self.answers.items():
            if sql.startswith(prefix):
                if isinstance(answer, Exception):
                    raise answer
                self.rows = answer
                return
        raise AssertionError(f"unexpected query {sql!r}")

    def fetchall(self) -> list[tuple[object, ...]]:
        return self.rows

    def fetchone(self) -> tuple[object, ...] | None:
        return self.rows[0] if self.rows else None


class _ScriptedConnection:
    def __init__(self, answers: dict[str, Answer]) -> None:
        self.answers = answers

    def cursor(self) -> _ScriptedCursor:
        return _ScriptedCursor(self.answers)


def _mysql(gtid_mode: bool) -> ServerInfo:
    return ServerInfo("mysql", "8.4.2", 1, UUID_A, gtid_mode)


def _conn(**answers: Answer) -> Any:
    """A MySQL with two binlogs; `events` answers SHOW BINLOG EVENTS, `purged` gtid_purged."""
    script: dict[str, Answer] = {
        "SHOW BINARY LOGS": [("binlog.000007", 9000), ("binlog.000008", 700)]
    }
    if "events" in answers:
        script["SHOW BINLOG EVENTS"] = answers["events"]
    if "purged" in answers:
        script["SELECT @@GLOBAL.gtid_purged"] = answers["purged"]
    return _ScriptedConnection(script)


def test_earliest_on_mysql_resumes_with_the_purged_set_or_the_oldest_file() -> None:
    conn = _conn(purged=[(f"{UUID_B}:1-7,\n{UUID_A}:1-40",)])

    with_gtids = earliest_position(conn, _mysql(gtid_mode=True))
    without = earliest_position(_conn(), _mysql(gtid_mode=False))

    assert with_gtids == Position("mysql", f"{UUID_A}:1-40,{UUID_B}:1-7", "binlog.000007", 4)
    assert without == Position("mysql", "", "binlog.000007", 4)


def test_a_mysql_file_offset_must_start_a_transaction_and_needs_gtids_off() -> None:
    gtid: list[tuple[object, ...]] = [
        ("binlog.000008", 310, "Anonymous_Gtid", 1, 389, "SET @@SESSION.GTID_NEXT=...")
    ]
    table_map: list[tuple[object, ...]] = [
        ("binlog.000008", 389, "Table_map", 1, 440, "table_id: 90 (shop.items)")
    ]
    bad_offset = pymysql.err.OperationalError(1220, "Wrong offset or I/O error")
    off, on = _mysql(gtid_mode=False), _mysql(gtid_mode=True)

    at_boundary = position_at(_conn(events=gtid), off, "binlog.000008", 310)
    at_end = position_at(_conn(events=[]), off, "binlog.000008", 700)

    assert at_boundary == Position("mysql", "", "binlog.000008", 310)
    assert at_end == Position("mysql", "", "binlog.000008", 700)
    with pytest.raises(PositionError, match=r"inside a transaction \(a Table_map event"):
        position_at(_conn(events=table_map), off, "binlog.000008", 389)
    with pytest.raises(
        PositionError, match=re.escape("no binlog event starts at binlog.000008:311")
    ):
        position_at(_conn(events=bad_offset), off, "binlog.000008", 311)
    with pytest.raises(PositionError, match=re.escape("offset 701 is outside binlog.000008")):
        position_at(_conn(), off, "binlog.000008", 701)
    with pytest.raises(
        PositionError, match=re.escape("binlog.000006 is not among the server's binlogs")
    ):
        position_at(_conn(), off, "binlog.000006", 4)
    with pytest.raises(PositionError, match="has GTIDs on") as gtids_on:
        position_at(_conn(events=gtid), on, "binlog.000008", 310)
    assert gtids_on.value.hint is not None and "--gtid" in gtids_on.value.hint
