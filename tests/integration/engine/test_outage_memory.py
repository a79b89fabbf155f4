"""Memory stays bounded through a long Elasticsearch outage (issue 3, item 3 and its acceptance
test): a 2-minute outage under a steady write load of ~300 rows/s of ~1 KB rows.

While Elasticsearch is down the connector holds its pending batch and stops reading the binlog
once its event queue (20,000 events) is full, so its memory must level off instead of growing
with the outage. The test samples the connector's resident set size every second and asserts
that the peak during the outage stays below `RSS_BOUND_MB` and that the second half of the
outage adds no more than `PLATEAU_SLACK_MB` to the peak of the first half.

Measured here (CPython 3.11, MariaDB 10.11, 2 CPUs): baseline 65 MB; during the outage RSS grows
~0.7 MB/s while the queue fills (5 events per 3-row transaction: full after ~40 s), then stays
flat at 92 MB to the end. The bound, 150 MB, is that peak with a 60 % margin for other machines
and allocators. Growth that never levelled off would add some 40 MB in the second half of the
outage and fail the plateau check even below the bound. The queue is bounded in events, not
bytes: with larger rows the plateau rises with them.

A MariaDB server may drop the stalled replication connection after `net_write_timeout` (60 s);
the connector then reconnects from its last commit by itself. Either way the log must show
exactly one "Elasticsearch unavailable" and one "Elasticsearch recovered" line, and after the
outage the index must equal MySQL.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from harness import CdcProcess, run_until_caught_up, wait_for, write_config
from rig import MariaDB

from cdc.testing import EsStandIn

INDEX = "rows"
RSS_BOUND_MB = 150.0
PLATEAU_SLACK_MB = 15.0
OUTAGE_SECONDS = 120.0
WARM_UP_SECONDS = 15.0
ROWS_PER_SECOND = 300
ROWS_PER_TRANSACTION = 3
BODY_BYTES = 1000
DDL = "CREATE TABLE rows_ (id INT PRIMARY KEY, n INT NOT NULL, body VARCHAR(1000) NOT NULL)"


def _rss_mb(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except FileNotFoundError:
        return None
    return None


class RssSampler(threading.Thread):
    """Samples a process's VmRSS once a second: (seconds since start, MB)."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.samples: list[tuple[float, float]] = []
        self.stop = threading.Event()
        self._t0 = time.monotonic()

    def run(self) -> None:
        while not self.stop.is_set():
            rss = _rss_mb(self.pid)
            if rss is not None:
                self.samples.append((time.monotonic() - self._t0, rss))
            self.stop.wait(1.0)

    def between(self, start: float, end: float) -> list[float]:
        return [rss for t, rss in list(self.samples) if start <= t <= end]

    def now(self) -> float:
        return time.monotonic() - self._t0


class SteadyWriter(threading.Thread):
    """~ROWS_PER_SECOND row changes a second, in transactions of ROWS_PER_TRANSACTION: half
    inserts of new ~1 KB rows, half updates of earlier ones (which carry both row images).
    Paced against the clock, so a slow moment is made up for and the rate stays steady."""

    def __init__(self, mariadb: MariaDB, db: str) -> None:
        super().__init__(daemon=True)
        self.mariadb = mariadb
        self.db = db
        self.stop = threading.Event()
        self.rows = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            conn = self.mariadb.connect(database=self.db, autocommit=False)
            interval = ROWS_PER_TRANSACTION / ROWS_PER_SECOND
            started = time.monotonic()
            next_id = 1
            transactions = 0
            with conn.cursor() as cur:
                while not self.stop.is_set():
                    for k in range(ROWS_PER_TRANSACTION):
                        if k % 2 == 0 or next_id < 100:
                            body = (f"{next_id:08d}" * (BODY_BYTES // 8 + 1))[:BODY_BYTES]
                            cur.execute("INSERT INTO rows_ VALUES (%s, 0, %s)", (next_id, body))
                            next_id += 1
                        else:
                            target = (transactions * 7919) % (next_id - 1) + 1
                            cur.execute("UPDATE rows_ SET n = n + 1 WHERE id = %s", (target,))
                    conn.commit()
                    self.rows += ROWS_PER_TRANSACTION
                    transactions += 1
                    delay = started + transactions * interval - time.monotonic()
                    if delay > 0:
                        time.sleep(delay)
            conn.close()
        except BaseException as exc:
            self.error = exc

    def finish(self) -> None:
        self.stop.set()
        self.join(timeout=30)
        assert self.error is None, self.error


def _docs(mariadb: MariaDB, db: str) -> dict[str, dict[str, Any]]:
    rows = mariadb.query("SELECT id, n, body FROM rows_", db=db)
    return {str(i): {"id": i, "n": n, "body": b} for i, n, b in rows}


@pytest.fixture
def standin() -> Iterator[EsStandIn]:
    with EsStandIn(store=True) as server:
        yield server.start()


@pytest.mark.slow
def test_a_two_minute_elasticsearch_outage_keeps_memory_bounded(
    mariadb: MariaDB, standin: EsStandIn, fresh_db: str, redis_url: str, tmp_path: Path
) -> None:
    mariadb.sql(DDL, db=fresh_db)
    config = write_config(
        tmp_path / "c.yaml",
        port=mariadb.port,
        es_url=standin.url,
        redis_url=redis_url,
        tables=[{"table": f"{fresh_db}.rows_", "index": INDEX}],
        sink={"request_timeout": 10, "max_backoff": 2},
    )
    run_until_caught_up(config)
    writer = SteadyWriter(mariadb, fresh_db)
    writer.start()
    with CdcProcess(config) as proc:
        sampler = RssSampler(proc.proc.pid)
        sampler.start()
        wait_for(lambda: len(standin.docs(INDEX)) > 500, what="rows to stream")
        time.sleep(WARM_UP_SECONDS)
        baseline = max(sampler.between(sampler.now() - 5, sampler.now()))

        standin.down()
        outage_started = sampler.now()
        rows_before = writer.rows
        time.sleep(OUTAGE_SECONDS)
        outage = sampler.between(outage_started, sampler.now())
        rows_during = writer.rows - rows_before
        assert proc.proc.poll() is None, proc.log()

        writer.finish()
        up_at = time.monotonic()
        standin.up()
        expected = _docs(mariadb, fresh_db)
        wait_for(
            lambda: len(standin.docs(INDEX)) == len(expected) and standin.docs(INDEX) == expected,
            timeout=180,
            what="the index to equal MySQL after the outage",
        )
        catch_up = time.monotonic() - up_at
        sampler.stop.set()
        assert proc.proc.poll() is None, proc.log()
        proc.terminate()
        assert proc.wait(timeout=10) == 0, proc.log()
    log = proc.log()

    peak = max(outage)
    half = len(outage) // 2
    first_half, second_half = max(outage[:half]), max(outage[half:])
    source_drops = log.count("MySQL binlog stream unavailable")
    timeline = ", ".join(f"{rss:.0f}" for rss in outage[::10])
    print(
        f"\nRSS baseline {baseline:.1f} MB, peak during the {OUTAGE_SECONDS:.0f} s outage "
        f"{peak:.1f} MB (bound {RSS_BOUND_MB:.0f} MB); every 10 s: {timeline}\n"
        f"{rows_during} rows written during the outage ({rows_during / OUTAGE_SECONDS:.0f}/s); "
        f"{len(expected)} documents; caught up {catch_up:.1f} s after Elasticsearch returned; "
        f"the binlog connection was dropped and re-opened {source_drops} time(s)"
    )
    assert rows_during >= 0.8 * ROWS_PER_SECOND * OUTAGE_SECONDS, "the write load was not steady"
    assert len(outage) >= OUTAGE_SECONDS * 0.9, "RSS was not sampled through the outage"
    assert peak < RSS_BOUND_MB, f"peak RSS {peak:.1f} MB"
    assert second_half - first_half < PLATEAU_SLACK_MB, (
        f"RSS kept growing: {first_half:.1f} MB in the first half of the outage, "
        f"{second_half:.1f} MB in the second"
    )
    assert log.count("Elasticsearch unavailable") == 1, log
    assert log.count("Elasticsearch recovered after") == 1, log
