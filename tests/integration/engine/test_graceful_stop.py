"""Graceful stop (issue 3, item 7): SIGTERM flushes, checkpoints and exits 0 within 10 s, under a
steady write load, and also while Elasticsearch refuses connections or is blackholed (a bulk
request then hangs for the sink's 30 s request timeout, longer than the stop may take).

After each stop the stored checkpoint must name a transaction boundary and cover only what
Elasticsearch acknowledged: every change of every transaction up to the checkpoint is in the
index. A writer records the GTID of each transaction it commits and what it did, so the state
the checkpoint claims can be rebuilt and compared with the index. Finally a restart against a
working sink brings the index to equal MySQL.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from harness import (
    CdcProcess,
    run_until_caught_up,
    stored_checkpoint,
    wait_for,
    write_config,
)
from rig import MariaDB

from cdc.testing import EsStandIn, FaultProxy

INDEX = "items"
STOP_LIMIT_SECONDS = 10.0
DDL = "CREATE TABLE items (id INT PRIMARY KEY, qty INT NOT NULL, pad VARCHAR(100) NOT NULL)"

# What one committed transaction did: ("upsert", id, qty) or ("delete", id, None), in order.
Effect = tuple[str, int, int | None]


class LoggedWriter(threading.Thread):
    """Transactions of 1-3 inserts, `qty + 1` updates and deletes on `items`, each logged with
    the GTID sequence number MariaDB gave it. Ids are never reused and `qty` only grows, so a
    document older than the row it mirrors is always recognisable."""

    def __init__(self, mariadb: MariaDB, db: str, seed: int) -> None:
        super().__init__(daemon=True)
        self.mariadb = mariadb
        self.db = db
        self.rng = random.Random(seed)
        self.stop = threading.Event()
        self.log: list[tuple[int, list[Effect]]] = []
        self.qty: dict[int, int] = {}
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            conn = self.mariadb.connect(database=self.db, autocommit=False)
            next_id = 1
            with conn.cursor() as cur:
                while not self.stop.is_set():
                    effects: list[Effect] = []
                    for _ in range(self.rng.randint(1, 3)):
                        roll = self.rng.random()
                        if roll < 0.45 or len(self.qty) < 10:
                            cur.execute(
                                "INSERT INTO items VALUES (%s, 0, %s)", (next_id, f"row {next_id}")
                            )
                            effects.append(("upsert", next_id, 0))
                            self.qty[next_id] = 0
                            next_id += 1
                        elif roll < 0.9:
                            target = self.rng.choice(list(self.qty))
                            cur.execute("UPDATE items SET qty = qty + 1 WHERE id = %s", (target,))
                            self.qty[target] += 1
                            effects.append(("upsert", target, self.qty[target]))
                        else:
                            target = self.rng.choice(list(self.qty))
                            cur.execute("DELETE FROM items WHERE id = %s", (target,))
                            del self.qty[target]
                            effects.append(("delete", target, None))
                    conn.commit()
                    cur.execute("SELECT @@last_gtid")
                    (gtid,) = cur.fetchone()
                    self.log.append((int(str(gtid).rsplit("-", 1)[1]), effects))
                    time.sleep(0.003)
            conn.close()
        except BaseException as exc:
            self.error = exc

    def finish(self) -> int:
        self.stop.set()
        self.join(timeout=30)
        assert self.error is None, self.error
        return len(self.log)


def _docs(mariadb: MariaDB, db: str) -> dict[str, dict[str, Any]]:
    rows = mariadb.query("SELECT id, qty, pad FROM items", db=db)
    return {str(i): {"id": i, "qty": q, "pad": p} for i, q, p in rows}


def _checkpoint_seq(config: Path) -> int:
    checkpoint = stored_checkpoint(config)
    assert checkpoint is not None
    (seq,) = [int(part.split("-")[2]) for part in checkpoint.position.gtid.split(",")]
    return seq


def _assert_commit_boundary(mariadb: MariaDB, config: Path) -> None:
    """The checkpoint's file offset is the end of a transaction's last event (an Xid, or a
    standalone statement), and its GTID is that transaction's."""
    checkpoint = stored_checkpoint(config)
    assert checkpoint is not None
    pos = checkpoint.position
    assert pos.offset is not None
    events = mariadb.query(f"SHOW BINLOG EVENTS IN '{pos.file}'")
    ending_here = [e for e in events if int(e[4]) == pos.offset]
    assert len(ending_here) == 1, f"no event ends at {pos.file}:{pos.offset}"
    event_type, info = ending_here[0][2], str(ending_here[0][5])
    assert event_type == "Xid" or (event_type == "Query" and not info.startswith("BEGIN")), (
        event_type,
        info,
    )
    gtid_events = [e for e in events if e[2] == "Gtid" and int(e[4]) < pos.offset]
    assert gtid_events, "no transaction starts before the checkpoint in its file"
    seq = str(gtid_events[-1][5]).split()[-1].split("-")[-1]
    assert pos.gtid.split("-")[-1] == seq, (pos.gtid, gtid_events[-1])


def _assert_index_covers_checkpoint(
    standin: EsStandIn, writer: LoggedWriter, checkpoint_seq: int
) -> int:
    """Every change of every transaction up to the checkpoint is in the index (a document may
    be newer, never older; a row deleted by then is absent). Returns how many of the writer's
    transactions the checkpoint covers."""
    state: dict[int, int | None] = {}
    deleted_later: set[int] = set()
    covered = 0
    for seq, effects in list(writer.log):
        for op, row_id, qty in effects:
            if seq <= checkpoint_seq:
                state[row_id] = qty if op == "upsert" else None
            elif op == "delete":
                deleted_later.add(row_id)
        covered += seq <= checkpoint_seq
    docs = standin.docs(INDEX)
    for row_id, qty in state.items():
        doc = docs.get(str(row_id))
        if qty is None:
            assert doc is None, f"row {row_id} was deleted by the checkpoint but is indexed"
        elif doc is None:
            assert row_id in deleted_later, f"row {row_id} (qty {qty}) is missing from the index"
        else:
            assert doc["qty"] >= qty, f"row {row_id}: index has qty {doc['qty']}, checkpoint {qty}"
    return covered


def _config(tmp_path: Path, mariadb: MariaDB, es_url: str, redis_url: str, db: str) -> Path:
    mariadb.sql(DDL, db=db)
    return write_config(
        tmp_path / "c.yaml",
        port=mariadb.port,
        es_url=es_url,
        redis_url=redis_url,
        tables=[{"table": f"{db}.items", "index": INDEX}],
        # The defaults: a request to a blackholed cluster waits 30 s, longer than a stop may.
        sink={"request_timeout": 30, "max_backoff": 30},
    )


def _stop(proc: CdcProcess) -> float:
    """SIGTERM; asserts exit status 0 within the limit and returns how long the stop took."""
    started = time.monotonic()
    proc.terminate()
    status = proc.wait(timeout=STOP_LIMIT_SECONDS + 20)
    took = time.monotonic() - started
    assert status == 0, proc.log()
    assert took < STOP_LIMIT_SECONDS, f"the stop took {took:.1f} s\n{proc.log()}"
    assert "received SIGTERM, stopping" in proc.log()
    return took


def _finish(
    mariadb: MariaDB, standin: EsStandIn, writer: LoggedWriter, db: str, config: Path
) -> tuple[int, int]:
    """Check the stored checkpoint, then let the writer stop, restart against a working sink
    and compare the index with MySQL. Returns (transactions covered, transactions written)."""
    _assert_commit_boundary(mariadb, config)
    covered = _assert_index_covers_checkpoint(standin, writer, _checkpoint_seq(config))
    time.sleep(0.5)  # writes go on while the connector is stopped
    written = writer.finish()
    run_until_caught_up(config)
    assert standin.docs(INDEX) == _docs(mariadb, db)
    return covered, written


@pytest.fixture
def standin() -> Iterator[EsStandIn]:
    with EsStandIn(store=True) as server:
        yield server.start()


def test_sigterm_under_a_steady_write_load(
    mariadb: MariaDB, standin: EsStandIn, fresh_db: str, redis_url: str, tmp_path: Path
) -> None:
    config = _config(tmp_path, mariadb, standin.url, redis_url, fresh_db)
    run_until_caught_up(config)
    writer = LoggedWriter(mariadb, fresh_db, seed=1)
    writer.start()
    with CdcProcess(config) as proc:
        wait_for(lambda: len(standin.docs(INDEX)) > 100, what="documents to stream")
        time.sleep(1.0)
        took = _stop(proc)
    covered, written = _finish(mariadb, standin, writer, fresh_db, config)
    print(f"\nstopped in {took:.2f} s; checkpoint covered {covered} of {written} transactions")
    assert covered > 50


def test_sigterm_while_elasticsearch_refuses_connections(
    mariadb: MariaDB, standin: EsStandIn, fresh_db: str, redis_url: str, tmp_path: Path
) -> None:
    config = _config(tmp_path, mariadb, standin.url, redis_url, fresh_db)
    run_until_caught_up(config)
    writer = LoggedWriter(mariadb, fresh_db, seed=2)
    writer.start()
    with CdcProcess(config) as proc:
        wait_for(lambda: len(standin.docs(INDEX)) > 100, what="documents to stream")
        standin.down()
        wait_for(lambda: "Elasticsearch unavailable" in proc.log(), what="the outage to be seen")
        time.sleep(2.0)
        took = _stop(proc)
    acknowledged = len(standin.docs(INDEX))
    standin.up()
    covered, written = _finish(mariadb, standin, writer, fresh_db, config)
    print(
        f"\nstopped in {took:.2f} s with Elasticsearch down; checkpoint covered {covered} of "
        f"{written} transactions ({acknowledged} documents acknowledged before the outage)"
    )
    assert covered > 50


def test_sigterm_while_elasticsearch_is_blackholed(
    mariadb: MariaDB, standin: EsStandIn, fresh_db: str, redis_url: str, tmp_path: Path
) -> None:
    with FaultProxy("127.0.0.1", standin.port) as proxy:
        proxy.start()
        config = _config(tmp_path, mariadb, f"http://127.0.0.1:{proxy.port}", redis_url, fresh_db)
        run_until_caught_up(config)
        writer = LoggedWriter(mariadb, fresh_db, seed=3)
        writer.start()
        with CdcProcess(config) as proc:
            # Two requests: requests are sent one at a time, so the second one arriving means
            # the connector has read the answer to the first (one still in the proxy when the
            # black hole starts would be lost, and so would the acknowledgement it carries).
            wait_for(
                lambda: len(standin.docs(INDEX)) > 100 and standin.bulk_requests >= 2,
                what="documents to stream",
            )
            proxy.blackhole()
            requests = standin.bulk_requests
            time.sleep(2.0)  # a bulk request is now waiting for an answer that never comes
            assert standin.bulk_requests == requests, "the black hole let a request through"
            took = _stop(proc)
        proxy.pass_through()
        covered, written = _finish(mariadb, standin, writer, fresh_db, config)
    print(
        f"\nstopped in {took:.2f} s with Elasticsearch blackholed; checkpoint covered "
        f"{covered} of {written} transactions"
    )
    assert covered > 50
