"""The main loop: events in, versioned bulk items out, checkpoints behind them.

For each event of the feed (one source connection's worth, see `cdc.source.handoff`):

- Begin opens a transaction; each row change becomes document operations (`Mappers`), each
  with the next external version (`Versions`), appended to the batch (and to a rebuild's new
  index too);
- Commit closes it; the checkpoint can move to it once everything before it is acknowledged;
- Heartbeat says the server is idle (and how far it has sent).

The batch is sent when it holds `sink.bulk.max_actions` operations or `max_bytes` bytes, when
its oldest operation has waited `flush_interval_ms`, and whenever the feed runs dry; up to
`sink.bulk.concurrency` requests are in flight at once (`cdc.engine.inflight`), settled in the
order they were sent. Rejected documents are parked in the dead-letter queue before the
checkpoint can pass them. The acknowledged checkpoint goes to the recorder at most every
`checkpoint.interval_ms` or `max_transactions`. See docs/design.md for the invariants this
keeps.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from cdc.config import ConnectorConfig
from cdc.engine.batch import Batch, Versions
from cdc.engine.inflight import InFlight, Request
from cdc.engine.ports import Sink
from cdc.engine.rebuilds import Rebuilds
from cdc.engine.snapshots import Snapshots
from cdc.errors import Interrupted
from cdc.metrics import Metrics
from cdc.model.checkpoint import Checkpoint
from cdc.model.events import Begin, Commit, Event, Heartbeat, RowChange, TableSchema
from cdc.model.lag import reached
from cdc.model.letters import DeadLetter, clip_error
from cdc.model.position import Position
from cdc.model.versions import ROW_BITS, version
from cdc.retry import Outage, retry
from cdc.sink.bulk import BulkItem, ItemResult, encode, rejection_error
from cdc.source.handoff import Failed
from cdc.state.stores import DeadLetterQueue
from cdc.transform.mapping import Mapper, Mappers

log = logging.getLogger(__name__)

SHUTDOWN_FLUSH_SECONDS = 5.0
"""How long the requests in flight, and then the last batch, may take once stopping."""


class Feed(Protocol):
    """Where the loop takes events from (`cdc.source.handoff.Handoff`)."""

    def get(self, timeout: float) -> list[Event] | Failed | None:
        """Every event available, in order; the source's failure once the events before it
        were taken; None when nothing came within `timeout` seconds."""
        ...

    def empty(self) -> bool: ...

    def wake(self) -> None:
        """Make a waiting `get` return now."""
        ...


class Recorder(Protocol):
    """Where acknowledged checkpoints go (`cdc.engine.recorder.Recorder`)."""

    failure: BaseException | None
    """Set when the recorder stopped on an error retrying cannot fix."""

    def offer(self, checkpoint: Checkpoint) -> None: ...


@dataclass
class Outages:
    """The links the connector depends on, each announcing its outages once."""

    source: Outage
    sink: Outage
    store: Outage

    def down(self) -> list[str]:
        """The components that are unavailable now."""
        return [o.component for o in (self.source, self.sink, self.store) if o.down]


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


class Loop:
    """Turns events into acknowledged checkpoints; the state survives reconnects.

    It starts after the checkpoint `start`, reading from the server whose identity is `server`.
    """

    def __init__(
        self,
        cfg: ConnectorConfig,
        start: Checkpoint,
        server: str,
        sink: Sink,
        recorder: Recorder,
        letters: DeadLetterQueue,
        outages: Outages,
        metrics: Metrics,
        stop: threading.Event,
        mappers: Mappers,
        snapshots: Snapshots | None = None,
        clock: Callable[[], float] = time.monotonic,
        trees: Rebuilds | None = None,
    ) -> None:
        self._cfg = cfg
        self._sink = sink
        self._recorder = recorder
        self._letters = letters
        self._outages = outages
        self._metrics = metrics
        self._stop = stop
        self._mappers = mappers
        self._snapshots = snapshots
        self._rebuilds: dict[str, str] = snapshots.rebuilds if snapshots is not None else {}
        """alias -> new index, while a rebuild fills it (`Snapshots.rebuilds`)."""
        self._trees = trees
        """Denormalized documents named by the stream, rebuilt at each flush."""
        self._clock = clock
        self._flush_interval = cfg.sink.bulk.flush_interval_ms / 1000
        self.stats = RunStats()
        self.versions = Versions(start.counter)
        self.batch = Batch()
        self.position: Position = start.position
        """Where the next connection resumes: the last commit read."""
        self.acked = start
        """The last checkpoint whose every change Elasticsearch acknowledged."""
        self._server = server
        """Identity of the server being read, recorded in every checkpoint."""
        self._commit: Commit | None = None
        """The last commit read that is not acknowledged yet."""
        self._offered: Checkpoint | None = None
        self._offered_at = float("-inf")
        self._acked_since_offer = 0
        self._counts: dict[tuple[str, str], int] = {}
        """Row changes by (table, op) since the last commit, published at commits."""
        self._change_counters: dict[tuple[str, str], Any] = {}
        self._last_table: TableSchema | None = None
        self._last_mapper: Mapper | None = None
        """The mapper of the last row change's table schema (`Mappers.of`, found again)."""
        self.event_time = 0
        """Commit time of the last transaction read (seconds since the epoch)."""
        self.caught_up = False
        self.inflight = InFlight(
            sink,
            cfg.sink.bulk.concurrency,
            stop,
            outages.sink.failed,
            self._settled,
        )
        """The bulk requests sent and not settled yet."""

    # -- reading ----------------------------------------------------------------------------

    def consume(self, feed: Feed, target: Position | None) -> BaseException | None:
        """Process events until stopped, caught up with `target` (None: never), or the feed
        fails; returns the failure."""
        max_actions = self._cfg.sink.bulk.max_actions
        max_bytes = self._cfg.sink.bulk.max_bytes
        healthy = False
        batch = self.batch
        trees = self._trees
        inflight = self.inflight
        if self._snapshots is not None:
            self._snapshots.on_chunk = feed.wake  # serve chunks as they are read
        while not self._stop.is_set():
            inflight.settle()
            timeout = self._flush_interval
            if self._pending():
                timeout = max(0.0, batch.started + self._flush_interval - self._clock())
            events = feed.get(timeout)
            if isinstance(events, Failed):
                return events.error
            if self._recorder.failure is not None:
                raise self._recorder.failure
            if self._snapshots is not None:
                self._snapshots.check()
            idle = events is None
            if events is not None:
                self.caught_up = False  # until this list is done (it may take a while)
                if not healthy:
                    healthy = True
                    self._outages.source.recovered()
                for event in events:
                    cls = event.__class__
                    if cls is RowChange:
                        self._change(event)  # type: ignore[arg-type]
                    elif cls is Begin:
                        self.versions.begin(event.gtid)  # type: ignore[union-attr]
                        batch.close_transaction()
                    elif cls is Commit:
                        self._commit_read(event)  # type: ignore[arg-type]
                        if self._due():
                            self.flush()
                    elif cls is Heartbeat:
                        idle = True
                        if self._snapshots is not None:
                            self._snapshots.reached(event.file, event.offset)  # type: ignore[union-attr]
                    if (
                        len(batch.items) >= max_actions
                        or batch.nbytes >= max_bytes
                        or (trees is not None and trees.pending >= max_actions)
                    ):
                        self.flush()
            if self._snapshots is not None and not self.versions.open:
                self._add_chunks()
            if batch.full(max_actions, max_bytes) or self._due():
                self.flush()
            if idle and feed.empty():
                self.flush()
                # Nothing to read: wait for the answers a while (the checkpoint moves sooner).
                inflight.drain(self._flush_interval)
                self.offer()
                if target is not None and self._done(target):
                    return None
            self.caught_up = idle and feed.empty() and not self._pending() and not inflight
        # Stopped: what is in flight may still be acknowledged, for the final checkpoint.
        inflight.drain(SHUTDOWN_FLUSH_SECONDS)
        return None

    def _done(self, target: Position) -> bool:
        return (
            not self.inflight
            and reached(self.acked.position, target)
            and (self._snapshots is None or self._snapshots.quiet())
        )

    def _pending(self) -> bool:
        """Operations wait to be sent, or documents to be rebuilt."""
        return bool(self.batch) or (self._trees is not None and self._trees.pending > 0)

    def _due(self) -> bool:
        """The oldest pending operation or rebuild has waited the flush interval."""
        return self._pending() and self._clock() - self.batch.started >= self._flush_interval

    def _change(self, change: RowChange) -> None:
        # Runs for every row change: the batch, the versions and the bulk encoding are inline.
        table = change.table
        if table is self._last_table:
            mapper = self._last_mapper
        else:
            mapper = self._mappers.of(table)
            self._last_table, self._last_mapper = table, mapper
        if self._trees is not None:
            trees = self._trees.trees_of(table)
            if trees:
                self._tree_change(trees, change, counted=mapper is not None)
        if mapper is None:
            return
        name = mapper.table_name
        self.stats.changes += 1
        key = (name, change.op)
        counts = self._counts
        counts[key] = counts.get(key, 0) + 1
        actions = mapper.map(change)
        versions = self.versions
        counter, first, gtid = versions.open, versions.reserve(len(actions), name), versions.gtid
        base = counter << ROW_BITS  # version(counter, slot) is base | slot
        id_columns = mapper.id_columns
        batch = self.batch
        items = batch.items
        if not items:
            batch.started = self._clock()
        rebuilds = self._rebuilds
        nbytes = 0
        for slot, action in enumerate(actions, first):
            body = encode(action, base | slot)
            items.append(BulkItem(action, base | slot, name, gtid, id_columns, body))
            nbytes += len(body)
            target = rebuilds.get(action.index) if rebuilds else None
            if target is not None:
                twin = replace(action, index=target)
                item = BulkItem(twin, base | slot, name, gtid, id_columns)
                items.append(item)
                nbytes += len(item.body)
        batch.nbytes += nbytes
        self.stats.actions += len(actions)

    def _tree_change(self, trees: list[Any], change: RowChange, counted: bool) -> None:
        """A change of a table of denormalized documents: note the documents it affects,
        with the version of a slot of its own, to rebuild at the next flush."""
        assert self._trees is not None
        name = change.table.name
        if not counted:
            self.stats.changes += 1
            key = (name, change.op)
            self._counts[key] = self._counts.get(key, 0) + 1
        versions = self.versions
        moves = self._trees.moves(trees, change)
        if moves:
            # Deleted where the document was, below the rebuild's version (its own slots).
            first = versions.reserve(len(moves), name)
            for slot, (tree, action) in enumerate(moves, first):
                item = BulkItem(
                    action, version(versions.open, slot), name, versions.gtid, tree.root.key
                )
                self.batch.add(item, self._clock())
        slot = versions.reserve(1, name)
        if not self.batch and not self._trees.pending:
            self.batch.started = self._clock()
        self._trees.touch(trees, change, version(versions.open, slot), versions.gtid)

    def _commit_read(self, commit: Commit) -> None:
        counter = self.versions.commit()
        self.position = commit.position
        self._commit = commit
        if self._snapshots is not None:
            self._snapshots.committed(commit.position.file, commit.position.offset, counter)
        self.batch.close_transaction()
        if self._trees is not None:
            self._trees.commit(commit.position.file, commit.position.offset)
        self.stats.transactions += 1
        self._metrics.transactions.inc()
        if self._counts:
            self._count_changes()
        self.event_time = commit.timestamp
        if not self._pending():
            self._acknowledge()

    def _count_changes(self) -> None:
        """Publish the row changes counted since the last commit (stats and metrics)."""
        for (name, op), count in self._counts.items():
            self.stats.by_table[name] = self.stats.by_table.get(name, 0) + count
            counter = self._change_counters.get((name, op))
            if counter is None:
                counter = self._change_counters[(name, op)] = self._metrics.changes.labels(name, op)
            counter.inc(count)
        self._counts.clear()

    def _add_chunks(self) -> None:
        assert self._snapshots is not None
        items = self._snapshots.ready()
        if items:
            now = self._clock()
            for item in items:
                self.batch.add(item, now)
            self.batch.close_transaction()

    def drop_open_transaction(self) -> None:
        """A transaction half-read when the link broke is discarded; it is read again whole."""
        if self.versions.open:
            self.batch.drop_open()
        if self._trees is not None:
            self._trees.drop_open()
        self.versions.drop()

    # -- writing ----------------------------------------------------------------------------

    def flush(self) -> None:
        """Send the batch (the open transaction's operations too: big transactions must not
        pile up; the checkpoint still moves only to the last commit) in requests that carry
        the last commit read, so that it is acknowledged once they are (`_settled`). Due
        denormalized documents are rebuilt first, from the rows MySQL has now (retried while
        MySQL is unreachable)."""
        trees = self._trees
        if trees is not None and trees.pending:
            self._add_rebuilt(retry(trees.build, self._outages.source, self._stop))
            self._outages.source.recovered()
            if not self.batch:
                self._acknowledge()
                return
        if not self.batch:
            return
        nbytes = self.batch.nbytes
        requests = self._requests(self.batch.take(), nbytes)
        checkpoint = self._take_commit()
        chunks = self._snapshots.take_sent() if self._snapshots is not None else []
        last = len(requests) - 1
        for n, items in enumerate(requests):
            if n < last:
                self.inflight.send(Request(items))
            else:
                self.inflight.send(Request(items, checkpoint, chunks))

    def _settled(self, request: Request) -> None:
        """A request and every one sent before it are done: park what it had rejected, then
        acknowledge what it completes."""
        self._outages.sink.recovered()
        if request.rejected:
            self._park(request.rejected)
        if request.checkpoint is not None:
            self._acknowledged(request.checkpoint)
        if request.chunks:
            assert self._snapshots is not None
            self.stats.snapshot_rows += self._snapshots.acknowledged(request.chunks)

    def _requests(self, items: list[BulkItem], nbytes: int) -> list[list[BulkItem]]:
        """The batch cut into requests within the bulk limits (rebuilt documents can add more
        than one request's worth at once: a user renamed with 10,000 posts)."""
        bulk = self._cfg.sink.bulk
        if len(items) <= bulk.max_actions and nbytes <= bulk.max_bytes:
            return [items]
        requests: list[list[BulkItem]] = [[]]
        size = 0
        for item in items:
            if len(requests[-1]) >= bulk.max_actions or size >= bulk.max_bytes:
                requests.append([])
                size = 0
            requests[-1].append(item)
            size += len(item.body)
        return requests

    def _add_rebuilt(self, items: list[BulkItem]) -> None:
        batch = self.batch
        if items and not batch.items:
            batch.started = self._clock()
        rebuilds = self._rebuilds
        for item in items:
            batch.items.append(item)
            batch.nbytes += len(item.body)
            target = rebuilds.get(item.action.index) if rebuilds else None
            if target is not None:
                twin = BulkItem(
                    replace(item.action, index=target),
                    item.version,
                    item.table,
                    item.gtid,
                    item.id_columns,
                )
                batch.items.append(twin)
                batch.nbytes += len(twin.body)
        self.stats.actions += len(items)

    def _park(self, rejected: list[tuple[BulkItem, ItemResult]]) -> None:
        """Park rejected documents in the dead-letter queue, durably, before the checkpoint can
        move past them; or stop, when so configured."""
        item, result = rejected[0]
        if self._cfg.sink.on_rejected == "fail":
            raise rejection_error(item, result)
        letters = [dead_letter(i, r) for i, r in rejected]
        retry(lambda: self._letters.park(letters), self._outages.store, self._stop)
        self.stats.dead_letters += len(letters)
        self._metrics.dead_letters.inc(len(letters))
        log.warning(
            "parked %d rejected document(s) in the dead-letter queue; first: %s %s/%s from %s: %s",
            len(letters),
            item.action.op,
            item.action.index,
            item.action.doc_id,
            item.table,
            result.error,
        )

    def _take_commit(self) -> Checkpoint | None:
        """The checkpoint of the last commit read, if it has not been handed on yet."""
        commit = self._commit
        if commit is None:
            return None
        self._commit = None
        return Checkpoint(
            position=commit.position,
            counter=self.versions.committed,
            server=self._server,
            event_time=commit.timestamp,
        )

    def _acknowledge(self) -> None:
        """Everything up to the last commit read has been sent: it is acknowledged now, or
        with the newest request in flight when that one is settled."""
        checkpoint = self._take_commit()
        if checkpoint is None:
            return
        newest = self.inflight.newest
        if newest is None:
            self._acknowledged(checkpoint)
        else:
            newest.checkpoint = checkpoint

    def _acknowledged(self, checkpoint: Checkpoint) -> None:
        self.acked = checkpoint
        self._acked_since_offer += 1
        self.offer()

    def offer(self, force: bool = False) -> None:
        """Hand the acknowledged checkpoint to the recorder when one is due: at most every
        `interval_ms` or `max_transactions`, and always when forced (shutdown)."""
        acked = self.acked
        if acked == self._offered:
            return
        cfg = self._cfg.checkpoint
        due = (
            force
            or self._acked_since_offer >= cfg.max_transactions
            or (self._clock() - self._offered_at) * 1000 >= cfg.interval_ms
        )
        if not due:
            return
        self._recorder.offer(acked)
        self._offered = acked
        self._offered_at = self._clock()
        self._acked_since_offer = 0

    def close(self) -> None:
        """Stop the bulk workers; requests still in flight are replayed on the next start."""
        self.inflight.close()

    def shutdown_flush(self) -> None:
        """On stop, wait for the requests in flight and send what is pending (each for a
        bounded time: the sink gives up when Elasticsearch is down) so the final checkpoint
        covers as much as possible."""
        try:
            settled = self.inflight.drain(SHUTDOWN_FLUSH_SECONDS)
        except Interrupted:
            settled = False
        if not settled:
            log.warning("Elasticsearch did not acknowledge the requests in flight before shutdown")
            return
        if not self.batch:
            return
        # Let the final flush try once more even though stop is set.
        pending_stop = threading.Event()
        timer = threading.Timer(SHUTDOWN_FLUSH_SECONDS, pending_stop.set)
        timer.start()
        try:
            if not self._sink.write(self.batch.items, stop=pending_stop):
                self.batch.take()
                if not self._pending():  # documents still to rebuild are replayed instead
                    self._acknowledge()
        except Interrupted:
            log.warning("Elasticsearch did not acknowledge the last batch before shutdown")
        finally:
            timer.cancel()


def dead_letter(item: BulkItem, result: ItemResult) -> DeadLetter:
    """The dead letter of a rejected bulk item."""
    return DeadLetter(
        op=item.action.op,
        index=item.action.index,
        doc_id=item.action.doc_id,
        table=item.table,
        key=dict(zip(item.id_columns, item.action.key, strict=False)),
        error=clip_error(result.error or f"HTTP {result.status}"),
        status=result.status,
        version=item.version,
        gtid=item.gtid,
    )
