"""The binlog reader thread and the bounded hand-off between it and the main loop.

The source is read on a thread of its own, so that decoding overlaps with the main thread's
mapping and bulk requests. Events cross over in batches (every event up to a commit or a
heartbeat, or `BATCH_EVENTS` events), which costs two lock round trips per batch instead of per
row. The hand-off is bounded by events and by binlog bytes, so that a slow or absent
Elasticsearch stops the reading (backpressure) with memory bounded.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterator
from typing import Protocol

from cdc.model.events import Commit, Event, Heartbeat, RowChange

MAX_EVENTS = 20_000
"""Events held between the threads at most (plus one batch)."""
MAX_BYTES = 16 * 1024 * 1024
"""...and binlog bytes of rows at most (decoded rows take several times more memory)."""
BATCH_EVENTS = 256
"""Events handed over at once at most; a commit or a heartbeat always ends a batch."""


class Stream(Protocol):
    """One connection's worth of binlog events from a start position (`BinlogSource`)."""

    def events(self) -> Iterator[Event]:
        """Events in binlog order; raises `SourceUnavailable` when the link breaks (then a new
        stream is opened from the last commit)."""
        ...

    def interrupt(self) -> None:
        """Unblock a read in progress, from another thread (used when stopping)."""
        ...


class Failed:
    """Handed over instead of a batch when the source raised; the reader then stops."""

    def __init__(self, error: BaseException) -> None:
        self.error = error


class Handoff:
    """Runs `source.events()` on a thread and hands the events over in batches."""

    def __init__(
        self, source: Stream, max_events: int = MAX_EVENTS, max_bytes: int = MAX_BYTES
    ) -> None:
        self.source = source
        self._max_events = max_events
        self._max_bytes = max_bytes
        self._items: deque[tuple[list[Event], int] | Failed] = deque()
        self._events = 0
        self._bytes = 0
        self._changed = threading.Condition()
        self._woken = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="binlog-reader", daemon=True)
        self._thread.start()

    @property
    def held(self) -> int:
        """Events handed over and not taken yet."""
        return self._events

    def empty(self) -> bool:
        return not self._items

    def get(self, timeout: float) -> list[Event] | Failed | None:
        """Every event handed over so far, in order, in one list (or the source's failure,
        once the events before it were taken); None when nothing came within `timeout`.

        Taking all at once lets a busy consumer catch up in few wake-ups: with one-row
        transactions a batch per wake-up cost more than mapping the row.
        """
        with self._changed:
            if not self._items:
                self._changed.wait_for(lambda: bool(self._items) or self._woken, timeout)
                self._woken = False
                if not self._items:
                    return None
            items = self._items
            if isinstance(items[0], Failed):
                return items[0]
            events: list[Event] = []
            size = 0
            while items and not isinstance(items[0], Failed):
                batch, batch_size = items.popleft()  # type: ignore[misc]
                events += batch
                size += batch_size
            self._events -= len(events)
            self._bytes -= size
            self._changed.notify_all()
            return events

    def wake(self) -> None:
        """Make a waiting `get` return now (None if no events came): the consumer has other
        work (a snapshot chunk arrived)."""
        with self._changed:
            self._woken = True
            self._changed.notify_all()

    def _put(self, item: tuple[list[Event], int] | Failed) -> bool:
        with self._changed:
            if not isinstance(item, Failed):
                while (
                    self._events >= self._max_events or self._bytes > self._max_bytes
                ) and not self._stop.is_set():
                    self._changed.wait(0.2)
            if self._stop.is_set():
                return False
            self._items.append(item)
            if not isinstance(item, Failed):
                self._events += len(item[0])
                self._bytes += item[1]
            self._changed.notify_all()
            return True

    def _run(self) -> None:
        batch: list[Event] = []
        size = 0
        try:
            for event in self.source.events():
                batch.append(event)
                cls = event.__class__
                if cls is RowChange:
                    size += event.size  # type: ignore[union-attr]
                if cls is Commit or cls is Heartbeat or len(batch) >= BATCH_EVENTS:
                    if not self._put((batch, size)):
                        return
                    batch = []
                    size = 0
        except BaseException as exc:  # handed to the main thread, which owns retry policy
            # What is held back is part of a transaction the failure leaves open: the main
            # thread discards it and reads it again after reconnecting.
            self._put(Failed(exc))

    def stop(self) -> None:
        self._stop.set()
        self.source.interrupt()
        with self._changed:
            self._changed.notify_all()
        self._thread.join(timeout=5)
