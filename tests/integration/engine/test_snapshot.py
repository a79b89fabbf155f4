"""Snapshots of big tables while a writer keeps changing them, crashes mid-snapshot, and tables
without a usable key."""

from __future__ import annotations

import random
import subprocess
import sys
import threading
import time
from pathlib import Path

from harness import CdcProcess, run_until_caught_up, wait_for, write_config
from rig import MariaDB

from cdc.config import load_config
from cdc.state.backends import open_stores
from cdc.testing import EsStandIn

ROWS = 200_000
DDL = (
    "CREATE TABLE big (id INT PRIMARY KEY, name VARCHAR(40) NOT NULL, qty INT NOT NULL,"
    " note VARCHAR(100) NULL)"
)


def _fill(mariadb: MariaDB, db: str, rows: int) -> None:
    mariadb.sql(DDL, db=db)
    mariadb.sql(
        f"INSERT INTO big SELECT seq, CONCAT('row ', seq), 0, NULL FROM seq_1_to_{rows}", db=db
    )


def _rows(mariadb: MariaDB, db: str) -> dict[str, dict[str, object]]:
    return {
        str(r[0]): {"id": r[0], "name": r[1], "qty": r[2], "note": r[3]}
        for r in mariadb.query("SELECT id, name, qty, note FROM big", db=db)
    }


class _Writer(threading.Thread):
    """Updates, deletes, inserts and primary-key changes all over the table until stopped."""

    def __init__(self, mariadb: MariaDB, db: str, rows: int) -> None:
        super().__init__(daemon=True)
        self.mariadb, self.db, self.rows = mariadb, db, rows
        self.stop_event = threading.Event()
        self.counts = {"update": 0, "delete": 0, "insert": 0, "move": 0}
        self.error: BaseException | None = None

    def run(self) -> None:
        rng = random.Random(5)
        next_id = self.rows + 1
        try:
            conn = self.mariadb.connect(database=self.db, autocommit=True)
            with conn.cursor() as cur:
                while not self.stop_event.is_set():
                    roll, target = rng.random(), rng.randint(1, self.rows)
                    if roll < 0.6:
                        cur.execute(
                            "UPDATE big SET qty = qty + 1, note = 'w' WHERE id = %s", target
                        )
                        self.counts["update"] += 1
                    elif roll < 0.75:
                        cur.execute("DELETE FROM big WHERE id = %s", target)
                        self.counts["delete"] += 1
                    elif roll < 0.9:
                        cur.execute("INSERT INTO big VALUES (%s, 'new', 1, NULL)", next_id)
                        next_id += 1
                        self.counts["insert"] += 1
                    else:
                        cur.execute(
                            "UPDATE IGNORE big SET id = %s WHERE id = %s", (next_id, target)
                        )
                        next_id += 1
                        self.counts["move"] += 1
                    time.sleep(0.001)
            conn.close()
        except BaseException as exc:
            self.error = exc

    def finish(self) -> dict[str, int]:
        self.stop_event.set()
        self.join(30)
        assert self.error is None, self.error
        return self.counts


def test_a_200k_row_table_is_copied_while_it_changes(
    mariadb: MariaDB, fresh_db: str, redis_url: str, tmp_path: Path
) -> None:
    _fill(mariadb, fresh_db, ROWS)
    with EsStandIn() as standin:
        standin.start()
        config = write_config(
            tmp_path / "c.yaml",
            port=mariadb.port,
            es_url=standin.url,
            redis_url=redis_url,
            tables=[{"table": f"{fresh_db}.big", "index": "big"}],
            snapshot={"mode": "never", "chunk_size": 5000},
        )
        run_until_caught_up(config)
        writer = _Writer(mariadb, fresh_db, ROWS)
        writer.start()
        with CdcProcess(config) as proc:
            wait_for(lambda: "resuming from checkpoint" in proc.log(), what="the connector")
            time.sleep(0.5)
            started = time.monotonic()
            result = subprocess.run(
                [sys.executable, "-m", "cdc", "snapshot", "--config", str(config), "--all"],
                capture_output=True,
                text=True,
                timeout=600,
            )
            seconds = time.monotonic() - started
            assert result.returncode == 0, result.stdout + result.stderr
            assert "the running connector (pid" in result.stdout
            assert f"{fresh_db}.big: [####################]" in result.stdout
            counts = writer.finish()
            wait_for(
                lambda: standin.docs("big") == _rows(mariadb, fresh_db),
                timeout=120,
                what="the index to equal MySQL",
            )
            proc.terminate()
            assert proc.wait(timeout=10) == 0, proc.log()
    print(
        f"\nsnapshot of {ROWS:,} rows in {seconds:.1f} s ({ROWS / seconds:,.0f} rows/s) while "
        f"the writer made {counts}"
    )
    assert counts["delete"] > 50 and counts["move"] > 20


def test_a_crash_mid_snapshot_resumes_from_the_last_completed_chunk(
    mariadb: MariaDB, fresh_db: str, redis_url: str, tmp_path: Path
) -> None:
    rows, chunk = 60_000, 2_000
    _fill(mariadb, fresh_db, rows)
    with EsStandIn() as standin:
        standin.start()
        standin.slow(0.05)  # keep the first run busy long enough to be killed mid-way
        config = write_config(
            tmp_path / "c.yaml",
            port=mariadb.port,
            es_url=standin.url,
            redis_url=redis_url,
            tables=[{"table": f"{fresh_db}.big", "index": "big"}],
            snapshot={"mode": "initial", "chunk_size": chunk},
        )
        with CdcProcess(config) as first:
            wait_for(
                lambda: int(str(_state(config).get("rows_done", 0))) >= rows // 3,
                timeout=120,
                what="a third of the snapshot",
            )
            first.kill()
            first.wait()
        at_crash = _state(config)
        assert at_crash["state"] == "running"
        done_at_crash = int(str(at_crash["rows_done"]))
        read_at_crash = int(str(at_crash["rows_read"]))
        standin.slow(0)
        mariadb.sql("UPDATE big SET qty = 7 WHERE id % 1000 = 0", db=fresh_db)
        stats = run_until_caught_up(config, timeout=300)
        final = _state(config)
        docs = standin.docs("big")
    assert final["state"] == "done"
    read_again = int(str(final["rows_read"])) - read_at_crash
    print(
        f"\ncrash after {done_at_crash:,} acknowledged rows; the restart read {read_again:,} "
        f"rows ({stats.snapshot_rows:,} copied)"
    )
    assert 0 < done_at_crash < rows
    # Only the rows after the last completed chunk were read again.
    assert read_again == rows - done_at_crash
    assert docs == _rows(mariadb, fresh_db)


def _state(config: Path) -> dict[str, object]:
    with open_stores(load_config(config)) as stores:
        states = stores.snapshots.load_all()
    return next(iter(states.values())).to_dict() if states else {}


def test_a_table_without_a_usable_key_is_refused_by_name(
    mariadb: MariaDB, fresh_db: str, redis_url: str, es_url: str, tmp_path: Path
) -> None:
    mariadb.sql("CREATE TABLE log (at DATETIME, line TEXT)", db=fresh_db)
    mariadb.sql("CREATE TABLE keyed (code VARCHAR(10) NOT NULL, UNIQUE KEY (code))", db=fresh_db)
    mariadb.sql("INSERT INTO keyed VALUES ('a'), ('b')", db=fresh_db)
    config = write_config(
        tmp_path / "c.yaml",
        port=mariadb.port,
        es_url=es_url,
        redis_url=redis_url,
        tables=[
            {"table": f"{fresh_db}.log", "index": "log_nokey", "id_columns": ["at"]},
            {"table": f"{fresh_db}.keyed", "index": "keyed_unique", "id_columns": ["code"]},
        ],
    )
    run_until_caught_up(config)
    result = subprocess.run(
        [sys.executable, "-m", "cdc", "snapshot", "--config", str(config), "--all"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert (
        f"{fresh_db}.log has neither a primary key nor a unique key on NOT NULL columns"
        in result.stderr
    )
    with open_stores(load_config(config)) as stores:
        states = stores.snapshots.load_all()
    assert states[f"{fresh_db}.keyed"].state == "done"  # a unique NOT NULL key will do


def test_a_snapshot_across_an_alter_table_reads_the_new_columns(
    mariadb: MariaDB, fresh_db: str, redis_url: str, tmp_path: Path
) -> None:
    rows, chunk = 6_000, 200
    _fill(mariadb, fresh_db, rows)
    with EsStandIn() as standin:
        standin.start()
        config = write_config(
            tmp_path / "c.yaml",
            port=mariadb.port,
            es_url=standin.url,
            redis_url=redis_url,
            tables=[{"table": f"{fresh_db}.big", "index": "big"}],
            snapshot={"mode": "initial", "chunk_size": chunk, "max_rows_per_second": 2_000},
        )
        with CdcProcess(config) as proc:
            wait_for(
                lambda: int(str(_state(config).get("rows_done", 0))) >= rows // 4,
                timeout=60,
                what="a quarter of the snapshot",
            )
            mariadb.sql("ALTER TABLE big DROP COLUMN note, ADD COLUMN color CHAR(3)", db=fresh_db)
            mariadb.sql("UPDATE big SET color = 'red'", db=fresh_db)
            altered_at = int(str(_state(config).get("rows_done", 0)))
            wait_for(
                lambda: _state(config).get("state") in ("done", "failed"),
                timeout=60,
                what="the end of the snapshot",
            )
            final = _state(config)
            assert final["state"] == "done", (final, proc.log())
            # The UPDATE after the ALTER streams every row again: the index equals MySQL.
            want = {
                str(r[0]): {"id": r[0], "name": r[1], "qty": r[2], "color": r[3]}
                for r in mariadb.query("SELECT id, name, qty, color FROM big", db=fresh_db)
            }
            wait_for(lambda: standin.docs("big") == want, timeout=60, what="the index")
            proc.terminate()
            assert proc.wait(timeout=10) == 0, proc.log()
    assert 0 < altered_at < rows


def _lease_holder_pid(config: Path) -> int | None:
    with open_stores(load_config(config)) as stores:
        assert stores.lease is not None
        holder = stores.lease.holder()
    return None if holder is None else int(holder.split(":")[1])


def _progress_state(config: Path, table: str) -> str | None:
    with open_stores(load_config(config)) as stores:
        progress = stores.snapshots.load_all().get(table)
    return None if progress is None else progress.state


def test_a_snapshot_goes_through_the_lease_of_ha_connectors(
    mariadb: MariaDB, fresh_db: str, redis_url: str, tmp_path: Path
) -> None:
    """Run by the command, a snapshot holds the lease: an HA connector started meanwhile waits
    as a standby and takes over when it ends. With an active connector, the command leaves
    the work to it."""
    _fill(mariadb, fresh_db, 60_000)
    with EsStandIn() as standin:
        standin.start()
        config = write_config(
            tmp_path / "c.yaml",
            port=mariadb.port,
            es_url=standin.url,
            redis_url=redis_url,
            tables=[{"table": f"{fresh_db}.big", "index": "big"}],
            snapshot={"mode": "never", "chunk_size": 1000},
            ha={"enabled": True, "lease_ttl": 2},
        )
        run_until_caught_up(config)
        command = [sys.executable, "-m", "cdc", "snapshot", "--config", str(config), "--all"]
        here = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        wait_for(lambda: _lease_holder_pid(config) == here.pid, 60, "the command's lease")
        with CdcProcess(config) as proc:
            wait_for(lambda: "standby:" in proc.log(), 30, "the connector to wait as a standby")
            assert here.poll() is None, "the snapshot ended before the connector started"
            # Holder first, then progress: a snapshot not yet done when the progress was read
            # was not done when the holder was read either, so the command held the lease.
            during = []
            while here.poll() is None:
                holder = _lease_holder_pid(config)
                if _progress_state(config, f"{fresh_db}.big") != "done":
                    during.append(holder)
                time.sleep(0.1)
            output, _ = here.communicate(timeout=300)
            assert here.returncode == 0, output.decode()
            assert during and set(during) == {here.pid}, during
            wait_for(lambda: "took the lease" in proc.log(), 10, "the connector to take over")
            assert _lease_holder_pid(config) == proc.proc.pid
            assert standin.docs("big") == _rows(mariadb, fresh_db)

            mariadb.sql("UPDATE big SET note = 'again'", db=fresh_db)
            deferred = subprocess.run(command, capture_output=True, text=True, timeout=300)
            assert deferred.returncode == 0, deferred.stdout + deferred.stderr
            assert "the active connector (" in deferred.stdout
            assert "holds the lease) performs it" in deferred.stdout
            assert "60,000/" in deferred.stdout and "(100%) done" in deferred.stdout
            wait_for(
                lambda: standin.docs("big") == _rows(mariadb, fresh_db),
                60,
                "the index to equal MySQL",
            )
            proc.terminate()
            assert proc.wait(timeout=20) == 0, proc.log()
