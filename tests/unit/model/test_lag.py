"""How far a checkpoint is behind the server, in transactions, binlog bytes and seconds."""

from __future__ import annotations

from cdc.model.checkpoint import Checkpoint
from cdc.model.lag import Behind, measure_behind, reached
from cdc.model.position import Position

UUID_A = "3e11fa47-71ca-11e1-9e33-c80aa9429562"
UUID_B = "b7a5e3c2-0000-11ee-8000-0242ac120002"


def test_behind_counts_mysql_transactions_missing_from_the_checkpoint_and_binlog_bytes() -> None:
    logs = [("bin.000009", 1000), ("bin.000010", 500), ("bin.000011", 300)]
    cp = Checkpoint(Position("mysql", f"{UUID_A}:1-90", "bin.000009", 400), 7, event_time=1000)
    now = Position("mysql", f"{UUID_A}:1-100,{UUID_B}:1-5", "bin.000011", 100)

    assert measure_behind(cp, now, logs, clock=1060.0) == Behind(15, 600 + 500 + 100, 60.0)


def test_behind_is_zero_when_caught_up_and_flags_a_purged_file() -> None:
    logs = [("bin.000010", 500)]
    now = Position("mysql", f"{UUID_A}:1-100", "bin.000010", 200)
    caught_up = Checkpoint(now, 7, event_time=1000)
    purged = Checkpoint(Position("mysql", f"{UUID_A}:1-50", "bin.000009", 4), 7)

    assert measure_behind(caught_up, now, logs, clock=9999.0) == Behind(0, 0, 0.0)
    assert measure_behind(purged, now, logs, clock=9999.0) == Behind(50, None, None, True)


def test_behind_counts_mariadb_sequence_numbers_per_domain() -> None:
    cp = Checkpoint(Position("mariadb", "0-1-10,1-2-5"), 7)
    now = Position("mariadb", "0-1-15,1-2-5,2-3-4", "bin.000001", 900)

    behind = measure_behind(cp, now, [("bin.000001", 900)], clock=0.0)

    assert behind.transactions == 5 + 0 + 4
    assert behind.bytes is None  # a checkpoint set by GTID names no file


def test_reached_compares_gtid_sets_or_lists_and_falls_back_to_file_offsets() -> None:
    target = Position("mysql", f"{UUID_A}:1-10", "bin.000002", 400)

    assert reached(Position("mysql", f"{UUID_A}:1-10,{UUID_B}:1-2"), target)
    assert not reached(Position("mysql", f"{UUID_A}:1-9"), target)
    assert reached(Position("mariadb", "0-1-12,1-2-3"), Position("mariadb", "0-1-10"))
    assert not reached(Position("mariadb", "0-1-12"), Position("mariadb", "0-1-10,1-2-3"))
    assert reached(Position("mysql", "", "bin.000002", 400), Position("mysql", "", "bin.000002", 4))
    assert not reached(
        Position("mysql", "", "bin.000001", 900), Position("mysql", "", "bin.000002", 4)
    )
