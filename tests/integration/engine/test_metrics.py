"""The Prometheus endpoint of a running connector."""

from __future__ import annotations

import time
import urllib.request
from pathlib import Path

from harness import CdcProcess, run_until_caught_up, wait_for, write_config
from prometheus_client.parser import text_string_to_metric_families
from rig import MariaDB, free_port

from cdc.testing import EsStandIn


def _scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_metrics_move_while_streaming_and_report_lag(
    mariadb: MariaDB, fresh_db: str, redis_url: str, tmp_path: Path
) -> None:
    mariadb.sql("CREATE TABLE t (id INT PRIMARY KEY, v INT NOT NULL)", db=fresh_db)
    port = free_port()
    with EsStandIn() as standin:
        standin.start()
        config = write_config(
            tmp_path / "c.yaml",
            port=mariadb.port,
            es_url=standin.url,
            redis_url=redis_url,
            tables=[{"table": f"{fresh_db}.t", "index": "docs"}],
            sink={"bulk": {"max_actions": 5, "flush_interval_ms": 20}},
            metrics={"host": "127.0.0.1", "port": port},
        )
        run_until_caught_up(config)
        for i in range(60):
            mariadb.sql("INSERT INTO t VALUES (%s, 0)", (i,), db=fresh_db)
        mariadb.sql("UPDATE t SET v = 1 WHERE id < 10", db=fresh_db)
        time.sleep(2.2)  # the backlog is now more than two seconds old
        standin.slow(0.2)  # 12+ requests of 5 items: several seconds of catching up
        with CdcProcess(config) as proc:
            wait_for(lambda: "metrics on http" in proc.log(), what="the metrics endpoint")
            wait_for(lambda: standin.items.get("created", 0) > 0, what="the first bulk request")
            during = _scrape(port)
            standin.slow(0)
            wait_for(lambda: len(standin.docs("docs")) == 60, what="all documents")
            wait_for(
                lambda: _scrape(port)[("cdc_replication_lag_seconds", ())] == 0.0,
                what="lag to drop to zero once caught up",
            )
            after = _scrape(port)
            proc.terminate()
            assert proc.wait(timeout=10) == 0, proc.log()

    table = f"{fresh_db}.t"
    assert during[("cdc_replication_lag_seconds", ())] >= 2.0
    assert during[("cdc_up", ())] == 1.0
    assert after[("cdc_changes_total", (("op", "insert"), ("table", table)))] == 60
    assert after[("cdc_changes_total", (("op", "update"), ("table", table)))] == 10
    assert after[("cdc_transactions_total", ())] >= 61
    assert after[("cdc_documents_total", (("outcome", "ok"),))] == 70
    assert after[("cdc_bulk_request_seconds_count", ())] >= 14
    assert (
        after[("cdc_bulk_request_seconds_sum", ())] > during[("cdc_bulk_request_seconds_sum", ())]
    )
    assert after[("cdc_checkpoint_age_seconds", ())] < 5
    assert after[("cdc_degraded", (("component", "sink"),))] == 0
    assert after[("cdc_dead_letters", ())] == 0
