"""The supervisor loop: binlog source -> mapping -> batching -> sink -> checkpoint.

A reader thread decodes the binlog into a bounded queue (so decoding overlaps with bulk
requests, and a slow or absent Elasticsearch stops the reading: backpressure). The main thread
maps row changes to versioned bulk items, sends them, and records a checkpoint only at a
transaction boundary whose every earlier change Elasticsearch has acknowledged (invariant 1).

Versions: each transaction the stream passes gets the next value of a counter persisted with the
checkpoint, and each operation in it a slot: `counter << 23 | slot` (invariant 2). Replaying the
same binlog from a checkpoint therefore reproduces the same versions, and Elasticsearch turns
every stale write into a harmless 409.
"""

from __future__ import annotations

import bisect
import logging
import os
import queue
import random
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any
from zoneinfo import ZoneInfo

from cdc.config import ConnectorConfig
from cdc.engine.snapshot import Chunk, Progress, Snapshotter, request, resolve_tables
from cdc.errors import CdcError, MappingError, PositionError, TransientError
from cdc.metrics import Metrics
from cdc.model.checkpoint import (
    MAX_COUNTER,
    MAX_ROW_SLOT,
    Checkpoint,
    CheckpointStore,
    initial_counter,
    version,
)
from cdc.model.events import Begin, Commit, Heartbeat, RowChange, TableSchema
from cdc.model.gtid import MariadbGtidList, MysqlGtidSet
from cdc.model.position import Position
from cdc.sink.elastic import BulkItem, ElasticSink, Interrupted, ItemResult, rejection_error
from cdc.source.binlog import BinlogSource
from cdc.source.handoff import Failed, Reader
from cdc.source.mysql import ServerInfo, connect, current_position, server_info
from cdc.source.positions import check_position
from cdc.source.prereq import check_source, require
from cdc.source.rows import RowReader
from cdc.state.dlq import DeadLetter, DeadLetterQueue
from cdc.transform.mapping import Mapper

log = logging.getLogger(__name__)

# Commits remembered to version snapshot chunks read at an earlier binlog position.
_COMMIT_HISTORY = 200_000
HEARTBEAT_INTERVAL = 2.0
HEARTBEAT_TTL = 15.0


@dataclass
class RunStats:
    """What a run did, for logs, tests and metrics."""

    transactions: int = 0
    changes: int = 0
    actions: int = 0
    checkpoints: int = 0
    reconnects: int = 0
    dead_letters: int = 0
    snapshot_rows: int = 0
    by_table: dict[str, int] = field(default_factory=dict)


class _Outage:
    """One log line when a link goes down, one when it recovers; nothing per retry."""

    def __init__(self, component: str, key: str, metrics: Metrics) -> None:
        self.component = component
        self.key = key
        self.metrics = metrics
        self.since: float | None = None
        self.retries = 0

    def failed(self, exc: BaseException) -> None:
        self.retries += 1
        self.metrics.reconnects.labels(self.key).inc()
        if self.since is None:
            self.since = time.monotonic()
            self.metrics.degraded.labels(self.key).set(1)
            log.warning("%s unavailable: %s; retrying with backoff", self.component, exc)

    def recovered(self) -> None:
        if self.since is not None:
            self.metrics.degraded.labels(self.key).set(0)
            log.warning(
                "%s recovered after %.1f s and %d retries",
                self.component,
                time.monotonic() - self.since,
                self.retries,
            )
        self.since = None
        self.retries = 0


class _Recorder:
    """Writes checkpoints and heartbeats on a thread of its own, so that a slow or unreachable
    store (a blackholed Redis waits out its socket timeout) never stalls streaming.

    The streaming thread `offer`s the latest acknowledged checkpoint; the recorder writes the
    newest one it has, retrying with backoff while the store is down. Only this thread uses
    the store while it runs.
    """

    def __init__(
        self,
        store: CheckpointStore,
        outage: _Outage,
        status: Callable[[], dict[str, Any]],
        on_saved: Callable[[Checkpoint], None],
    ) -> None:
        self._store = store
        self._outage = outage
        self._status = status
        self._on_saved = on_saved
        self._lock = threading.Lock()
        self._pending: Checkpoint | None = None
        self._wake = threading.Event()
        self._closed = threading.Event()
        self._beat_at = 0.0
        self._thread = threading.Thread(target=self._run, name="checkpoint-recorder", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def offer(self, checkpoint: Checkpoint) -> None:
        with self._lock:
            self._pending = checkpoint
        self._wake.set()

    def _run(self) -> None:
        backoff = 0.2
        while not self._closed.is_set():
            self._wake.wait(timeout=HEARTBEAT_INTERVAL / 2)
            self._wake.clear()
            if self._closed.is_set():
                return
            if self._write() and self._beat():
                backoff = 0.2
                self._outage.recovered()
            elif self._closed.wait(backoff * random.uniform(0.5, 1.0)):
                return
            else:
                backoff = min(backoff * 2, 2.0)

    def _write(self) -> bool:
        with self._lock:
            checkpoint = self._pending
        if checkpoint is None:
            return True
        try:
            self._store.save(checkpoint.stamped())
        except TransientError as exc:
            self._outage.failed(exc)
            return False
        with self._lock:
            if self._pending is checkpoint:
                self._pending = None
        self._on_saved(checkpoint)
        return True

    def _beat(self) -> bool:
        if time.monotonic() - self._beat_at < HEARTBEAT_INTERVAL:
            return True
        try:
            self._store.beat(self._status(), HEARTBEAT_TTL)
        except TransientError as exc:
            self._outage.failed(exc)
            return False
        self._beat_at = time.monotonic()
        return True

    def close(self, timeout: float) -> bool:
        """Stop the thread and write the last offered checkpoint once more if it is not saved.
        Returns False when that last write failed or the thread did not finish in time."""
        self._closed.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout)
            if self._thread.is_alive():
                return False
        return self._write()


def reached(position: Position, target: Position) -> bool:
    """True if `position` is at or past `target` (same server)."""
    if target.gtid and position.gtid:
        if target.flavor == "mariadb":
            return MariadbGtidList.parse(target.gtid).is_reached_by(
                MariadbGtidList.parse(position.gtid)
            )
        return MysqlGtidSet.parse(target.gtid).issubset(MysqlGtidSet.parse(position.gtid))
    if target.file and position.file:
        return (position.file, position.offset or 0) >= (target.file, target.offset or 0)
    return not target.gtid


class Pipeline:
    """Streams one source into one sink, checkpointing into one store."""

    def __init__(
        self,
        cfg: ConnectorConfig,
        sink: ElasticSink,
        store: CheckpointStore,
        stop: threading.Event | None = None,
        source_factory: Callable[[Position, ServerInfo], BinlogSource] | None = None,
        dlq: DeadLetterQueue | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.cfg = cfg
        self.sink = sink
        self.store = store
        self.dlq = dlq
        self.metrics = metrics or Metrics()
        self.stop = stop or threading.Event()
        self._source_factory = source_factory or (
            lambda start, info: BinlogSource(cfg.source, cfg.tables, start, info)
        )
        self.stats = RunStats()
        self._tz = ZoneInfo(cfg.source.time_zone)
        self._mappers: dict[int, tuple[TableSchema, Mapper, str]] = {}
        self._counts: dict[tuple[str, str], int] = {}
        """Row changes by (table, op) since the last commit, published at commits."""
        self._info: ServerInfo | None = None
        # Stream state: the last commit read, and the last one acknowledged by Elasticsearch.
        self._read_position: Position | None = None
        self._read_counter = 0
        self._txn_counter = 0
        self._txn_gtid: str | None = None
        self._slot = 0
        self._txn_start = 0
        self._batch: list[BulkItem] = []
        self._batch_bytes = 0
        self._batch_started = 0.0
        self._last_commit: Commit | None = None
        self._last_commit_counter = 0
        self._acked: Checkpoint | None = None
        self._saved: Checkpoint | None = None
        self._saved_at = 0.0
        self._offered: Checkpoint | None = None
        self._offered_at = 0.0
        self._acked_since_save = 0
        m = self.metrics
        self._source_outage = _Outage("MySQL binlog stream", "source", m)
        self._sink_outage = _Outage("Elasticsearch", "sink", m)
        self._store_outage = _Outage("checkpoint store", "checkpoint", m)
        self._change_counters: dict[tuple[str, str], Any] = {}
        self._last_event_time = 0
        self._caught_up = False
        # How far the stream has read, as (file, offset): the last commit or heartbeat.
        self._stream_point: tuple[str, int] | None = None
        # (file, offset, counter) of recent commits, to version snapshot chunks.
        self._history: deque[tuple[str, int, int]] = deque(maxlen=_COMMIT_HISTORY)
        self._chunk_inbox: queue.Queue[Chunk] = queue.Queue(maxsize=1)
        self._held: list[Chunk] = []
        self._batch_chunks: list[Chunk] = []
        self._chunk_mappers: dict[tuple[int, TableSchema], Mapper] = {}
        self._snapshotter: Snapshotter | None = None
        self._snapshot_stop = threading.Event()
        # alias -> new index, while `cdc snapshot --rebuild` fills it: changes go to both.
        self._rebuild: dict[str, str] = {}
        self.snapshot_progress: Progress | None = None
        sink.on_request = m.bulk_seconds.observe
        sink.on_items = lambda outcome, n: m.documents.labels(outcome).inc(n)
        m.track_lag(self._lag)
        m.track_checkpoint(lambda: self._saved_at)
        self._started_at = time.time()
        self._recorder = _Recorder(store, self._store_outage, self._status_now, self._saved_ok)
        self.last_error: str | None = None

    # -- startup ------------------------------------------------------------------------------

    def _server(self) -> tuple[ServerInfo, Position]:
        """Connect, refuse a server that lacks a prerequisite, and read its position now."""
        conn = connect(self.cfg.source)
        try:
            info = server_info(conn, self.cfg.source.flavor)
            schemas = sorted({m.table.split(".", 1)[0] for m in self.cfg.tables})
            require(check_source(conn, info, schemas))
            return info, current_position(conn, info)
        finally:
            conn.close()

    def _check_position(self, info: ServerInfo, position: Position) -> None:
        """Refuse a stored position the server has purged or never had."""
        conn = connect(self.cfg.source)
        try:
            require([check_position(conn, info, position)])
        finally:
            conn.close()

    def _start_checkpoint(self, info: ServerInfo, now: Position) -> Checkpoint:
        stored = self.store.load()
        if stored is not None:
            if stored.position.flavor != info.flavor:
                raise PositionError(
                    f"the checkpoint in {self.store.describe()} is for a {stored.position.flavor} "
                    f"server but {self.cfg.source.host}:{self.cfg.source.port} is {info.flavor}",
                    hint="point source at the right server, or run `cdc position reset`",
                )
            log.info("resuming from checkpoint: %s", stored.position.describe())
            return stored
        start = Checkpoint(position=now, counter=initial_counter(), server=info.identity)
        log.info(
            "no checkpoint in %s: starting at the server's current position (%s); rows "
            "written before it are not copied",
            self.store.describe(),
            now.describe(),
        )
        return start

    # -- the loop -----------------------------------------------------------------------------

    def run(self, until_caught_up: bool = False) -> RunStats:
        """Stream until `stop` is set (or, with `until_caught_up`, until everything the server
        had when the run started is acknowledged and checkpointed). Transient failures of any
        link are retried forever; terminal ones raise."""
        try:
            info, now = self._startup()
        except Interrupted:
            raise
        except BaseException as exc:
            # Leave the reason where `cdc status` and `cdc health` look.
            self.last_error = str(exc)
            self._record_stop()
            raise
        target = now if until_caught_up else None
        backoff = 0.2
        try:
            self._stream(info, target, backoff)
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
        info, now = self._retry_until_up(self._server, self._source_outage)
        self._info = info
        start = self._retry_until_up(lambda: self._start_checkpoint(info, now), self._store_outage)
        if start.written_at:
            self._retry_until_up(
                lambda: self._check_position(info, start.position), self._source_outage
            )
        self._retry_until_up(lambda: self.sink.ensure_indices(self.cfg.tables), self._sink_outage)
        self._acked = start
        self._saved = start
        self._saved_at = time.monotonic()
        if start.written_at == 0:
            # A fresh start records its position at once, so that a restart resumes from here
            # rather than from a later "now".
            self._retry_until_up(lambda: self.store.save(start.stamped()), self._store_outage)
        self._recorder.start()
        if start.position.file and start.position.offset is not None:
            self._history.append((start.position.file, start.position.offset, start.counter))
            self._stream_point = (start.position.file, start.position.offset)
        self._retry_until_up(
            lambda: self._start_snapshots(start.written_at == 0), self._source_outage
        )
        self._read_position = start.position
        self._read_counter = start.counter
        self._last_commit_counter = start.counter
        return info, now

    def _stream(self, info: ServerInfo, target: Position | None, backoff: float) -> None:
        """Read, map and send until stopped or caught up, reconnecting the source as needed."""
        while not self.stop.is_set():
            assert self._read_position is not None
            reader = Reader(self._source_factory(self._read_position, info))
            try:
                failure = self._consume(reader, target)
            finally:
                reader.stop()
            if failure is None:
                break
            if not (isinstance(failure, CdcError) and failure.transient):
                raise failure
            self.last_error = str(failure)
            self._source_outage.failed(failure)
            self.stats.reconnects += 1
            self._drop_open_transaction()
            if self.stop.wait(backoff * random.uniform(0.5, 1.0)):
                break
            backoff = min(backoff * 2, 30.0)
        self._shutdown_flush()

    def _finish(self) -> None:
        """Stop the snapshotter, write the last acknowledged checkpoint and say the connector
        stopped (kept a while so `cdc status` can show why)."""
        self._snapshot_stop.set()
        for chunk in self._held + self._batch_chunks:
            chunk.dropped = True
            chunk.done.set()
        if self._snapshotter is not None:
            self._snapshotter.join(5.0)
        self._save_checkpoint(force=True)
        if not self._recorder.close(timeout=3.0):
            log.warning(
                "could not write the final checkpoint to %s; the next start replays from the "
                "last one written",
                self.store.describe(),
            )
            return
        self._record_stop()

    def _record_stop(self) -> None:
        self.metrics.up.set(0)
        try:
            self.store.beat({**self.status(), "state": "stopped"}, 3600.0)
        except CdcError:
            log.warning("could not record the stop in %s", self.store.describe())

    def abandon(self) -> None:
        """Last resort when a stop takes too long (a request to a blackholed cluster is still
        waiting for its timeout): record what was acknowledged, if the store answers quickly,
        and let the caller exit. Called from another thread; the streaming thread is stuck."""
        log.warning("stop is taking too long; recording the acknowledged position and exiting")
        self._save_checkpoint(force=True)
        self._recorder.close(timeout=1.5)

    def _retry_until_up(self, call: Callable[[], Any], outage: _Outage) -> Any:
        delay = 0.2
        while True:
            try:
                result = call()
            except TransientError as exc:
                outage.failed(exc)
                if self.stop.wait(delay * random.uniform(0.5, 1.0)):
                    raise Interrupted("stopped before the connector could start") from exc
                delay = min(delay * 2, 30.0)
                continue
            outage.recovered()
            return result

    def _consume(self, reader: Reader, target: Position | None) -> BaseException | None:
        """Process events until stop, caught-up, or a source failure (returned)."""
        flush_interval = self.cfg.sink.bulk.flush_interval_ms / 1000
        max_actions = self.cfg.sink.bulk.max_actions
        max_bytes = self.cfg.sink.bulk.max_bytes
        healthy = False
        while not self.stop.is_set():
            timeout = flush_interval
            if self._batch:
                timeout = max(0.0, self._batch_started + flush_interval - time.monotonic())
            events = reader.get(timeout)
            if isinstance(events, Failed):
                return events.error
            idle = events is None
            if events is not None:
                self._caught_up = False  # until this list is done (it may take a while)
                if not healthy:
                    healthy = True
                    self._source_outage.recovered()
                for event in events:
                    cls = event.__class__
                    if cls is RowChange:
                        self._on_change(event)  # type: ignore[arg-type]
                    elif cls is Begin:
                        self._txn_counter = self._read_counter + 1
                        self._txn_gtid = event.gtid  # type: ignore[union-attr]
                        self._slot = 0
                        self._txn_start = len(self._batch)
                    elif cls is Commit:
                        self._on_commit(event)  # type: ignore[arg-type]
                        if self._batch and time.monotonic() - self._batch_started >= flush_interval:
                            self._flush()
                    elif cls is Heartbeat:
                        idle = True
                        point = (event.file, event.offset)  # type: ignore[union-attr]
                        if self._stream_point is None or point > self._stream_point:
                            self._stream_point = point
                    if len(self._batch) >= max_actions or self._batch_bytes >= max_bytes:
                        self._flush()
            self._caught_up = idle and reader.empty() and not self._batch
            if self._snapshotter is not None:
                self._serve_chunks()
            if self._batch and (
                len(self._batch) >= max_actions
                or self._batch_bytes >= max_bytes
                or time.monotonic() - self._batch_started >= flush_interval
            ):
                self._flush()
            if idle and reader.empty():
                self._flush()
                self._save_checkpoint()
                if (
                    target is not None
                    and self._acked
                    and reached(self._acked.position, target)
                    and self._snapshots_quiet()
                ):
                    return None
        return None

    # -- snapshots ----------------------------------------------------------------------------

    def _start_snapshots(self, fresh: bool) -> None:
        """Request the snapshots the config asks for, and start serving snapshot requests."""
        modes = [m.snapshot or self.cfg.snapshot.mode for m in self.cfg.tables]
        if (fresh and "initial" in modes) or "when_needed" in modes:
            reader = RowReader(self.cfg.source)
            try:
                tables = resolve_tables(self.cfg, reader)
            finally:
                reader.close()
            known = self.store.load_snapshots()
            wanted = []
            for table in tables:
                mapping = self.cfg.mapping_for(*table.split(".", 1))
                assert mapping is not None
                mode = mapping.snapshot or self.cfg.snapshot.mode
                if (mode == "initial" and fresh) or (mode == "when_needed" and table not in known):
                    wanted.append(table)
            if wanted:
                log.info("snapshot requested for %s", ", ".join(wanted))
                request(self.cfg, self.store, wanted)
        self._resume_rebuilds()
        if self._snapshotter is None:
            self._snapshotter = Snapshotter(
                self.cfg,
                self.store,
                self._submit_chunk,
                self._snapshot_stop,
                self._on_progress,
                self._rebuilt,
                self._rebuild.__setitem__,
            )
            self._snapshotter.start()

    def _resume_rebuilds(self) -> None:
        """Write changes to every index being rebuilt, before streaming starts: the stream may
        replay changes its earlier chunks do not hold."""
        for raw in self.store.load_snapshots().values():
            progress = Progress.from_dict(raw)
            if progress.target_index and progress.state in ("pending", "running"):
                mapping = self.cfg.mapping_for(*progress.table.split(".", 1))
                if mapping is not None:
                    self._rebuild[mapping.index] = progress.target_index

    def _submit_chunk(self, chunk: Chunk) -> None:
        """Called by the snapshotter thread."""
        self._chunk_inbox.put(chunk)

    def _rebuilt(self, alias: str, target: str) -> None:
        """Called by the snapshotter thread when every table feeding `target` is copied: point
        the alias at the new index atomically and stop writing changes twice."""
        sink = ElasticSink(self.cfg.sink)
        try:
            old = sink.alias_target(alias)
            if old is not None and old != target:
                sink.swap_alias(alias, old, target)
                log.warning(
                    "rebuild done: alias %s now points at %s; the old index %s is left for "
                    "you to delete",
                    alias,
                    target,
                    old,
                )
        finally:
            sink.close()
        self._rebuild.pop(alias, None)

    def _on_progress(self, progress: Progress) -> None:
        self.snapshot_progress = progress
        self.metrics.snapshot_rows.labels(progress.table).set(progress.rows_done)

    def _snapshots_quiet(self) -> bool:
        s = self._snapshotter
        if s is None:
            return True
        if s.failure is not None:
            raise s.failure
        return (
            s.idle.is_set()
            and not self._held
            and self._chunk_inbox.empty()
            and not self._batch_chunks
        )

    def _serve_chunks(self) -> None:
        """Version and queue the snapshot chunks the stream has reached; only between
        transactions, so that dropping a half-read transaction never drops chunk rows."""
        if self._txn_counter:
            return
        while True:
            try:
                self._held.append(self._chunk_inbox.get_nowait())
            except queue.Empty:
                break
        waiting = []
        for chunk in self._held:
            counter = self._counter_at(chunk.position)
            if counter is None:
                waiting.append(chunk)
            elif counter < 0:
                chunk.dropped = True
                chunk.done.set()
            else:
                self._add_chunk(chunk, counter)
        self._held = waiting

    def _counter_at(self, position: tuple[str, int]) -> int | None:
        """The counter of the last transaction at or before `position`; None while the stream
        has not read that far, -1 when it is older than the remembered history."""
        point = self._stream_point
        if point is None or point < position:
            return None
        history = self._history
        if not history or history[-1][:2] <= position:
            return self._read_counter
        at = bisect.bisect_right(history, (*position, MAX_COUNTER)) - 1
        return history[at][2] if at >= 0 else -1

    def _add_chunk(self, chunk: Chunk, counter: int) -> None:
        key = (id(chunk.mapping), chunk.schema)
        mapper = self._chunk_mappers.get(key)
        if mapper is None:
            mapper = self._chunk_mappers[key] = Mapper(chunk.mapping, chunk.schema, self._tz)
        chunk_version = version(counter, MAX_ROW_SLOT)
        if not self._batch:
            self._batch_started = time.monotonic()
        for row in chunk.rows:
            for action in mapper.map(RowChange(chunk.schema, "insert", None, row)):
                if chunk.target_index is not None:
                    action = replace(action, index=chunk.target_index)
                item = BulkItem(action, chunk_version, chunk.table, None, mapper.id_columns)
                self._batch.append(item)
                self._batch_bytes += len(item.body)
        self._batch_chunks.append(chunk)
        self._txn_start = len(self._batch)

    def _mapper(self, table: TableSchema) -> tuple[Mapper, str] | None:
        """The mapper of a table schema and the table's name; None when no mapping covers it.

        Looked up by identity: the source hands out one TableSchema object per table map, and
        hashing a whole schema for every row change cost more than mapping the row.
        """
        mapping = self.cfg.mapping_for(table.schema, table.table)
        if mapping is None:
            return None
        if len(self._mappers) > 10_000:
            self._mappers.clear()
        mapper = Mapper(mapping, table, self._tz)
        self._mappers[id(table)] = (table, mapper, table.name)
        return mapper, table.name

    def _on_change(self, change: RowChange) -> None:
        table = change.table
        entry = self._mappers.get(id(table))
        if entry is not None and entry[0] is table:
            mapper, name = entry[1], entry[2]
        else:
            found = self._mapper(table)
            if found is None:
                return
            mapper, name = found
        self.stats.changes += 1
        key = (name, change.op)
        self._counts[key] = self._counts.get(key, 0) + 1
        txn_counter = self._txn_counter
        gtid = self._txn_gtid
        batch = self._batch
        for action in mapper.map(change):
            if self._slot > MAX_ROW_SLOT:
                raise MappingError(
                    f"a transaction on {name} has more than {MAX_ROW_SLOT} row changes",
                    hint="split the transaction; larger ones cannot be versioned",
                )
            item = BulkItem(action, version(txn_counter, self._slot), name, gtid, mapper.id_columns)
            self._slot += 1
            if not batch:
                self._batch_started = time.monotonic()
            batch.append(item)
            self._batch_bytes += len(item.body)
            self.stats.actions += 1
            target = self._rebuild.get(action.index) if self._rebuild else None
            if target is not None:
                twin = BulkItem(
                    replace(action, index=target), item.version, name, gtid, mapper.id_columns
                )
                batch.append(twin)
                self._batch_bytes += len(twin.body)

    def _count_changes(self) -> None:
        """Publish the row changes counted since the last commit (stats and metrics)."""
        for (name, op), count in self._counts.items():
            self.stats.by_table[name] = self.stats.by_table.get(name, 0) + count
            counter = self._change_counters.get((name, op))
            if counter is None:
                counter = self._change_counters[(name, op)] = self.metrics.changes.labels(name, op)
            counter.inc(count)
        self._counts.clear()

    def _on_commit(self, commit: Commit) -> None:
        self._read_counter = self._txn_counter or self._read_counter + 1
        self._txn_counter = 0
        self._read_position = commit.position
        self._last_commit = commit
        self._last_commit_counter = self._read_counter
        if commit.position.file and commit.position.offset is not None:
            point = (commit.position.file, commit.position.offset)
            self._history.append((*point, self._read_counter))
            if self._stream_point is None or point > self._stream_point:
                self._stream_point = point
        self._txn_start = len(self._batch)
        self.stats.transactions += 1
        self.metrics.transactions.inc()
        if self._counts:
            self._count_changes()
        self._last_event_time = commit.timestamp
        if not self._batch:
            self._ack_last_commit()

    def _ack_last_commit(self) -> None:
        commit = self._last_commit
        if commit is None:
            return
        assert self._info is not None
        self._acked = Checkpoint(
            position=commit.position,
            counter=self._last_commit_counter,
            server=self._info.identity,
            event_time=commit.timestamp,
        )
        self._acked_since_save += 1
        self._last_commit = None
        self._save_checkpoint()

    def _drop_open_transaction(self) -> None:
        """A half-read transaction is discarded; it is read again from its start."""
        if self._txn_counter:
            del self._batch[self._txn_start :]
            self._batch_bytes = sum(len(i.body) for i in self._batch)
        self._txn_counter = 0
        self._slot = 0

    def _flush(self) -> None:
        if not self._batch:
            return
        batch = self._batch
        open_items = batch[self._txn_start :]
        done = batch[: self._txn_start]
        # Items of the open transaction are sent too (big transactions must not pile up); the
        # checkpoint still only moves to the last commit, and a replay re-sends them harmlessly.
        rejected = self.sink.write(
            done + open_items, stop=self.stop, on_retry=lambda e, n: self._sink_outage.failed(e)
        )
        self._sink_outage.recovered()
        if rejected:
            self._park(rejected)
        self._batch = []
        self._batch_bytes = 0
        self._txn_start = 0
        self._ack_last_commit()
        for chunk in self._batch_chunks:
            self.stats.snapshot_rows += len(chunk.rows)
            chunk.done.set()
        self._batch_chunks = []

    def _park(self, rejected: list[tuple[BulkItem, ItemResult]]) -> None:
        """Park rejected documents in the dead-letter queue, durably, before the checkpoint can
        move past them; or stop, when so configured or when there is no queue."""
        item, result = rejected[0]
        if self.dlq is None or self.cfg.sink.on_rejected == "fail":
            raise rejection_error(item, result)
        letters = [DeadLetter.from_item(i, r) for i, r in rejected]
        dlq = self.dlq
        self._retry_until_up(lambda: dlq.park(letters), self._store_outage)
        self.stats.dead_letters += len(letters)
        self.metrics.dead_letters.inc(len(letters))
        log.warning(
            "parked %d rejected document(s) in the dead-letter queue; first: %s %s/%s from %s: %s",
            len(letters),
            item.action.op,
            item.action.index,
            item.action.doc_id,
            item.table,
            result.error,
        )

    def status(self) -> dict[str, Any]:
        """What `cdc status` and `cdc health` show about this running connector."""
        acked = self._acked
        degraded = [
            o.component
            for o in (self._source_outage, self._sink_outage, self._store_outage)
            if o.since is not None
        ]
        return {
            "name": self.cfg.name,
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started_at": self._started_at,
            "updated_at": time.time(),
            "state": "degraded" if degraded else "running",
            "lag_seconds": round(self._lag(), 3),
            "degraded": degraded,
            "position": acked.position.to_dict() if acked else None,
            "counter": acked.counter if acked else None,
            "event_time": acked.event_time if acked else None,
            "last_error": self.last_error,
            "transactions": self.stats.transactions,
            "changes": self.stats.changes,
            "actions": self.stats.actions,
            "dead_letters": self.stats.dead_letters,
            "reconnects": self.stats.reconnects,
            "by_table": dict(self.stats.by_table),
            "snapshot": self.snapshot_progress.to_dict() if self.snapshot_progress else None,
        }

    def _lag(self) -> float:
        if self._caught_up or not self._last_event_time:
            return 0.0
        return max(0.0, time.time() - self._last_event_time)

    def _status_now(self) -> dict[str, Any]:
        status = self.status()
        self.metrics.up.set(1 if status["state"] == "running" else 0)
        return status

    def _saved_ok(self, checkpoint: Checkpoint) -> None:
        """Called by the recorder thread after a checkpoint was written."""
        self._saved = checkpoint
        self._saved_at = time.monotonic()
        self.stats.checkpoints += 1

    def _save_checkpoint(self, force: bool = False) -> None:
        """Hand the acknowledged checkpoint to the recorder when one is due: at most every
        `interval_ms` or `max_transactions`, and always when forced (shutdown)."""
        acked = self._acked
        if acked is None or acked == self._offered:
            return
        due = (
            force
            or self._acked_since_save >= self.cfg.checkpoint.max_transactions
            or (time.monotonic() - self._offered_at) * 1000 >= self.cfg.checkpoint.interval_ms
        )
        if not due:
            return
        self._recorder.offer(acked)
        self._offered = acked
        self._offered_at = time.monotonic()
        self._acked_since_save = 0

    def _shutdown_flush(self) -> None:
        """On stop, send what is pending (bounded by the stop event: the sink gives up when
        Elasticsearch is down) so the final checkpoint covers as much as possible."""
        if not self._batch:
            return
        # Let the final flush try once more even though stop is set.
        pending_stop = threading.Event()
        timer = threading.Timer(5.0, pending_stop.set)
        timer.start()
        try:
            rejected = self.sink.write(self._batch, stop=pending_stop)
            if not rejected:
                self._batch = []
                self._ack_last_commit()
        except Interrupted:
            log.warning("Elasticsearch did not acknowledge the last batch before shutdown")
        finally:
            timer.cancel()


def describe_lag(event_time: int) -> str:
    return f"{max(0, int(time.time()) - event_time)} s" if event_time else "unknown"
