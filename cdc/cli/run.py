"""`cdc run`: stream until stopped.

Exit status: 0 after a clean stop (SIGTERM/SIGINT, or caught up with `--until-caught-up`);
1 for a terminal error, logged as one paragraph with its fix, or for a bug, logged with its
traceback; 2 for a bad config, including mappings that do not fit the tables on the server.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from types import FrameType
from typing import Annotated

import typer

from cdc.cli.common import ConfigOption, load, setup_logging
from cdc.config import ConnectorConfig
from cdc.engine.lease import Lease
from cdc.engine.loop import RunStats
from cdc.engine.pipeline import Pipeline
from cdc.errors import CdcError, ConfigError, Interrupted, LeaseLost
from cdc.metrics import Metrics
from cdc.sink.elastic import ElasticSink
from cdc.state.backends import open_stores
from cdc.state.stores import Stores

log = logging.getLogger("cdc")

STOP_GRACE_SECONDS = 8.0
"""After SIGTERM/SIGINT, the longest a stop may take before the connector records the
acknowledged position and exits anyway."""


def run(
    config: ConfigOption,
    until_caught_up: Annotated[
        bool,
        typer.Option(help="Exit once everything the server had at start is applied."),
    ] = False,
    log_level: Annotated[str, typer.Option(help="DEBUG, INFO, WARNING or ERROR.")] = "INFO",
) -> None:
    """Stream changes until stopped (SIGINT/SIGTERM stop cleanly after a final checkpoint)."""
    cfg = load(config)
    setup_logging(cfg.log_format, log_level.upper())
    stop = threading.Event()
    running: list[Pipeline] = []

    def give_up() -> None:
        for pipeline in running:
            pipeline.abandon()
        logging.shutdown()
        os._exit(0)

    def on_signal(signum: int, frame: FrameType | None) -> None:
        log.info("received %s, stopping", signal.Signals(signum).name)
        if not stop.is_set():
            stop.set()
            # A stop must finish in bounded time even while a request to an unreachable
            # cluster waits for its timeout: then record what was acknowledged and exit.
            watchdog = threading.Timer(STOP_GRACE_SECONDS, give_up)
            watchdog.daemon = True
            watchdog.start()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    metrics = Metrics()
    if cfg.metrics.enabled:
        try:
            port = metrics.serve(cfg.metrics.host, cfg.metrics.port)
        except OSError as exc:
            log.error(
                "cannot serve metrics on %s:%d: %s (set metrics.port, or metrics.enabled: false)",
                cfg.metrics.host,
                cfg.metrics.port,
                exc.strerror,
            )
            raise typer.Exit(1) from None
        log.info("metrics on http://%s:%d/metrics", cfg.metrics.host, port)
    sink = ElasticSink(cfg.sink)
    stores = open_stores(cfg)
    try:
        if cfg.ha.enabled:
            stats = _active_or_standby(cfg, sink, stores, stop, metrics, running, until_caught_up)
            if stats is None:
                return
        else:
            pipeline = Pipeline(cfg, sink, stores, stop=stop, metrics=metrics)
            running.append(pipeline)
            stats = pipeline.run(until_caught_up=until_caught_up)
    except Interrupted:
        log.info("stopped before streaming began")
        return
    except ConfigError as exc:
        log.error("%s", exc)
        raise typer.Exit(2) from None
    except CdcError as exc:
        log.error("%s", exc)
        raise typer.Exit(1) from None
    except Exception:
        log.exception("stopped by an unexpected error (a bug: please report it with this log)")
        raise typer.Exit(1) from None
    finally:
        metrics.close()
        sink.close()
        stores.close()
    log.info(
        "stopped: %d transactions, %d row changes, %d document operations, %d checkpoints",
        stats.transactions,
        stats.changes,
        stats.actions,
        stats.checkpoints,
    )


def _active_or_standby(
    cfg: ConnectorConfig,
    sink: ElasticSink,
    stores: Stores,
    stop: threading.Event,
    metrics: Metrics,
    running: list[Pipeline],
    until_caught_up: bool,
) -> RunStats | None:
    """With `ha.enabled`: wait as a standby until this process holds the lease, stream while
    it holds it, and go back to waiting when it is lost; returns the last term's stats, or
    None when stopped as a standby. See `cdc.engine.lease`."""
    assert stores.lease is not None
    lease = Lease(stores.lease, cfg.ha.lease_ttl, stop)
    stats = None
    try:
        while lease.wait_until_held():
            log.warning("took the lease (%s): this connector is active", lease.token)
            stores.checkpoints.hold(lease.token)
            term = lease.term()
            pipeline = Pipeline(cfg, sink, stores, stop=term, metrics=metrics)
            running[:] = [pipeline]
            try:
                stats = pipeline.run(until_caught_up=until_caught_up)
            except (LeaseLost, Interrupted) as exc:
                if stop.is_set():
                    raise
                log.warning("stepped down to standby: %s", getattr(exc, "message", exc))
                continue
            if stop.is_set() or until_caught_up:
                return stats
            log.warning("stepped down to standby: the lease went to another connector")
    finally:
        if stop.is_set() or until_caught_up:
            lease.release()
    return stats
