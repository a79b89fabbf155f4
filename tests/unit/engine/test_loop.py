"""The main loop, driven by scripted events and fakes: versions, what the checkpoint may
name, dropping a half-read transaction, when a batch is sent, and dead-letter parking."""

from __future__ import annotations

import threading
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from fakes import (
    Clock,
    FakeRecorder,
    FakeSink,
    ScriptedFeed,
    config,
    insert,
    position,
    transaction,
    update,
)

from cdc.config import ConnectorConfig
from cdc.engine.loop import Loop, Outages
from cdc.errors import CdcError, DocumentRejected, SourceUnavailable
from cdc.metrics import Metrics
from cdc.model.checkpoint import Checkpoint
from cdc.model.events import Begin, Commit, Event
from cdc.model.versions import ROW_BITS, version
from cdc.retry import Outage
from cdc.source.handoff import Failed
from cdc.testing.memory import memory_stores
from cdc.transform.mapping import Mappers

START = Checkpoint(position(0), counter=500, server="server_id=1", written_at=1.0)
QUIET = {"flush_interval_ms": 10_000}


class Rig:
    """A loop with fakes around it, started from `START` (counter 500)."""

    def __init__(self, cfg: ConnectorConfig) -> None:
        self.clock = Clock()
        self.sink = FakeSink(self.clock)
        self.recorder = FakeRecorder()
        self.stores = memory_stores()
        self.stop = threading.Event()
        metrics = Metrics()
        self.outages = Outages(Outage("source"), Outage("sink"), Outage("store"))
        self.loop = Loop(
            cfg,
            START,
            "server_id=1",
            self.sink,
            self.recorder,
            self.stores.letters,
            self.outages,
            metrics,
            self.stop,
            Mappers(cfg.mapping_for, ZoneInfo("UTC")),
            clock=self.clock,
        )

    def play(self, *batches: tuple[float, list[Event] | Failed]) -> BaseException | None:
        """Consume the batches, then stop once the feed is idle (or return its failure)."""
        feed = ScriptedFeed(self.clock, *batches)
        target = position(10_000)  # never reached: the loop runs until the feed fails
        original = feed.get

        def get(timeout: float) -> Any:
            if feed.empty():
                self.stop.set()
            return original(timeout)

        feed.get = get  # type: ignore[method-assign]
        failure = self.loop.consume(feed, target)
        # A failed feed leaves requests in flight (they outlive reconnects); see them answered.
        self.loop.inflight.drain(None)
        return failure

    def flush(self) -> None:
        """Send the batch and wait for the answers."""
        self.loop.flush()
        self.loop.inflight.drain(None)

    def versions(self) -> list[tuple[int, int]]:
        """(counter, slot) of every item sent, in order."""
        mask = (1 << ROW_BITS) - 1
        return [(i.version >> ROW_BITS, i.version & mask) for i in self.sink.sent()]


def test_operations_are_numbered_by_transaction_and_row_in_binlog_order() -> None:
    rig = Rig(config(sink={"bulk": QUIET}))
    ddl: list[Event] = [Begin(None), Commit(position(2), timestamp=0)]  # a statement, no rows
    rig.play(
        (0, transaction(1, insert(1), insert(2), update(1, "y"))),
        (0, ddl),
        (0, transaction(3, insert(3))),
    )
    rig.flush()

    assert rig.versions() == [(501, 0), (501, 1), (501, 2), (503, 0)]
    assert [i.action.doc_id for i in rig.sink.sent()] == ["1", "2", "1", "3"]
    assert rig.loop.acked.counter == 503  # the DDL took counter 502
    assert rig.loop.acked.position == position(3)


def test_a_primary_key_change_deletes_the_old_document_in_the_same_transaction() -> None:
    rig = Rig(config(sink={"bulk": QUIET}))
    moved = update(1, "y")
    moved = type(moved)(moved.table, "update", {"id": 1, "name": "x"}, {"id": 9, "name": "y"})
    rig.play((0, transaction(1, moved)))
    rig.flush()

    sent = rig.sink.sent()
    assert [(i.action.op, i.action.doc_id, i.version) for i in sent] == [
        ("delete", "1", version(501, 0)),
        ("index", "9", version(501, 1)),
    ]


def test_the_checkpoint_names_only_commits_whose_changes_were_all_acknowledged() -> None:
    # Three operations per request: the open transaction's first three go out before its
    # commit is read, and the checkpoint still names the transaction before it.
    rig = Rig(config(sink={"bulk": {"max_actions": 3, **QUIET}}))
    first, second = transaction(1, insert(1)), transaction(2, insert(2), insert(3), insert(4))
    rig.play((0, first + second[:4]), (0, second[4:]))

    assert [len(r.items) for r in rig.sink.requests] == [3, 1]
    after_first_request = rig.recorder.offered[0]
    assert after_first_request.position == position(1)
    assert after_first_request.counter == 501
    assert rig.loop.acked.position == position(2)
    rig.loop.offer(force=True)  # as on stop; until then offers are rate-limited
    assert rig.recorder.offered[-1] == rig.loop.acked


def test_a_half_read_transaction_is_dropped_and_read_again_whole() -> None:
    rig = Rig(config(sink={"bulk": QUIET}))
    whole = transaction(2, insert(2, "a"), insert(3, "b"))
    failure = rig.play((0, transaction(1, insert(1))), (0, whole[:2]), (0, Failed(_lost())))
    assert isinstance(failure, SourceUnavailable)
    rig.loop.drop_open_transaction()
    assert rig.loop.position == position(1)  # where the next connection resumes

    rig.stop.clear()
    rig.play((0, whole))
    rig.flush()

    assert [i.action.doc_id for i in rig.sink.sent()] == ["1", "2", "3"]
    assert rig.versions() == [(501, 0), (502, 0), (502, 1)]
    assert rig.loop.acked.position == position(2)


def test_a_batch_is_sent_at_max_actions() -> None:
    rig = Rig(config(sink={"bulk": {"max_actions": 2, **QUIET}}))
    rig.play((0, transaction(1, *(insert(i) for i in range(1, 6)))), (0, Failed(_lost())))

    assert [len(r.items) for r in rig.sink.requests] == [2, 2]
    assert rig.loop.batch.items[0].action.doc_id == "5"


def test_a_batch_is_sent_at_max_bytes() -> None:
    rig = Rig(config(sink={"bulk": {"max_bytes": 1024, **QUIET}}))
    rows = [insert(i, "n" * 300) for i in range(1, 8)]
    rig.play((0, transaction(1, *rows)), (0, Failed(_lost())))

    sizes = [sum(len(i.body) for i in r.items) for r in rig.sink.requests]
    assert len(rig.sink.requests) == 2
    assert all(size >= 1024 for size in sizes)
    assert all(
        size - len(r.items[-1].body) < 1024
        for size, r in zip(sizes, rig.sink.requests, strict=True)
    )


def test_a_batch_is_sent_once_its_oldest_operation_waited_the_flush_interval() -> None:
    rig = Rig(config(sink={"bulk": {"flush_interval_ms": 200}}))
    rig.play(
        (100.0, transaction(1, insert(1))),
        (100.1, transaction(2, insert(2))),  # 100 ms later: not yet
        (100.3, transaction(3, insert(3))),  # 300 ms after the first: send
        (100.3, Failed(_lost())),
    )

    assert [[i.action.doc_id for i in r.items] for r in rig.sink.requests] == [["1", "2", "3"]]
    assert rig.sink.requests[0].at == pytest.approx(100.3)
    assert rig.loop.acked.position == position(3)


def test_a_rejected_document_is_parked_before_the_checkpoint_passes_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rig = Rig(config(sink={"bulk": QUIET}, checkpoint={"interval_ms": 1}))
    log: list[str] = []
    rig.sink.log = rig.recorder.log = log
    letters = rig.stores.letters
    original = letters.park

    def park(batch: Any) -> list[str]:
        log.append(f"park {[letter.doc_id for letter in batch]}")
        return original(batch)

    monkeypatch.setattr(letters, "park", park)
    rig.sink.reject = {"2"}
    rig.play((0, transaction(1, insert(1), insert(2, "bad"), insert(3))))
    rig.flush()

    assert log == ["write ['1', '2', '3']", "park ['2']", "offer 0-1-1"]
    ((_, letter),) = letters.list()
    assert (letter.doc_id, letter.table, letter.key, letter.gtid) == (
        "2",
        "shop.items",
        {"id": "2"},
        "0-1-1",
    )
    assert letter.version == version(501, 1)
    assert rig.loop.stats.dead_letters == 1


def test_with_on_rejected_fail_a_rejection_stops_before_the_checkpoint_passes_it() -> None:
    rig = Rig(config(sink={"bulk": QUIET, "on_rejected": "fail"}))
    rig.sink.reject = {"2"}
    with pytest.raises(DocumentRejected, match="document '2' in index 'items'"):
        rig.play((0, transaction(1, insert(1), insert(2))))
        rig.flush()

    assert rig.loop.acked == START
    assert rig.recorder.offered == []
    assert rig.stores.letters.size() == 0


def test_checkpoints_are_offered_at_most_every_interval_or_max_transactions() -> None:
    rig = Rig(
        config(sink={"bulk": QUIET}, checkpoint={"interval_ms": 60_000, "max_transactions": 3})
    )
    rig.play(*((0, transaction(n)) for n in range(1, 8)))

    # Empty transactions are acknowledged as they are read; the first is offered at once (no
    # earlier offer), then every third.
    assert [c.position for c in rig.recorder.offered] == [position(1), position(4), position(7)]


def _lost() -> SourceUnavailable:
    return SourceUnavailable("the binlog stream connection was lost")


def test_a_store_error_that_stopped_the_recorder_stops_the_loop() -> None:
    rig = Rig(config(sink={"bulk": QUIET}))
    rig.recorder.failure = CdcError("writing the checkpoint to Redis: invalid password")

    with pytest.raises(CdcError, match="invalid password"):
        rig.play((0, transaction(1, insert(1))))
