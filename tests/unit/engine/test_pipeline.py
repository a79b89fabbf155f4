"""The supervised stream, with a played binlog instead of a server: it reconnects after a broken
link from the last commit, re-reads the cut transaction whole, and ends caught up with the
checkpoint at the server's position."""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from fakes import (
    FakeSink,
    FakeSource,
    PlayedBinlog,
    PlayedStream,
    config,
    insert,
    position,
    transaction,
    update,
)

from cdc.engine.pipeline import STREAMING_GC_THRESHOLDS, Pipeline
from cdc.model.checkpoint import Checkpoint
from cdc.model.events import Event
from cdc.model.position import Position, ServerInfo
from cdc.model.versions import version
from cdc.testing.memory import Memory, memory_stores

BINLOG = [
    transaction(1, insert(1, "a"), insert(2, "b")),
    transaction(2, update(1, "a2")),
    transaction(3, insert(3, "c"), update(2, "b2"), insert(4, "d")),
    transaction(4, update(3, "c2")),
]


def _run(binlog: PlayedBinlog, memory: Memory) -> tuple[Pipeline, FakeSink]:
    sink = FakeSink()
    stop = threading.Event()
    timer = threading.Timer(20, stop.set)
    timer.start()
    try:
        cfg = config(sink={"bulk": {"flush_interval_ms": 20}}, checkpoint={"interval_ms": 1})
        pipeline = Pipeline(cfg, sink, memory_stores(memory), stop=stop, source=FakeSource(binlog))
        pipeline.run(until_caught_up=True)
    finally:
        timer.cancel()
    assert not stop.is_set(), "the run did not catch up"
    return pipeline, sink


def test_a_stream_cut_inside_a_transaction_resumes_after_the_last_commit() -> None:
    memory = Memory()
    memory.checkpoint = Checkpoint(position(0), counter=40, written_at=1.0)
    # The first connection breaks after the second row of transaction 3 (event 9 of 14).
    binlog = PlayedBinlog(BINLOG, cut_after=9, cuts=1)

    pipeline, sink = _run(binlog, memory)

    assert binlog.streams == [position(0), position(2)]
    assert pipeline.stats.reconnects == 1
    assert pipeline.stats.transactions == 4
    assert sink.live() == {
        "1": {"id": 1, "name": "a2"},
        "2": {"id": 2, "name": "b2"},
        "3": {"id": 3, "name": "c2"},
        "4": {"id": 4, "name": "d"},
    }
    # Every operation has its binlog version; the cut transaction's first two rows were read
    # twice and got the same versions both times.
    assert {(i.action.doc_id, i.version) for i in sink.sent()} == {
        ("1", version(41, 0)),
        ("2", version(41, 1)),
        ("1", version(42, 0)),
        ("3", version(43, 0)),
        ("2", version(43, 1)),
        ("4", version(43, 2)),
        ("3", version(44, 0)),
    }
    assert memory.checkpoint is not None
    assert (memory.checkpoint.position, memory.checkpoint.counter) == (position(4), 44)
    assert memory.checkpoint.server == "server_id=1"  # the server read, not the stored one
    assert memory.heartbeat is not None and memory.heartbeat[0].state == "stopped"


def test_a_first_run_starts_at_the_server_position_and_records_it_at_once() -> None:
    memory = Memory()
    binlog = PlayedBinlog(BINLOG)

    pipeline, sink = _run(binlog, memory)

    assert binlog.streams == [position(4)]  # earlier rows are not streamed
    assert sink.sent() == []
    assert memory.saved[0].position == position(4)
    assert memory.saved[0].written_at > 0
    assert pipeline.stats.transactions == 0


class _BrokenSource(FakeSource):
    """A source whose stream fails with a programming error, not a link error."""

    def stream(self, start: Position, info: ServerInfo) -> PlayedStream:
        self.binlog.streams.append(start)
        return _BuggyStream()


class _BuggyStream(PlayedStream):
    def __init__(self) -> None:
        super().__init__([], None)

    def events(self) -> Iterator[Event]:
        yield from transaction(1, insert(1))
        raise KeyError("table_id 90")


def test_a_bug_in_the_stream_stops_the_run_instead_of_being_retried() -> None:
    memory = Memory()
    memory.checkpoint = Checkpoint(position(0), counter=40, written_at=1.0)
    binlog = PlayedBinlog(BINLOG)
    cfg = config(checkpoint={"interval_ms": 1})
    pipeline = Pipeline(
        cfg, FakeSink(), memory_stores(memory), stop=threading.Event(), source=_BrokenSource(binlog)
    )

    with pytest.raises(KeyError, match="table_id 90"):
        pipeline.run(until_caught_up=True)

    assert binlog.streams == [position(0)]  # no reconnect
    assert pipeline.stats.reconnects == 0
    assert memory.heartbeat is not None and memory.heartbeat[0].last_error == "'table_id 90'"


def test_streaming_collects_cycles_less_often_and_restores_the_thresholds() -> None:
    before = gc.get_threshold()
    seen: list[tuple[int, ...]] = []

    class WatchingSink(FakeSink):
        def write(self, items: Any, stop: Any = None, on_retry: Any = None) -> Any:
            seen.append(gc.get_threshold())
            return super().write(items, stop, on_retry)

    sink = WatchingSink()
    cfg = config(sink={"bulk": {"flush_interval_ms": 20}}, checkpoint={"interval_ms": 1})
    memory = Memory()
    memory.checkpoint = Checkpoint(position(0), counter=40, written_at=1.0)
    source = FakeSource(PlayedBinlog(BINLOG))
    Pipeline(cfg, sink, memory_stores(memory), source=source).run(until_caught_up=True)
    assert seen and set(seen) == {STREAMING_GC_THRESHOLDS}
    assert gc.get_threshold() == before
