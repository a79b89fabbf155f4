"""The running connector: startup, the supervised stream, and a clean stop.

`Pipeline.run` checks the source server and the mappings against its tables, picks the start
checkpoint, creates missing indices, starts the recorder (checkpoints and heartbeats) and the
snapshotter, then streams: one source connection at a time, read on a thread of its own
(`cdc.source.handoff`) and consumed by the main loop (`cdc.engine.loop`). When the link
breaks, the half-read transaction is dropped and a new connection starts after the last commit
read, with backoff; a terminal error ends the run.
On stop it sends what is pending, writes the last acknowledged checkpoint and says it stopped.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import gc
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any
from zoneinfo import ZoneInfo

from cdc.config import ConnectorConfig
from cdc.engine.loop import Loop, Outages, RunStats
from cdc.engine.ports import Sink, Source
from cdc.engine.rebuilds import Rebuilds
from cdc.engine.recorder import Recorder
from cdc.engine.snapshots import Snapshots
from cdc.engine.startup import check_mappings, start_from
from cdc.engine.verify_loop import VerifyLoop
from cdc.errors import CdcError, ConfigError, Interrupted
from cdc.metrics import Metrics
from cdc.model.checkpoint import Checkpoint
from cdc.model.position import Position, ServerInfo
from cdc.model.status import Status
from cdc.retry import Backoff, Outage, retry
from cdc.source.handoff import Handoff
from cdc.source.server import MysqlSource
from cdc.state.stores import Stores
from cdc.transform.mapping import Mappers
from cdc.transform.trees import Tree

log = logging.getLogger(__name__)

STOPPED_STATUS_TTL = 3600.0
"""How long the last status of a stopped connector stays readable (`cdc status`)."""


class Pipeline:
    """Streams one source into one sink, checkpointing into one set of stores."""

    def __init__(
        self,
        cfg: ConnectorConfig,
        sink: Sink,
        stores: Stores,
        stop: threading.Event | None = None,
        metrics: Metrics | None = None,
        source: Source | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.cfg = cfg
        self.sink = sink
        self.stores = stores
        self.stop = stop or threading.Event()
        self.metrics = metrics or Metrics()
        self.source: Source = source or MysqlSource(cfg)
        self._clock = clock
        m = self.metrics
        self.outages = Outages(
            source=Outage("MySQL binlog stream", "source", m),
            sink=Outage("Elasticsearch", "sink", m),
            store=Outage("checkpoint store", "checkpoint", m),
        )
        self.mappers = Mappers(cfg.mapping_for, ZoneInfo(cfg.source.time_zone))
        self.trees: dict[str, Tree] = {}
        """The mappings with children, compiled against the live schema at startup."""
        self.snapshots = Snapshots(
            cfg, self.source, stores.snapshots, sink, self.mappers, m, self.trees
        )
        self.rebuilds: Rebuilds | None = None
        self.fields: dict[str, dict[str, Any]] = {}
        """Index -> field mappings from the column types, for the indices it creates."""
        self.verifying = VerifyLoop(cfg, self.source, sink, stores, m)
        self.loop: Loop | None = None
        self.stats = RunStats()
        self.last_error: str | None = None
        self._started_at = time.time()
        self._saved_at = time.monotonic()
        """When a checkpoint was last written (the metric's clock, not the loop's)."""
        self._recorder = Recorder(
            stores.checkpoints, stores.heartbeats, self.outages.store, self._beat, self._saved
        )
        sink.on_request = m.bulk_seconds.observe
        sink.on_items = lambda outcome, n: m.documents.labels(outcome).inc(n)
        m.track_lag(self._lag)
        m.track_checkpoint(lambda: self._saved_at)

    # -- the run ----------------------------------------------------------------------------

    def run(self, until_caught_up: bool = False) -> RunStats:
        """Stream until `stop` is set (or, with `until_caught_up`, until everything the server
        had when the run started is acknowledged and checkpointed). Transient failures of any
        link are retried forever; terminal ones raise."""
        limit_malloc_arenas()
        try:
            info, now = self._startup()
        except Interrupted:
            if self.loop is not None:  # the recorder and the snapshotter were started
                self._finish()
            raise
        except BaseException as exc:
            # Leave the reason where `cdc status` and `cdc health` look.
            self.last_error = str(exc)
            self._record_stop()
            raise
        try:
            with fewer_collections():
                self._stream(info, now if until_caught_up else None)
        except Interrupted:
            log.warning("stopped while Elasticsearch was failing; unacknowledged changes replay")
        except BaseException as exc:
            self.last_error = str(exc)
            raise
        finally:
            self._finish()
        return self.stats

    def _startup(self) -> tuple[ServerInfo, Position]:
        """Check the server, pick the start position, create indices, start the helpers."""
        outages, stop = self.outages, self.stop
        info, now = retry(self.source.inspect, outages.source, stop)
        retry(self._check_mappings, outages.source, stop)
        checkpoints = self.stores.checkpoints
        address = f"{self.cfg.source.host}:{self.cfg.source.port}"
        start = retry(
            lambda: start_from(checkpoints.load(), info, now, checkpoints.describe(), address),
            outages.store,
            stop,
        )
        fresh = start.written_at == 0
        if not fresh:
            retry(lambda: self.source.check_position(info, start.position), outages.source, stop)
        retry(lambda: self.sink.ensure_indices(self.cfg.tables, self.fields), outages.sink, stop)
        if self.trees and self.rebuilds is None:
            self.rebuilds = Rebuilds(list(self.trees.values()), self.source.rows, stop)
        if fresh:
            # A fresh start records its position at once, so that a restart resumes from here
            # rather than from a later "now".
            retry(lambda: checkpoints.save(start.stamped()), outages.store, stop)
        self.loop = Loop(
            self.cfg,
            start,
            info.identity,
            self.sink,
            self._recorder,
            self.stores.letters,
            outages,
            self.metrics,
            stop,
            self.mappers,
            self.snapshots,
            self._clock,
            self.rebuilds,
        )
        self.stats = self.loop.stats
        self._saved_at = time.monotonic()
        self._recorder.start()
        # Up from here, not from the first heartbeat write (a moment later): a scrape between
        # the two must not read a streaming connector as down.
        self.metrics.up.set(1)
        position = start.position
        self.snapshots.resume_at(position.file, position.offset, start.counter)
        retry(lambda: self.snapshots.start(fresh), outages.source, stop)
        self.verifying.start()
        return info, now

    def _check_mappings(self) -> None:
        """Refuse mappings that name what the tables lack; warn of those matching no table (a
        table created later still streams)."""
        rows = self.source.rows()
        try:
            report = check_mappings(self.cfg, rows)
        finally:
            rows.close()
        self.trees.clear()
        self.trees.update(report.trees)
        self.fields = report.fields
        for line in report.unmatched:
            log.warning("%s; its changes stream once such a table exists", line)
        if report.problems:
            lines = "\n".join(f"{line} — {fix}" for line, fix in report.problems)
            raise ConfigError(f"the table mappings do not fit the tables on the server:\n{lines}")

    def _stream(self, info: ServerInfo, target: Position | None) -> None:
        """Read, map and send until stopped or caught up, reconnecting the source as needed."""
        loop = self.loop
        assert loop is not None
        backoff = Backoff(first=0.2)
        while not self.stop.is_set():
            feed = Handoff(self.source.stream(loop.position, info))
            try:
                failure = loop.consume(feed, target)
            finally:
                feed.stop()
            if failure is None:
                break
            if not (isinstance(failure, CdcError) and failure.transient):
                raise failure
            self.last_error = str(failure)
            if not self.outages.source.down:
                backoff.reset()  # the link worked until now: a new outage starts
            self.outages.source.failed(failure)
            self.stats.reconnects += 1
            loop.drop_open_transaction()
            try:
                backoff.wait(self.stop)
            except Interrupted:
                break
        loop.shutdown_flush()

    def _finish(self) -> None:
        """Stop the snapshotter, write the last acknowledged checkpoint and say the connector
        stopped (kept a while so `cdc status` can show why)."""
        self.verifying.close()
        self.snapshots.close()
        if self.rebuilds is not None:
            self.rebuilds.close()
        if self.loop is not None:
            self.loop.close()
            self.loop.offer(force=True)
        if not self._recorder.close(timeout=3.0):
            log.warning(
                "could not write the final checkpoint to %s; the next start replays from the "
                "last one written",
                self.stores.checkpoints.describe(),
            )
            return
        self._record_stop()

    def _record_stop(self) -> None:
        self.metrics.up.set(0)
        try:
            status = replace(self.status(), state="stopped")
            self.stores.heartbeats.beat(status, STOPPED_STATUS_TTL)
        except CdcError:
            log.warning("could not record the stop in %s", self.stores.checkpoints.describe())

    def abandon(self) -> None:
        """Last resort when a stop takes too long (a request to a blackholed cluster is still
        waiting for its timeout): record what was acknowledged, if the store answers quickly,
        and let the caller exit. Called from another thread; the streaming thread is stuck."""
        log.warning("stop is taking too long; recording the acknowledged position and exiting")
        if self.loop is not None:
            self.loop.offer(force=True)
        self._recorder.close(timeout=1.5)

    # -- status -----------------------------------------------------------------------------

    def status(self) -> Status:
        """What `cdc status` and `cdc health` show about this running connector."""
        loop = self.loop
        acked: Checkpoint | None = loop.acked if loop is not None else None
        down = self.outages.down()
        stats = self.stats
        return Status(
            name=self.cfg.name,
            pid=os.getpid(),
            host=socket.gethostname(),
            started_at=self._started_at,
            updated_at=time.time(),
            state="degraded" if down else "running",
            lag_seconds=round(self._lag(), 3),
            degraded=down,
            position=acked.position if acked else None,
            counter=acked.counter if acked else None,
            event_time=acked.event_time if acked else None,
            last_error=self.last_error,
            transactions=stats.transactions,
            changes=stats.changes,
            actions=stats.actions,
            dead_letters=stats.dead_letters,
            reconnects=stats.reconnects,
            by_table=dict(stats.by_table),
            snapshot=self.snapshots.progress,
            verify=self.verifying.last,
        )

    def _lag(self) -> float:
        loop = self.loop
        if loop is None or loop.caught_up or not loop.event_time:
            return 0.0
        return max(0.0, time.time() - loop.event_time)

    def _beat(self) -> Status:
        """Called by the recorder thread for every heartbeat."""
        status = self.status()
        self.metrics.up.set(1 if status.state == "running" else 0)
        return status

    def _saved(self, checkpoint: Checkpoint) -> None:
        """Called by the recorder thread after a checkpoint was written."""
        self._saved_at = time.monotonic()
        self.stats.checkpoints += 1


STREAMING_GC_THRESHOLDS = (50_000, 20, 100)
"""CPython's cycle collector thresholds while streaming (see `fewer_collections`)."""


@contextlib.contextmanager
def fewer_collections() -> Iterator[None]:
    """Run the cycle collector less often inside the block, and restore its thresholds after.

    Every row change allocates a dozen short-lived containers (images, actions, bulk items)
    that hold no reference cycles, so the default thresholds (a young collection every 700
    allocations, older ones that walk every object the batches keep alive) spent about a third
    of the connector's CPU: scripts/bench.py measured 12.8 -> 9.2 us of CPU per wide row and
    9.0 -> 5.8 us per narrow row with these thresholds (peak RSS 114 -> 126 MB wide). Cycles
    are still collected, after 50,000 allocations instead of 700.
    """
    before = gc.get_threshold()
    gc.set_threshold(*STREAMING_GC_THRESHOLDS)
    try:
        yield
    finally:
        gc.set_threshold(*before)


MALLOC_ARENAS = 2
"""glibc malloc arenas while streaming (see `limit_malloc_arenas`)."""
_M_ARENA_MAX = -8  # mallopt's parameter number, from glibc's malloc.h


def limit_malloc_arenas() -> None:
    """Cap glibc's malloc arenas for this process, unless `MALLOC_ARENA_MAX` already does.

    glibc gives each thread that allocates under contention an arena of its own (up to eight
    per core) and keeps the memory freed into it. With `sink.bulk.concurrency` writer threads
    building and parsing bulk bodies, that held memory was most of the connector's growth:
    scripts/bench.py measured a peak RSS of 150 MB on the wide table with 8 in flight, 116 MB
    with two arenas, at no measurable cost in CPU. A no-op without glibc.
    """
    if "MALLOC_ARENA_MAX" in os.environ:
        return
    name = ctypes.util.find_library("c")
    if name is None:
        return
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError):  # not glibc
        return
    mallopt(_M_ARENA_MAX, MALLOC_ARENAS)
