"""Bulk requests in flight against the ES-API stand-in: one request answered late, after the
requests behind it, holds the stored checkpoint back until its answer comes; and over a link
with a 100 ms round trip (`FaultProxy.latency`) that many requests are out at once."""

from __future__ import annotations

import contextlib
import threading
import time
from pathlib import Path

import pytest
from harness import CdcProcess, run_until_caught_up, stored_checkpoint, wait_for, write_config
from rig import MariaDB

from cdc.config import SinkConfig
from cdc.engine.inflight import InFlight, Request
from cdc.sink.bulk import BulkItem
from cdc.sink.elastic import ElasticSink
from cdc.testing import EsStandIn, FaultProxy
from cdc.transform.mapping import Action

LATE_SECONDS = 3.0


def _seq(gtid: str | None) -> int:
    """The sequence number of a one-domain MariaDB GTID position (`0-1-42` -> 42)."""
    assert gtid is not None
    return int(gtid.rsplit("-", 1)[1])


def test_a_request_answered_late_holds_the_checkpoint_until_it_is_answered(
    mariadb: MariaDB, fresh_db: str, tmp_path: Path
) -> None:
    mariadb.sql("CREATE TABLE t (id INT PRIMARY KEY, v INT NOT NULL)", db=fresh_db)
    with EsStandIn() as standin:
        config = write_config(
            tmp_path / "c.yaml",
            port=mariadb.port,
            es_url=standin.url,
            tables=[{"table": f"{fresh_db}.t", "index": "docs"}],
            sink={"bulk": {"max_actions": 2, "flush_interval_ms": 10, "concurrency": 4}},
            checkpoint={"interval_ms": 20},
        )
        run_until_caught_up(config)
        standin.delay_when(lambda _m, _p, body: LATE_SECONDS if b'"_id":"3"' in body else 0.0)
        gtids: dict[int, int] = {}
        with CdcProcess(config) as proc:
            conn = mariadb.connect(database=fresh_db)
            with contextlib.closing(conn), conn.cursor() as cur:
                for i in range(1, 31):
                    cur.execute("INSERT INTO t VALUES (%s, %s)", (i, i))
                    cur.execute("SELECT @@last_gtid")
                    gtids[i] = _seq(cur.fetchone()[0])
            # The stand-in applies a request before it answers: document 3 is there once the
            # late request arrived, and documents after its request once later ones were
            # answered (up to the 3 other requests the connector may have out meanwhile).
            wait_for(lambda: "3" in standin.docs("docs"), 30, "the late request")
            sent = time.monotonic()
            wait_for(
                lambda: max(map(int, standin.docs("docs"))) > 4,
                LATE_SECONDS / 2,
                "the later requests",
            )
            samples = []
            while time.monotonic() < sent + LATE_SECONDS - 0.5:
                checkpoint = stored_checkpoint(config)
                assert checkpoint is not None
                samples.append(_seq(checkpoint.position.gtid))
                time.sleep(0.05)
            assert samples and max(samples) < gtids[3], (samples, gtids[3])
            wait_for(
                lambda: _seq(stored_checkpoint(config).position.gtid) >= gtids[30],  # type: ignore[union-attr]
                15,
                "the checkpoint to pass the late request",
            )
            proc.terminate()
            assert proc.wait() == 0
    assert len(standin.docs("docs")) == 30


def _elapsed(url: str, concurrency: int, requests: int) -> float:
    sink = ElasticSink(SinkConfig(urls=[url], bulk={"concurrency": concurrency}))
    settled: list[Request] = []
    inflight = InFlight(sink, concurrency, threading.Event(), lambda _exc: None, settled.append)
    try:
        started = time.monotonic()
        for n in range(requests):
            items = [
                BulkItem(Action("index", "docs", f"{n}-{i}", {"n": n, "i": i}), 1, "t.t")
                for i in range(50)
            ]
            inflight.send(Request(items))
        assert inflight.drain(60)
        elapsed = time.monotonic() - started
    finally:
        inflight.close()
        sink.close()
    assert len(settled) == requests
    assert all(not r.rejected for r in settled)
    return elapsed


@pytest.mark.parametrize("concurrency", [4, 8])
def test_over_a_100_ms_round_trip_the_requests_overlap_on_the_wire(concurrency: int) -> None:
    """Each sink below starts with no connection, and its pool opens one only when none is
    idle: the connections the proxy saw are the requests that were out at the same time.
    (What that does to throughput is measured by `scripts/bench.sh --es-rtt 100`.)"""
    with EsStandIn(store=False) as standin, FaultProxy(*standin.address) as proxy:
        proxy.latency(0.05)  # each way
        url = f"http://{proxy.address[0]}:{proxy.port}"
        before = proxy.connections_total
        one = _elapsed(url, 1, 16)
        alone = proxy.connections_total - before
        _elapsed(url, concurrency, 16)
        together = proxy.connections_total - before - alone
    assert one >= 16 * 0.1  # the round trip was there: one at a time, 16 of them
    assert alone == 1
    assert together == concurrency
