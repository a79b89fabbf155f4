"""The contracts of `cdc.state.stores`, run against every backend: Redis (a real server), local
files and memory. Each store is opened twice over the same backend, as the connector and the
CLI do, so what one instance writes the other must read. (The dead-letter queue's contract
runs in tests/integration/state/test_dlq.py.)"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from cdc.errors import PositionError
from cdc.model.checkpoint import Checkpoint
from cdc.model.position import Position
from cdc.model.progress import Progress
from cdc.model.status import Status
from cdc.state.files import open_files
from cdc.state.redis import open_redis
from cdc.state.stores import Stores
from cdc.testing.memory import Memory, memory_stores

Open = Callable[[], Stores]


@pytest.fixture(params=["redis", "files", "memory"])
def open_backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Open]:
    """Opens stores of connector `orders` on one backend, as many times as asked."""
    opened: list[Stores] = []
    memory = Memory()
    url = request.getfixturevalue("redis_url") if request.param == "redis" else ""

    def open_one() -> Stores:
        if request.param == "redis":
            stores = open_redis(url, "cdc", "orders")
        elif request.param == "files":
            stores = open_files(tmp_path / "state", "orders")
        else:
            stores = memory_stores(memory)
        opened.append(stores)
        return stores

    yield open_one
    for stores in opened:
        stores.close()


CP = Checkpoint(
    Position("mariadb", "0-1-9,1-2-3", "mysql-bin.000001", 99), 5, "server_id=1", 1700, 1.5
)


def test_a_checkpoint_is_replaced_whole_and_deleted(open_backend: Open) -> None:
    writer, reader = open_backend(), open_backend()
    assert reader.checkpoints.load() is None

    writer.checkpoints.save(CP)
    writer.checkpoints.save(CP)  # idempotent
    assert reader.checkpoints.load() == CP
    later = Checkpoint(Position("mariadb", "0-1-10", "mysql-bin.000001", 150), 6)
    writer.checkpoints.save(later)
    assert reader.checkpoints.load() == later

    writer.checkpoints.delete()
    writer.checkpoints.delete()  # a missing one is not an error
    assert reader.checkpoints.load() is None
    assert writer.checkpoints.describe()


def test_a_heartbeat_is_read_back_whole_until_it_expires(open_backend: Open) -> None:
    writer, reader = open_backend(), open_backend()
    assert reader.heartbeats.read() is None
    status = Status(
        name="orders",
        state="degraded",
        pid=42,
        host="box",
        started_at=1.0,
        updated_at=2.0,
        lag_seconds=0.5,
        degraded=["Elasticsearch"],
        position=CP.position,
        counter=5,
        transactions=3,
        by_table={"shop.items": 4},
        snapshot=Progress("shop.items", "running", rows_done=10),
    )

    writer.heartbeats.beat(status, ttl=0.5)
    assert reader.heartbeats.read() == status
    time.sleep(0.7)
    assert reader.heartbeats.read() is None


def test_snapshot_progress_is_kept_per_table(open_backend: Open) -> None:
    writer, reader = open_backend(), open_backend()
    assert reader.snapshots.load_all() == {}
    items = Progress("shop.items", "running", after=[{"dec": "1.50"}, 7], rows_done=2000)
    orders = Progress("shop.orders", "pending", target_index="orders_v2")

    writer.snapshots.save(items)
    writer.snapshots.save(orders)
    items.rows_done = 4000  # the caller's object may change; the stored copy may not
    assert reader.snapshots.load_all()["shop.items"].rows_done == 2000
    writer.snapshots.save(items)
    assert reader.snapshots.load_all() == {"shop.items": items, "shop.orders": orders}


def test_a_corrupt_checkpoint_is_a_position_error_naming_where_it_is(tmp_path: Path) -> None:
    stores = open_files(tmp_path, "orders")
    (tmp_path / "orders.json").write_text("{not json")

    with pytest.raises(PositionError, match=r"orders\.json is not valid JSON"):
        stores.checkpoints.load()
