"""The recorder: writes checkpoints and heartbeats on a thread of its own.

A slow or unreachable store (a blackholed Redis waits out its socket timeout) must never stall
streaming: the main loop `offer`s the latest acknowledged checkpoint and goes on; the recorder
writes the newest one it has, retrying with backoff while the store is down, and publishes the
connector's status every `HEARTBEAT_INTERVAL` seconds. A store error that retrying cannot fix
(bad credentials), or a bug, stops the recorder; the main loop finds it in `failure` and stops
too.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from cdc.errors import CdcError, Interrupted, TransientError
from cdc.model.checkpoint import Checkpoint
from cdc.model.status import Status
from cdc.retry import Backoff, Outage
from cdc.state.stores import CheckpointStore, HeartbeatStore

HEARTBEAT_INTERVAL = 2.0
"""Seconds between heartbeats."""
HEARTBEAT_TTL = 15.0
"""Seconds a heartbeat stays alive: a connector silent for longer counts as not running."""


class Recorder:
    """Writes the checkpoints offered to it, newest first, and the heartbeat."""

    def __init__(
        self,
        checkpoints: CheckpointStore,
        heartbeats: HeartbeatStore,
        outage: Outage,
        status: Callable[[], Status],
        on_saved: Callable[[Checkpoint], None],
    ) -> None:
        self._checkpoints = checkpoints
        self._heartbeats = heartbeats
        self._outage = outage
        self._status = status
        self._on_saved = on_saved
        self._lock = threading.Lock()
        self._pending: Checkpoint | None = None
        self._wake = threading.Event()
        self._closed = threading.Event()
        self._beat_at = 0.0
        self._thread = threading.Thread(target=self._run, name="checkpoint-recorder", daemon=True)
        self.failure: BaseException | None = None
        """The error that stopped the recorder, if one did."""

    def start(self) -> None:
        self._thread.start()

    def offer(self, checkpoint: Checkpoint) -> None:
        """Write `checkpoint` soon, instead of any older one not written yet."""
        with self._lock:
            self._pending = checkpoint
        self._wake.set()

    def _run(self) -> None:
        backoff = Backoff(first=0.2)
        try:
            while not self._closed.is_set():
                self._wake.wait(timeout=HEARTBEAT_INTERVAL / 2)
                self._wake.clear()
                if self._closed.is_set():
                    return
                if self._write() and self._beat():
                    backoff.reset()
                    self._outage.recovered()
                else:
                    backoff.wait(self._closed)
        except Interrupted:
            return
        except BaseException as exc:  # raised by the main loop, which owns the process
            self.failure = exc

    def _write(self) -> bool:
        with self._lock:
            checkpoint = self._pending
        if checkpoint is None:
            return True
        try:
            self._checkpoints.save(checkpoint.stamped())
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
            self._heartbeats.beat(self._status(), HEARTBEAT_TTL)
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
        try:
            return self._write()
        except CdcError:
            return False
