from __future__ import annotations

import pytest

from cdc.errors import PositionError
from cdc.model.checkpoint import Checkpoint
from cdc.model.position import Position
from cdc.model.versions import MAX_ROW_SLOT, initial_counter, version
from cdc.state.files import FileCheckpoints


def test_checkpoint_json_round_trip() -> None:
    cp = Checkpoint(
        position=Position("mysql", "3e11fa47-71ca-11e1-9e33-c80aa9429562:1-77", "bin.000003", 4567),
        counter=1234,
        server="3e11fa47-71ca-11e1-9e33-c80aa9429562",
        event_time=1700000000,
        written_at=1700000001.5,
    )
    assert Checkpoint.from_json(cp.to_json()) == cp


def test_checkpoint_of_another_format_is_refused_with_a_fix() -> None:
    data = b'{"format": 99, "flavor": "mariadb", "gtid": "0-1-5", "counter": 3}'
    with pytest.raises(PositionError) as err:
        Checkpoint.from_json(data, "Redis key cdc:x:checkpoint")
    assert str(err.value) == (
        "Redis key cdc:x:checkpoint has format 99; this version of the connector reads format 1\n"
        "Fix: upgrade the connector, or export the position with the version that wrote it"
    )


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"{not json", "cp is not valid JSON"),
        (b"[1]", "cp is not a JSON object"),
        (b'{"format": 1, "flavor": "mariadb", "gtid": "0-1-5"}', "cp is malformed: 'counter'"),
        (b'{"format": 1, "flavor": "oracle", "counter": 1}', "cp is malformed: unknown flavor"),
    ],
)
def test_corrupt_checkpoints_are_refused(data: bytes, message: str) -> None:
    with pytest.raises(PositionError, match="^" + message):
        Checkpoint.from_json(data, "cp")


def test_versions_order_by_transaction_then_slot() -> None:
    assert version(7, 0) > version(6, MAX_ROW_SLOT)
    assert version(7, 1) > version(7, 0)
    # The largest version must still be a valid Elasticsearch external version (< 2**63).
    assert version((1 << 40) - 1, MAX_ROW_SLOT) < 2**63


def test_initial_counter_grows_with_time() -> None:
    assert initial_counter(2_000_000_000) > initial_counter(1_900_000_000)
    assert version(initial_counter(4_000_000_000), MAX_ROW_SLOT) < 2**63


def test_file_store_round_trip_and_missing(tmp_path) -> None:  # type: ignore[no-untyped-def]
    store = FileCheckpoints(tmp_path / "cp", "orders")
    assert store.load() is None
    cp = Checkpoint(Position("mariadb", "0-1-9,1-2-3", "mysql-bin.000001", 99), counter=5)
    store.save(cp)
    assert store.load() == cp
    assert (tmp_path / "cp" / "orders.json").exists()
    store.delete()
    assert store.load() is None
