from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

from cdc.model.events import Begin, Column, Commit, Kind, RowChange, TableSchema
from cdc.model.position import Position
from cdc.source.handoff import BATCH_EVENTS, Failed, Handoff

TABLE = TableSchema("s", "t", (Column("id", Kind.INT, is_primary=True),), ("id",))


class _EndlessSource:
    """Yields big row changes as fast as the reader takes them."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.produced = 0

    def events(self) -> Iterator[Any]:
        while True:
            self.produced += 1
            yield RowChange(TABLE, "insert", None, {"id": self.produced}, self.size)

    def interrupt(self) -> None:
        return None


class _Transactions:
    """Three one-row transactions, then a failure."""

    def events(self) -> Iterator[Any]:
        for n in range(3):
            yield Begin(gtid=f"0-1-{n}")
            yield RowChange(TABLE, "insert", None, {"id": n}, 10)
            yield Commit(Position(flavor="mariadb", gtid=f"0-1-{n}"), timestamp=0)
        yield Begin(gtid="0-1-3")
        yield RowChange(TABLE, "insert", None, {"id": 3}, 10)
        raise ConnectionResetError("link cut")

    def interrupt(self) -> None:
        return None


def test_the_reader_stops_reading_when_it_holds_too_many_bytes() -> None:
    source = _EndlessSource(size=1024 * 1024)
    reader = Handoff(source, max_events=10_000, max_bytes=4 * 1024 * 1024)
    try:
        time.sleep(0.5)
        # The bound is checked before each hand-off of a full batch of rows.
        assert BATCH_EVENTS <= reader.held <= 2 * BATCH_EVENTS
        produced = source.produced
        time.sleep(0.3)
        assert source.produced == produced  # blocked: reads nothing more
        batch = reader.get(timeout=1)
        assert isinstance(batch, list) and len(batch) == BATCH_EVENTS
        time.sleep(0.3)
        assert source.produced > produced  # room again: reading resumed
        assert reader.held <= 2 * BATCH_EVENTS
    finally:
        reader.stop()


def test_small_rows_are_bounded_by_count() -> None:
    source = _EndlessSource(size=10)
    reader = Handoff(source, max_events=1_000)
    try:
        time.sleep(0.3)
        assert 1_000 <= reader.held < 1_000 + BATCH_EVENTS
    finally:
        reader.stop()


def test_events_come_in_order_and_an_open_transaction_is_not_handed_over() -> None:
    reader = Handoff(_Transactions())
    try:
        events: list[str] = []
        while True:
            item = reader.get(timeout=2)
            assert item is not None
            if isinstance(item, Failed):
                break
            events += [type(e).__name__ for e in item]
        # The fourth transaction's Begin and row were read but never handed over: the failure
        # leaves it open, and it is read again after reconnecting.
        assert events == ["Begin", "RowChange", "Commit"] * 3
        assert isinstance(item.error, ConnectionResetError)
        assert reader.held == 0
    finally:
        reader.stop()


def test_a_consumer_takes_everything_handed_over_in_one_call() -> None:
    reader = Handoff(_Transactions())
    try:
        time.sleep(0.3)  # the source has run to its failure by now
        first = reader.get(timeout=1)
        assert isinstance(first, list) and len(first) == 9
        assert isinstance(reader.get(timeout=1), Failed)
    finally:
        reader.stop()


class _Silent:
    """A server with nothing to send."""

    def events(self) -> Iterator[Any]:
        while True:
            time.sleep(0.05)
            yield from ()

    def interrupt(self) -> None:
        return None


def test_wake_makes_a_waiting_get_return_at_once() -> None:
    reader = Handoff(_Silent())
    try:
        threading.Timer(0.1, reader.wake).start()
        started = time.monotonic()
        assert reader.get(timeout=5) is None
        assert time.monotonic() - started < 2
        # Woken once: the next wait lasts its timeout again.
        started = time.monotonic()
        assert reader.get(timeout=0.3) is None
        assert time.monotonic() - started >= 0.25
    finally:
        reader.stop()
