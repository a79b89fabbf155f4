"""Bulk requests in flight: written on a few threads, acknowledged in binlog order.

The main loop hands each `_bulk` request to `InFlight.send` together with what acknowledging
it means: the checkpoint it completes, if any, and the snapshot chunks whose last items it
carries. Up to `sink.bulk.concurrency` requests are out at once, each written by `Sink.write`
on a worker thread of its own (retrying failed items, probing an unreachable cluster, exactly
as one request alone). The order in which Elasticsearch applies them does not matter to the
documents, since every operation carries an external version (invariant 2 in
docs/design.md), but it matters to the checkpoint: finished requests are handed to
`on_settled` strictly in the order they were sent, and the oldest one still out holds back
every later one, so the checkpoint never passes a change that is not acknowledged
(invariant 1).

A request keeps its slot until it is settled, not merely answered, so however the answers
are ordered at most `concurrency` requests, each within `sink.bulk.max_bytes` (plus one
document), are held at a time. When every slot is taken `send` waits: the main loop stops
reading, the bounded hand-off fills and the binlog reader stops too (backpressure).

With a concurrency of 1 no thread is started: `send` writes the request itself and settles it
before returning, as the loop did before requests could overlap.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from cdc.engine.ports import Writer
from cdc.engine.snapshotter import Chunk
from cdc.model.checkpoint import Checkpoint
from cdc.sink.bulk import BulkItem, ItemResult

_STOP_POLL_SECONDS = 0.05
"""How soon a worker waiting to retry notices that the connector is stopping."""


@dataclass(eq=False)
class Request:
    """One `_bulk` request and what settling it acknowledges."""

    items: list[BulkItem]
    checkpoint: Checkpoint | None = None
    """The checkpoint that may be stored once this request and every earlier one are done."""
    chunks: list[Chunk] = field(default_factory=list)
    """Snapshot chunks whose last items are in this request."""
    rejected: list[tuple[BulkItem, ItemResult]] = field(default_factory=list)
    """The items Elasticsearch rejected for their content, once written."""
    error: BaseException | None = None
    """Why writing it stopped (the connector is stopping, a terminal error, a bug)."""
    done: bool = False


class _Halt(threading.Event):
    """Set by `InFlight.close`, and seen as set as soon as the loop's own stop is: what the
    workers' writes are interrupted by."""

    def __init__(self, stop: threading.Event) -> None:
        super().__init__()
        self._stop = stop

    def is_set(self) -> bool:
        return self._stop.is_set() or super().is_set()

    def wait(self, timeout: float | None = None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.is_set():
            left = _STOP_POLL_SECONDS if deadline is None else deadline - time.monotonic()
            if left <= 0:
                return False
            super().wait(min(left, _STOP_POLL_SECONDS))
        return True


class InFlight:
    """The bulk requests sent and not yet settled, oldest first."""

    def __init__(
        self,
        sink: Writer,
        concurrency: int,
        stop: threading.Event,
        on_retry: Callable[[BaseException], None],
        on_settled: Callable[[Request], None],
    ) -> None:
        self._sink = sink
        self._concurrency = concurrency
        self._stop = stop
        self._halt = _Halt(stop)
        self._on_retry = on_retry
        self._on_settled = on_settled
        self._out: deque[Request] = deque()
        self._todo: queue.SimpleQueue[Request | None] = queue.SimpleQueue()
        self._finished = threading.Condition()
        self._workers: list[threading.Thread] = []
        self._idle = 0
        """Workers waiting for a request (guarded by `_finished`)."""

    def __len__(self) -> int:
        return len(self._out)

    @property
    def newest(self) -> Request | None:
        """The request sent last that is not settled yet."""
        return self._out[-1] if self._out else None

    def send(self, request: Request) -> None:
        """Write `request`, first waiting for a free slot (settling what finished meanwhile).
        Raises what a settled request failed with, or what `on_settled` raises."""
        if self._concurrency == 1:
            request.rejected = self._sink.write(
                request.items, stop=self._stop, on_retry=self._on_retry
            )
            request.done = True
            self._out.append(request)
            self.settle()
            return
        while len(self._out) >= self._concurrency:
            self._wait_oldest(None)
            self.settle()
        with self._finished:
            # A worker more only when every one is busy: each thread that builds and parses
            # bodies keeps a malloc arena of its own, so idle ones would cost memory.
            start = self._idle == 0 and len(self._workers) < self._concurrency
            if not start:
                self._idle -= 1  # an idle worker takes this request
        if start:
            self._start_worker()
        self._out.append(request)
        self._todo.put(request)

    def settle(self) -> None:
        """Hand every finished request at the head to `on_settled`, oldest first; stops at the
        first one still out. Raises a failed request's error instead of settling it."""
        out = self._out
        while out and out[0].done:
            request = out.popleft()
            if request.error is not None:
                raise request.error
            self._on_settled(request)

    def drain(self, timeout: float | None) -> bool:
        """Settle requests until none is out, waiting at most `timeout` seconds (None: as
        long as it takes); True when none is out."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self._out:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return False
            if self._wait_oldest(left):
                self.settle()
        return True

    def close(self) -> None:
        """Interrupt the workers' retries and let their threads end. Requests still out are
        abandoned: the stream replays them from the checkpoint."""
        self._halt.set()
        for _ in self._workers:
            self._todo.put(None)
        self._workers.clear()

    # -- workers ------------------------------------------------------------------------------

    def _wait_oldest(self, timeout: float | None) -> bool:
        oldest = self._out[0]
        with self._finished:
            return self._finished.wait_for(lambda: oldest.done, timeout)

    def _start_worker(self) -> None:
        worker = threading.Thread(
            target=self._work, name=f"bulk-{len(self._workers) + 1}", daemon=True
        )
        self._workers.append(worker)
        worker.start()

    def _work(self) -> None:
        while True:
            request = self._todo.get()
            if request is None:
                return
            self._write(request)
            with self._finished:
                request.done = True
                self._idle += 1
                self._finished.notify_all()

    def _write(self, request: Request) -> None:
        try:
            request.rejected = self._sink.write(
                request.items, stop=self._halt, on_retry=self._on_retry
            )
        except BaseException as exc:  # raised in the main loop, which owns the process
            request.error = exc
