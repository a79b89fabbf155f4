"""Several bulk requests in flight (`sink.bulk.concurrency`): answered out of order, the
checkpoint still names only commits whose every change, and every earlier one, was
acknowledged; rejected documents are parked before it passes them; at most `concurrency`
requests are out; a request stuck retrying holds the checkpoint back until the stop; and the
throughput over a slow link grows with the requests in flight. Snapshot chunks read ahead are
recorded as done only in order."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from fakes import (
    ITEMS,
    Clock,
    FakeRecorder,
    FakeSink,
    ScriptedFeed,
    config,
    insert,
    position,
    transaction,
)

from cdc.config import ConnectorConfig
from cdc.engine.loop import Loop, Outages
from cdc.engine.snapshotter import Chunk, Snapshotter
from cdc.errors import Interrupted
from cdc.metrics import Metrics
from cdc.model.checkpoint import Checkpoint
from cdc.model.events import Commit, Event, TableSchema
from cdc.model.progress import Progress, decode_key
from cdc.model.versions import ROW_BITS
from cdc.retry import Backoff, Outage
from cdc.sink.bulk import BulkItem, ItemResult
from cdc.testing.memory import memory_stores
from cdc.transform.mapping import Mappers

START = Checkpoint(position(0), counter=500, server="server_id=1", written_at=1.0)


class SlowSink(FakeSink):
    """A fake sink whose requests take `delay(n, items)` seconds (n counts requests from 0),
    several at once; it notes when each item was acknowledged and how many requests were out
    at most."""

    def __init__(self, delay: Callable[[int, Sequence[BulkItem]], float]) -> None:
        super().__init__()
        self.delay = delay
        self.lock = threading.Lock()
        self.acked: set[str] = set()
        """Doc ids whose write returned."""
        self.answered: list[int] = []
        """Request numbers in the order their answers came."""
        self.out = 0
        self.most_out = 0

    def write(
        self,
        items: Sequence[BulkItem],
        stop: threading.Event | None = None,
        on_retry: Callable[[BaseException], None] | None = None,
    ) -> list[tuple[BulkItem, ItemResult]]:
        with self.lock:
            n = len(self.requests)
            rejected = super().write(items, stop, on_retry)
            self.out += 1
            self.most_out = max(self.most_out, self.out)
        time.sleep(self.delay(n, items))
        with self.lock:
            self.out -= 1
            self.acked.update(i.action.doc_id for i in items)
            self.answered.append(n)
        return rejected


class CheckingRecorder(FakeRecorder):
    """Fails the test when an offered checkpoint covers a change whose write has not returned
    (every transaction `n` of these tests inserts the ids in `ids_of[n]`)."""

    def __init__(self, sink: SlowSink, ids_of: dict[int, list[int]]) -> None:
        super().__init__()
        self.sink = sink
        self.ids_of = ids_of
        self.violations: list[str] = []

    def offer(self, checkpoint: Checkpoint) -> None:
        super().offer(checkpoint)
        seq = int(str(checkpoint.position.gtid).rsplit("-", 1)[1])
        with self.sink.lock:
            for n in range(1, seq + 1):
                missing = [i for i in self.ids_of.get(n, []) if str(i) not in self.sink.acked]
                if missing:
                    self.violations.append(f"{checkpoint.position.gtid} before {missing} acked")


def _loop(cfg: ConnectorConfig, sink: FakeSink, recorder: FakeRecorder, stores: Any) -> Loop:
    return Loop(
        cfg,
        START,
        "server_id=1",
        sink,
        recorder,
        stores.letters,
        Outages(Outage("source"), Outage("sink"), Outage("store")),
        Metrics(),
        threading.Event(),
        Mappers(cfg.mapping_for, ZoneInfo("UTC")),
        clock=Clock(),
    )


class TrickleFeed(ScriptedFeed):
    """Hands out one transaction per `get`, `pause` seconds apart (real time)."""

    def __init__(self, transactions: list[list[Event]], pause: float) -> None:
        super().__init__(Clock(), *((0, t) for t in transactions))
        self.pause = pause

    def get(self, timeout: float) -> Any:
        if self.batches:
            time.sleep(self.pause)
        return super().get(timeout)


def _play(loop: Loop, events: list[Event], pause: float = 0.0) -> None:
    """Consume `events` (a transaction per read, `pause` seconds apart), then run until
    everything is acknowledged."""
    transactions: list[list[Event]] = [[]]
    for event in events:
        transactions[-1].append(event)
        if isinstance(event, Commit):
            transactions.append([])
    feed = TrickleFeed([t for t in transactions if t], pause)
    last = [e for e in events if isinstance(e, Commit)][-1]
    loop.consume(feed, last.position)


def test_answers_out_of_order_never_move_the_checkpoint_past_an_unanswered_change() -> None:
    # Requests of 2 operations; every fourth one is answered last, after the three behind it.
    cfg = config(
        sink={"bulk": {"max_actions": 2, "flush_interval_ms": 10_000, "concurrency": 4}},
        checkpoint={"max_transactions": 1},
    )
    sink = SlowSink(lambda n, _: 0.15 if n % 4 == 0 else 0.01)
    sink.reject = {"7"}
    ids_of = {n: [3 * n - 2, 3 * n - 1, 3 * n] for n in range(1, 13)}
    recorder = CheckingRecorder(sink, ids_of)
    stores = memory_stores()
    loop = _loop(cfg, sink, recorder, stores)
    parked_before: list[str] = []
    original = stores.letters.park

    def park(letters: Any) -> Any:
        parked_before.append(str(loop.acked.position.gtid))
        return original(letters)

    stores.letters.park = park  # type: ignore[method-assign]
    events: list[Event] = []
    for n, ids in ids_of.items():
        events += transaction(n, *(insert(i) for i in ids))

    _play(loop, events, pause=0.02)

    assert sink.answered != sorted(sink.answered), "the answers came in order: nothing tested"
    assert recorder.violations == []
    assert 1 < sink.most_out <= 4
    assert loop.acked.position.gtid == "0-1-12"
    assert loop.acked.counter == START.counter + 12
    # Document 7 (transaction 3) is parked before the checkpoint reaches transaction 3.
    assert [letter.doc_id for _, letter in stores.letters.list()] == ["7"]
    assert parked_before and parked_before[0] in ("0-1-0", "0-1-1", "0-1-2")
    assert len(sink.live()) == 35


def test_a_request_stuck_retrying_holds_the_checkpoint_until_the_stop_interrupts_it() -> None:
    cfg = config(sink={"bulk": {"max_actions": 1, "flush_interval_ms": 10_000}})
    stop = threading.Event()

    class StuckSink(FakeSink):
        def write(
            self,
            items: Sequence[BulkItem],
            stop: threading.Event | None = None,
            on_retry: Callable[[BaseException], None] | None = None,
        ) -> list[tuple[BulkItem, ItemResult]]:
            if items[0].action.doc_id == "2":  # an outage this request alone sees
                backoff = Backoff(first=0.05, cap=0.05)
                while True:
                    backoff.wait(stop)
            return super().write(items, stop, on_retry)

    sink = StuckSink()
    recorder = FakeRecorder()
    loop = _loop(cfg, sink, recorder, memory_stores())
    loop._stop = stop  # the loop and its workers share the stop, as in the pipeline
    loop.inflight._stop = stop
    loop.inflight._halt._stop = stop
    events = [e for n in (1, 2, 3, 4) for e in transaction(n, insert(n))]
    timer = threading.Timer(0.5, stop.set)
    timer.start()
    try:
        with pytest.raises(Interrupted):
            loop.consume(ScriptedFeed(Clock(), (0, events)), None)
    finally:
        timer.cancel()

    assert {i.action.doc_id for i in sink.sent()} == {"1", "3", "4"}  # sent, answered
    assert loop.acked.position.gtid == "0-1-1"
    assert all(c.position.gtid == "0-1-1" for c in recorder.offered)


def _elapsed(concurrency: int, requests: int, delay: float) -> float:
    cfg = config(
        sink={"bulk": {"max_actions": 1, "flush_interval_ms": 10_000, "concurrency": concurrency}}
    )
    sink = SlowSink(lambda n, _: delay)
    loop = _loop(cfg, sink, FakeRecorder(), memory_stores())
    events = [e for n in range(1, requests + 1) for e in transaction(n, insert(n))]
    started = time.monotonic()
    _play(loop, events)
    assert loop.acked.position.gtid == f"0-1-{requests}"
    assert sink.most_out <= concurrency
    return time.monotonic() - started


def test_throughput_over_a_slow_link_grows_with_the_requests_in_flight() -> None:
    one, four = _elapsed(1, 16, 0.05), _elapsed(4, 16, 0.05)
    assert one >= 16 * 0.05
    assert one / four >= 2.5, (one, four)


# -- snapshot chunks read ahead ------------------------------------------------------------------


class ChunkRows:
    """A table `shop.items` of ids 1..`n`, read in chunks; every read is logged."""

    def __init__(self, n: int) -> None:
        self.ids = list(range(1, n + 1))
        self.reads: list[tuple[Any, ...] | None] = []

    def unique_key(self, schema: str, table: str) -> tuple[str, ...]:
        return ("id",)

    def estimate_rows(self, schema: str, table: str) -> int:
        return len(self.ids)

    def consistent_chunk(
        self,
        schema: str,
        table: str,
        key: Sequence[str],
        after: tuple[Any, ...] | None,
        limit: int,
        condition: Any = None,
    ) -> tuple[TableSchema, list[dict[str, Any]], tuple[str, int]]:
        self.reads.append(after)
        rows = [{"id": i, "name": "x"} for i in self.ids if after is None or i > after[0]]
        return ITEMS, rows[:limit], ("bin.000001", 1000)

    def close(self) -> None:
        return None


def test_chunks_read_ahead_are_recorded_done_only_in_order_and_a_dropped_one_is_read_again() -> (
    None
):
    cfg = config(snapshot={"chunk_size": 2, "chunks_in_flight": 3})
    rows = ChunkRows(7)  # chunks [1,2] [3,4] [5,6] [7]
    stores = memory_stores()
    stores.snapshots.save(Progress(table="shop.items"))
    submitted: list[Chunk] = []
    stop = threading.Event()
    snapshotter = Snapshotter(
        cfg,
        lambda: rows,  # type: ignore[arg-type, return-value]
        stores.snapshots,
        submitted.append,
        stop,
        lambda _: None,
        lambda *_: None,
        lambda *_: None,
    )

    def wait_for(what: Callable[[], bool]) -> None:
        deadline = time.monotonic() + 5
        while not what():
            assert time.monotonic() < deadline, "timed out"
            time.sleep(0.01)

    def after() -> Any:
        return decode_key(stores.snapshots.load_all()["shop.items"].after)

    snapshotter.start()
    try:
        wait_for(lambda: len(submitted) == 3)  # three read ahead, none acknowledged
        time.sleep(0.1)
        assert len(submitted) == 3
        submitted[1].done.set()  # the second is answered first: nothing is recorded
        time.sleep(0.1)
        assert after() is None
        assert len(submitted) == 3
        submitted[0].dropped = True  # the first could not be versioned: all read again
        submitted[0].done.set()
        wait_for(lambda: len(submitted) == 6)
        assert [c.rows[0]["id"] for c in submitted] == [1, 3, 5, 1, 3, 5]
        assert after() is None
        for chunk in submitted[3:5]:
            chunk.done.set()
        wait_for(lambda: after() == (4,))
        wait_for(lambda: len(submitted) == 7)
        submitted[5].done.set()
        submitted[6].done.set()
        wait_for(lambda: stores.snapshots.load_all()["shop.items"].state == "done")
        progress = stores.snapshots.load_all()["shop.items"]
        assert (progress.after, progress.rows_done) == ([7], 7)
    finally:
        stop.set()
        snapshotter.join(5)
    assert snapshotter.failure is None


def test_versions_are_in_binlog_order_whatever_the_answer_order() -> None:
    cfg = config(sink={"bulk": {"max_actions": 1, "flush_interval_ms": 10_000}})
    sink = SlowSink(lambda n, _: 0.05 if n % 2 == 0 else 0.0)
    loop = _loop(cfg, sink, FakeRecorder(), memory_stores())
    _play(loop, [e for n in range(1, 9) for e in transaction(n, insert(1, f"v{n}"))])

    assert sink.live() == {"1": {"id": 1, "name": "v8"}}
    assert [i.version >> ROW_BITS for i in sink.sent()] == list(range(501, 509))
