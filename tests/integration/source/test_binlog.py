"""The binlog source against a real MariaDB: commit shapes, positions, and the library's traps."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from harness import CdcProcess, run_until_caught_up, stored_checkpoint, wait_for, write_config
from rig import MariaDB, Osmem

from cdc.config import SourceConfig
from cdc.errors import SourceUnavailable
from cdc.model.events import Begin, Commit, Heartbeat, RowChange
from cdc.source.binlog import BinlogSource
from cdc.source.mysql import connect, current_position, server_info


def _source_config(mariadb: MariaDB, server_id: int = 901) -> SourceConfig:
    return SourceConfig(
        host="127.0.0.1",
        port=mariadb.port,
        user="cdc",
        password="cdc",
        server_id=server_id,
        heartbeat_interval=0.3,
        read_timeout=5,
    )


def _read_until_idle(source: BinlogSource) -> list[object]:
    """Events until the first heartbeat (the server has nothing more to send)."""
    events: list[object] = []
    for event in source.events():
        if isinstance(event, Heartbeat):
            break
        events.append(event)
    source.close()
    return events


def test_each_commit_shape_ends_a_transaction_at_its_own_position(
    mariadb: MariaDB, fresh_db: str
) -> None:
    cfg = _source_config(mariadb)
    conn = connect(cfg)
    info = server_info(conn)
    start = current_position(conn, info)
    conn.close()
    mariadb.sql("CREATE TABLE inno (id INT PRIMARY KEY) ENGINE=InnoDB", db=fresh_db)
    mariadb.sql("CREATE TABLE isam (id INT PRIMARY KEY) ENGINE=MyISAM", db=fresh_db)
    mariadb.sql("INSERT INTO inno VALUES (1), (2)", db=fresh_db)  # ends with an Xid event
    mariadb.sql("INSERT INTO isam VALUES (1)", db=fresh_db)  # ends with a COMMIT query
    mariadb.sql("ALTER TABLE inno ADD COLUMN x INT", db=fresh_db)  # a standalone statement

    source = BinlogSource(cfg, [f"{fresh_db}.*"], start, info)
    events = _read_until_idle(source)

    commits = [e for e in events if isinstance(e, Commit)]
    begins = [e for e in events if isinstance(e, Begin)]
    changes = [e for e in events if isinstance(e, RowChange)]
    assert len(commits) == len(begins) == 5  # 2 CREATE, 2 INSERT, 1 ALTER
    assert [c.changes for c in commits] == [0, 0, 2, 1, 0]
    assert [(c.table.table, c.after) for c in changes] == [
        ("inno", {"id": 1}),
        ("inno", {"id": 2}),
        ("isam", {"id": 1}),
    ]
    # Every commit position is the end of the event that closed the transaction.
    binlog = {
        (str(row[0]), int(row[4])): (row[2], str(row[5]))
        for file in mariadb.binary_logs()
        for row in [(file, *r[1:]) for r in mariadb.query(f"SHOW BINLOG EVENTS IN '{file}'")]
    }
    kinds = []
    for commit in commits:
        event_type, info_text = binlog[(commit.position.file or "", commit.position.offset or 0)]
        statement = info_text.split("; ", 1)[-1] if info_text.startswith("use ") else info_text
        kinds.append("XID" if event_type == "Xid" else statement.split()[0].upper())
    assert kinds == ["CREATE", "CREATE", "XID", "COMMIT", "ALTER"]
    # GTIDs advance by one per transaction and the last one is the server's position.
    seqs = [int(c.position.gtid.split("-")[-1]) for c in commits]
    assert seqs == list(range(seqs[0], seqs[0] + 5))
    conn = connect(cfg)
    assert commits[-1].position.gtid == current_position(conn, info).gtid
    conn.close()


def test_unmapped_tables_are_not_emitted(mariadb: MariaDB, fresh_db: str) -> None:
    cfg = _source_config(mariadb)
    conn = connect(cfg)
    info = server_info(conn)
    start = current_position(conn, info)
    conn.close()
    mariadb.sql("CREATE TABLE wanted (id INT PRIMARY KEY)", db=fresh_db)
    mariadb.sql("CREATE TABLE unwanted (id INT PRIMARY KEY)", db=fresh_db)
    mariadb.sql("INSERT INTO wanted VALUES (1)", db=fresh_db)
    mariadb.sql("INSERT INTO unwanted VALUES (1)", db=fresh_db)
    source = BinlogSource(cfg, [f"{fresh_db}.wanted"], start, info)
    events = _read_until_idle(source)
    tables = [e.table.table for e in events if isinstance(e, RowChange)]
    assert tables == ["wanted"]
    # The unmapped table's transaction still ends in a commit, so the position moves past it.
    assert sum(isinstance(e, Commit) for e in events) == 4


def _kill_binlog_dumps(mariadb: MariaDB) -> int:
    killed = 0
    for (thread_id,) in mariadb.query(
        "SELECT id FROM information_schema.processlist WHERE command LIKE 'Binlog Dump%%'"
    ):
        mariadb.sql(f"KILL {int(thread_id)}")
        killed += 1
    return killed


def test_a_dropped_stream_raises_instead_of_replaying_from_the_start(
    mariadb: MariaDB, fresh_db: str
) -> None:
    cfg = _source_config(mariadb, server_id=902)
    conn = connect(cfg)
    info = server_info(conn)
    start = current_position(conn, info)
    conn.close()
    mariadb.sql("CREATE TABLE t (id INT PRIMARY KEY)", db=fresh_db)
    mariadb.sql("INSERT INTO t VALUES (1)", db=fresh_db)
    source = BinlogSource(cfg, [f"{fresh_db}.t"], start, info)
    seen: list[object] = []
    killer = threading.Timer(1.0, _kill_binlog_dumps, args=(mariadb,))
    killer.start()
    with pytest.raises(SourceUnavailable, match="binlog stream connection was lost"):
        for event in source.events():
            seen.append(event)
    killer.join()
    # The library would have reconnected and delivered the insert again; we got it once.
    assert sum(isinstance(e, RowChange) for e in seen) == 1


def test_a_transaction_cut_in_the_middle_is_read_again_whole(
    mariadb: MariaDB, osmem: Osmem, fresh_db: str, es_index: str, redis_url: str, tmp_path: Path
) -> None:
    mariadb.sql(
        "CREATE TABLE big (id INT PRIMARY KEY, pad VARCHAR(200) NOT NULL, v INT NOT NULL)",
        db=fresh_db,
    )
    config = write_config(
        tmp_path / "c.yaml",
        port=mariadb.port,
        es_url=osmem.url,
        redis_url=redis_url,
        tables=[{"table": f"{fresh_db}.big", "index": es_index}],
        sink={"bulk": {"max_actions": 200, "flush_interval_ms": 50}},
    )
    run_until_caught_up(config)
    before = stored_checkpoint(config)
    assert before is not None
    conn = mariadb.connect(db=fresh_db, autocommit=False)
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO big VALUES (%s, %s, 0)", [(i, "x" * 200) for i in range(1, 20_001)]
        )
        cur.execute("UPDATE big SET v = 1")
    conn.commit()
    conn.close()

    with CdcProcess(config) as proc:
        # Cut the stream as soon as the first part of the transaction reached the index.
        wait_for(lambda: osmem.count(es_index) > 0, timeout=60, what="the first bulk request")
        assert _kill_binlog_dumps(mariadb) == 1
        wait_for(
            lambda: "MySQL binlog stream recovered" in proc.log(), timeout=30, what="reconnect"
        )
        wait_for(
            lambda: getattr(stored_checkpoint(config), "counter", 0) == before.counter + 1,
            timeout=120,
            what="the whole transaction to be acknowledged and checkpointed",
        )
        proc.terminate()
        assert proc.wait(timeout=10) == 0, proc.log()
    log = proc.log()
    assert log.count("MySQL binlog stream unavailable") == 1, log
    docs = osmem.all_docs(es_index)
    assert len(docs) == 20_000
    assert {d["v"] for d in docs.values()} == {1}
    after = stored_checkpoint(config)
    assert after is not None
    assert after.counter == before.counter + 1  # one transaction, counted once
    assert run_until_caught_up(config).transactions == 0


def test_quiet_mapped_tables_still_advance_the_checkpoint(
    mariadb: MariaDB, osmem: Osmem, fresh_db: str, es_index: str, redis_url: str, tmp_path: Path
) -> None:
    mariadb.sql("CREATE TABLE quiet (id INT PRIMARY KEY)", db=fresh_db)
    mariadb.sql("CREATE TABLE busy (id INT PRIMARY KEY)", db=fresh_db)
    config = write_config(
        tmp_path / "c.yaml",
        port=mariadb.port,
        es_url=osmem.url,
        redis_url=redis_url,
        tables=[{"table": f"{fresh_db}.quiet", "index": es_index}],
    )
    run_until_caught_up(config)
    first = stored_checkpoint(config)
    for i in range(20):
        mariadb.sql("INSERT INTO busy VALUES (%s)", (i,), db=fresh_db)
    time.sleep(0.1)
    run_until_caught_up(config)
    second = stored_checkpoint(config)
    assert first is not None and second is not None
    conn = connect(_source_config(mariadb))
    now = current_position(conn, server_info(conn))
    conn.close()
    assert second.position.gtid == now.gtid != first.position.gtid
    assert second.counter == first.counter + 20
