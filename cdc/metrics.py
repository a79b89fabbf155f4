"""Prometheus metrics of one connector process, served on `/metrics`.

Each `Metrics` owns its registry (several pipelines can live in one test process). Names:

    cdc_up                              1 while streaming normally, 0 while degraded or stopped
    cdc_degraded{component}             1 while that link (source, sink, checkpoint) is down
    cdc_changes_total{table,op}         row changes read from the binlog, by table and operation
    cdc_transactions_total              transactions read (mapped tables or not)
    cdc_documents_total{outcome}        bulk items by outcome: ok, stale, retried, rejected
    cdc_bulk_request_seconds            latency of each `_bulk` request (histogram)
    cdc_replication_lag_seconds         now - commit time of the last transaction read; 0 when idle
    cdc_checkpoint_age_seconds          seconds since the checkpoint was last written
    cdc_dead_letters                    documents parked in the dead-letter queue
    cdc_reconnects_total{component}     link failures by component
    cdc_snapshot_rows{table}            rows copied so far by a table's snapshot
    cdc_verify_mismatches{index,kind}   documents the last verification pass found missing,
                                        different, extra or changing
    cdc_verify_rows_total               rows compared by verification passes
    cdc_verify_repaired_total           documents verification repaired (`verify.repair`)
    cdc_verify_last_pass_timestamp_seconds  when the last full verification pass ended
"""

from __future__ import annotations

import time
from collections.abc import Callable
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

COMPONENTS = ("source", "sink", "checkpoint")


class Metrics:
    """The connector's metric objects; the pipeline updates them, the HTTP server exposes them."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.up = Gauge(
            "cdc_up", "1 while streaming normally, 0 when degraded or stopped", registry=r
        )
        self.degraded = Gauge("cdc_degraded", "1 while a link is down", ["component"], registry=r)
        self.changes = Counter(
            "cdc_changes", "Row changes read from the binlog", ["table", "op"], registry=r
        )
        self.transactions = Counter("cdc_transactions", "Transactions read", registry=r)
        self.documents = Counter("cdc_documents", "Bulk items by outcome", ["outcome"], registry=r)
        self.bulk_seconds = Histogram(
            "cdc_bulk_request_seconds",
            "Latency of _bulk requests",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=r,
        )
        self.lag = Gauge(
            "cdc_replication_lag_seconds",
            "Seconds between the commit of the last transaction read and now; 0 when caught up",
            registry=r,
        )
        self.checkpoint_age = Gauge(
            "cdc_checkpoint_age_seconds", "Seconds since the checkpoint was written", registry=r
        )
        self.dead_letters = Gauge(
            "cdc_dead_letters", "Documents parked in the dead-letter queue", registry=r
        )
        self.snapshot_rows = Gauge(
            "cdc_snapshot_rows",
            "Rows copied by the current snapshot of a table",
            ["table"],
            registry=r,
        )
        self.verify_mismatches = Gauge(
            "cdc_verify_mismatches",
            "Documents the last verification pass found missing, different, extra or changing",
            ["index", "kind"],
            registry=r,
        )
        self.verify_rows = Counter(
            "cdc_verify_rows", "Rows compared by verification passes", registry=r
        )
        self.verify_repaired = Counter(
            "cdc_verify_repaired", "Documents repaired by verification", registry=r
        )
        self.verify_last_pass = Gauge(
            "cdc_verify_last_pass_timestamp_seconds",
            "When the last full verification pass ended (seconds since the epoch)",
            registry=r,
        )
        self.reconnects = Counter(
            "cdc_reconnects", "Link failures by component", ["component"], registry=r
        )
        for component in COMPONENTS:
            self.degraded.labels(component).set(0)
            self.reconnects.labels(component)
        for outcome in ("ok", "stale", "retried", "rejected"):
            self.documents.labels(outcome)
        self._server: WSGIServer | None = None

    def track_lag(self, read: Callable[[], float]) -> None:
        """Compute the lag gauge at scrape time from `read()`."""
        self.lag.set_function(read)

    def track_checkpoint(self, saved_at: Callable[[], float]) -> None:
        """Compute the checkpoint age at scrape time from the monotonic time of the last save."""
        self.checkpoint_age.set_function(lambda: max(0.0, time.monotonic() - saved_at()))

    def serve(self, host: str, port: int) -> int:
        """Start the `/metrics` HTTP endpoint in a daemon thread; returns the bound port."""
        server, _ = start_http_server(port, addr=host, registry=self.registry)
        self._server = server
        return int(server.server_port)

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
