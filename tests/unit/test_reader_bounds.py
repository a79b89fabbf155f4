from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

from cdc.events import Column, Kind, RowChange, TableSchema
from cdc.pipeline import _Reader

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


def test_the_reader_stops_reading_when_its_queue_holds_too_many_bytes() -> None:
    source = _EndlessSource(size=1024 * 1024)
    reader = _Reader(source, maxsize=10_000, max_bytes=4 * 1024 * 1024)  # type: ignore[arg-type]
    try:
        time.sleep(0.5)
        # The bound is checked before each put, so one row past it may be queued.
        assert reader.queue.qsize() == source.produced - 1 <= 6
        taken = [reader.queue.get_nowait() for _ in range(3)]
        for event in taken:
            reader.taken(event)
        time.sleep(0.5)
        assert reader.queue.qsize() <= 6
        assert source.produced - 1 - len(taken) == reader.queue.qsize()
    finally:
        reader.stop()


def test_small_rows_are_bounded_by_count() -> None:
    source = _EndlessSource(size=10)
    reader = _Reader(source, maxsize=100)  # type: ignore[arg-type]
    try:
        time.sleep(0.3)
        assert reader.queue.qsize() == 100
    finally:
        reader.stop()
