"""The core promise against real servers: the index equals MySQL after the connector catches up,
across every column type, every operation shape, restarts and replays."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from harness import (
    CdcProcess,
    RandomWriter,
    run_until_caught_up,
    save_checkpoint,
    stored_checkpoint,
    wait_for,
    write_config,
)
from rig import MariaDB, Osmem

TYPES_DDL = """
CREATE TABLE types (
  id BIGINT UNSIGNED PRIMARY KEY,
  ti TINYINT, su SMALLINT UNSIGNED, mi MEDIUMINT, i INT, bi BIGINT,
  dc DECIMAL(30,10), f FLOAT, d DOUBLE,
  dd DATE, dt DATETIME(6), ts TIMESTAMP(3) NULL DEFAULT NULL, t TIME(2), y YEAR,
  c CHAR(5), vc VARCHAR(100) CHARACTER SET utf8mb4, txt TEXT CHARACTER SET utf8mb4,
  lat VARCHAR(20) CHARACTER SET latin1,
  e ENUM('small','large'), s SET('a','b','c'), b BIT(10), j JSON,
  bin BINARY(4), vb VARBINARY(10), bl BLOB,
  n INT NULL
) DEFAULT CHARSET=utf8mb4
"""

TYPES_ROW_1 = (
    "INSERT INTO types VALUES (18446744073709551615, -128, 65535, -8388608, 2147483647,"
    " -9223372036854775808, '12345678901234567890.0123456789', 1.5, 2.25,"
    " '2024-02-29', '2024-07-01 12:30:00.250000', '2024-01-02 03:04:05.123',"
    " '-838:59:59.00', 2155, 'ab', 'héllo 🚀', 'long text', 'café', 'large', 'a,c', b'1111111111',"
    " '{\"k\": [1, \"two\", null, true], \"n\": {\"x\": 1.5}}', x'00ff1020', x'6869', x'000102',"
    " NULL)"
)
TYPES_DOC_1 = {
    "id": 18446744073709551615,
    "ti": -128,
    "su": 65535,
    "mi": -8388608,
    "i": 2147483647,
    "bi": -9223372036854775808,
    "dc": "12345678901234567890.0123456789",
    "f": 1.5,
    "d": 2.25,
    "dd": "2024-02-29",
    "dt": "2024-07-01T12:30:00.250000Z",
    "ts": "2024-01-02T03:04:05.123000Z",
    "t": "-838:59:59",
    "y": 2155,
    "c": "ab",
    "vc": "héllo 🚀",
    "txt": "long text",
    "lat": "café",
    "e": "large",
    "s": ["a", "c"],
    "b": 1023,
    "j": {"k": [1, "two", None, True], "n": {"x": 1.5}},
    "bin": "AP8QIA==",
    "vb": "aGk=",
    "bl": "AAEC",
    "n": None,
}
TYPES_ROW_2 = (
    "INSERT INTO types (id, dd, dt, t, y, s, b, j) VALUES"
    " (2, '0000-00-00', '1999-12-31 23:59:59', '100:00:00.50', 1901, '', b'0', '[]')"
)
TYPES_DOC_2: dict[str, Any] = {
    **{k: None for k in TYPES_DOC_1},
    "id": 2,
    "dd": None,
    "dt": "1999-12-31T23:59:59Z",
    "t": "100:00:00.500000",
    "y": 1901,
    "s": None,
    "b": 0,
    "j": [],
}


def test_every_column_type_becomes_the_documented_json(
    mariadb: MariaDB, osmem: Osmem, fresh_db: str, es_index: str, redis_url: str, tmp_path: Path
) -> None:
    mariadb.sql("SET GLOBAL sql_mode = 'NO_ENGINE_SUBSTITUTION'")
    try:
        mariadb.sql(TYPES_DDL, db=fresh_db)
        config = write_config(
            tmp_path / "c.yaml",
            port=mariadb.port,
            es_url=osmem.url,
            redis_url=redis_url,
            tables=[
                {
                    "table": f"{fresh_db}.types",
                    "index": es_index,
                    "index_mappings": {
                        "properties": {
                            "id": {"type": "unsigned_long"},
                            "j": {"type": "object", "enabled": False},
                        }
                    },
                }
            ],
        )
        run_until_caught_up(config)  # starts from "now": the rows below are new changes
        conn = mariadb.connect(db=fresh_db)
        with conn.cursor() as cur:
            cur.execute("SET time_zone = '+00:00'")
            cur.execute(TYPES_ROW_1)
            cur.execute(TYPES_ROW_2)
            cur.execute("INSERT INTO types (id, vc) VALUES (3, 'to be deleted')")
            cur.execute("DELETE FROM types WHERE id = 3")
        conn.close()
        run_until_caught_up(config)
    finally:
        mariadb.sql("SET GLOBAL sql_mode = DEFAULT")
    docs = osmem.all_docs(es_index)
    assert docs == {"18446744073709551615": TYPES_DOC_1, "2": TYPES_DOC_2}


def _items_snapshot(mariadb: MariaDB, db: str, table: str) -> dict[str, dict[str, Any]]:
    rows = mariadb.query(f"SELECT id, name, qty, price FROM `{table}`", db=db)
    return {str(r[0]): {"id": r[0], "name": r[1], "qty": r[2], "price": str(r[3])} for r in rows}


ITEMS_DDL = (
    "CREATE TABLE {name} (id INT PRIMARY KEY, name VARCHAR(50) NOT NULL, qty INT NOT NULL,"
    " price DECIMAL(10,2) NOT NULL)"
)


def test_inserts_updates_deletes_pk_changes_and_shards_end_equal_to_mysql(
    mariadb: MariaDB, osmem: Osmem, fresh_db: str, es_index: str, redis_url: str, tmp_path: Path
) -> None:
    for name in ("items", "orders_eu", "orders_us", "other"):
        mariadb.sql(ITEMS_DDL.format(name=name), db=fresh_db)
    orders_index = es_index + "_orders"
    config = write_config(
        tmp_path / "c.yaml",
        port=mariadb.port,
        es_url=osmem.url,
        redis_url=redis_url,
        tables=[
            {"table": f"{fresh_db}.items", "index": es_index},
            {"table": f"{fresh_db}.orders_*", "index": orders_index},
        ],
    )
    run_until_caught_up(config)
    conn = mariadb.connect(db=fresh_db, autocommit=False)
    with conn.cursor() as cur:
        # single-row transactions
        for i in range(1, 21):
            cur.execute("INSERT INTO items VALUES (%s, %s, %s, %s)", (i, f"item {i}", i, "1.50"))
            conn.commit()
        # one multi-row transaction with every operation, twice on the same row
        cur.executemany(
            "INSERT INTO items VALUES (%s, %s, %s, %s)",
            [(i, f"bulk {i}", 0, "9.99") for i in range(100, 150)],
        )
        cur.execute("UPDATE items SET qty = qty + 5 WHERE id BETWEEN 100 AND 120")
        cur.execute("UPDATE items SET qty = qty + 1 WHERE id = 100")
        cur.execute("DELETE FROM items WHERE id BETWEEN 140 AND 149")
        conn.commit()
        # primary-key changes, single and multi-row
        cur.execute("UPDATE items SET id = 1000 WHERE id = 5")
        conn.commit()
        cur.execute("UPDATE items SET id = id + 2000, name = 'moved' WHERE id BETWEEN 10 AND 12")
        conn.commit()
        # a row inserted and deleted in one transaction never shows up
        cur.execute("INSERT INTO items VALUES (77, 'ghost', 1, '1.00')")
        cur.execute("DELETE FROM items WHERE id = 77")
        conn.commit()
        # a rolled-back transaction is not in the binlog
        cur.execute("UPDATE items SET name = 'rolled back' WHERE id = 1")
        conn.rollback()
        # sharded tables into one index, and an unmapped table
        cur.execute("INSERT INTO orders_eu VALUES (1, 'eu order', 1, '10.00')")
        cur.execute("INSERT INTO orders_us VALUES (2, 'us order', 2, '20.00')")
        cur.execute("INSERT INTO other VALUES (3, 'not mapped', 3, '30.00')")
        conn.commit()
        cur.execute("UPDATE orders_us SET qty = 22")
        cur.execute("DELETE FROM orders_eu")
        conn.commit()
    conn.close()
    stats = run_until_caught_up(config)
    assert stats.transactions >= 26  # the rolled-back one is not in the binlog
    assert osmem.all_docs(es_index) == _items_snapshot(mariadb, fresh_db, "items")
    expected_orders = _items_snapshot(mariadb, fresh_db, "orders_us")
    assert (
        osmem.all_docs(orders_index)
        == expected_orders
        == {"2": {"id": 2, "name": "us order", "qty": 22, "price": "20.00"}}
    )


def _assert_checkpoint_is_a_commit_boundary(mariadb: MariaDB, config: Path) -> None:
    checkpoint = stored_checkpoint(config)
    assert checkpoint is not None
    pos = checkpoint.position
    assert pos.offset is not None
    events = mariadb.query(f"SHOW BINLOG EVENTS IN '{pos.file}'")
    ending_here = [e for e in events if int(e[4]) == pos.offset]
    assert len(ending_here) == 1, f"no event ends at {pos.file}:{pos.offset}"
    event_type, info = ending_here[0][2], str(ending_here[0][5])
    # An Xid, a COMMIT query, or a standalone (DDL) statement: never inside a transaction.
    assert event_type == "Xid" or (event_type == "Query" and not info.startswith("BEGIN")), (
        event_type,
        info,
    )
    gtid_of_txn = [e for e in events if e[2] == "Gtid" and int(e[4]) < pos.offset][-1]
    assert pos.gtid.endswith(str(gtid_of_txn[5]).split()[-1].split("-")[-1])


def test_restart_after_sigterm_and_kill_9_loses_nothing(
    mariadb: MariaDB, osmem: Osmem, fresh_db: str, es_index: str, redis_url: str, tmp_path: Path
) -> None:
    mariadb.sql(ITEMS_DDL.format(name="items"), db=fresh_db)
    config = write_config(
        tmp_path / "c.yaml",
        port=mariadb.port,
        es_url=osmem.url,
        redis_url=redis_url,
        tables=[{"table": f"{fresh_db}.items", "index": es_index}],
        sink={"bulk": {"flush_interval_ms": 50, "max_actions": 50}},
    )
    run_until_caught_up(config)
    writer = RandomWriter(mariadb, fresh_db, seed=7)
    writer.start()

    with CdcProcess(config) as first:
        wait_for(lambda: osmem.count(es_index) > 20, what="documents to arrive")
        time.sleep(0.5)
        first.terminate()
        assert first.wait(timeout=10) == 0, first.log()
    assert "received SIGTERM, stopping" in first.log()
    _assert_checkpoint_is_a_commit_boundary(mariadb, config)
    time.sleep(0.5)  # writes continue while the connector is down

    with CdcProcess(config) as second:
        before = osmem.count(es_index)
        wait_for(lambda: osmem.count(es_index) > before + 10, what="streaming after restart")
        time.sleep(0.3)
        second.kill()
        second.wait()
    _assert_checkpoint_is_a_commit_boundary(mariadb, config)
    time.sleep(0.5)

    with CdcProcess(config) as third:
        # Until it streams: a SIGTERM before `cdc run` installed its handler would kill it.
        wait_for(lambda: "resuming from checkpoint" in third.log(), what="the third run")
        time.sleep(0.5)
        transactions = writer.finish()
        third.terminate()
        assert third.wait(timeout=10) == 0, third.log()
    stats = run_until_caught_up(config)
    assert transactions > 50
    assert stats.transactions >= 0
    assert osmem.all_docs(es_index) == _items_snapshot(mariadb, fresh_db, "items")
    _assert_checkpoint_is_a_commit_boundary(mariadb, config)


def test_rewinding_the_checkpoint_replays_without_moving_any_document_backwards(
    mariadb: MariaDB, osmem: Osmem, fresh_db: str, es_index: str, redis_url: str, tmp_path: Path
) -> None:
    mariadb.sql(ITEMS_DDL.format(name="items"), db=fresh_db)
    config = write_config(
        tmp_path / "c.yaml",
        port=mariadb.port,
        es_url=osmem.url,
        redis_url=redis_url,
        tables=[{"table": f"{fresh_db}.items", "index": es_index}],
    )
    run_until_caught_up(config)
    for i in range(1, 6):
        mariadb.sql("INSERT INTO items VALUES (%s, 'x', 0, '1.00')", (i,), db=fresh_db)
    run_until_caught_up(config)
    rewind_to = stored_checkpoint(config)
    assert rewind_to is not None

    # After the rewind point: rows 1-3 change many times, 4 is deleted, 6 is new.
    for n in range(1, 31):
        mariadb.sql("UPDATE items SET qty = %s WHERE id IN (1, 2, 3)", (n,), db=fresh_db)
    mariadb.sql("DELETE FROM items WHERE id = 4", db=fresh_db)
    mariadb.sql("INSERT INTO items VALUES (6, 'new', 6, '6.00')", db=fresh_db)
    run_until_caught_up(config)
    final = osmem.all_docs(es_index)
    assert final == _items_snapshot(mariadb, fresh_db, "items")
    assert final["1"]["qty"] == 30

    save_checkpoint(config, rewind_to)
    seen: dict[str, list[int | None]] = {"1": [], "2": [], "3": [], "4": []}
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            for doc_id, history in seen.items():
                doc = osmem.get_doc(es_index, doc_id)
                history.append(doc["_source"]["qty"] if doc else None)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    stats = run_until_caught_up(config)
    done.set()
    watcher.join()

    assert stats.transactions >= 32  # the history after the rewind point was read again
    for doc_id in ("1", "2", "3"):
        assert seen[doc_id] and set(seen[doc_id]) == {30}, (doc_id, seen[doc_id])
    assert set(seen["4"]) == {None}  # the deleted row never came back
    assert osmem.all_docs(es_index) == final == _items_snapshot(mariadb, fresh_db, "items")
