"""Retrying a link that is down: the one backoff policy, and one log line per outage.

Every loop that waits for an outside system to come back (the binlog stream, bulk requests,
checkpoint and heartbeat writes, dead-letter parking, snapshot reads, the startup checks) uses
`Backoff` for its waits and `Outage` for what it says: the first failure is logged once with
its reason, the recovery once with how long it took and how many retries, and nothing in
between. Whether an error is retried at all is decided by its class (`CdcError.transient`,
see `cdc.errors`), never by where it was caught.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from typing import TypeVar

from cdc.errors import Interrupted, TransientError
from cdc.metrics import Metrics

log = logging.getLogger(__name__)

PROBE_SECONDS = 2.0
"""The longest wait between two tries of a link that is down: an outage costs its own length
and at most about this much more (a busy cluster answering 429 backs off further, up to
`sink.max_backoff`)."""

T = TypeVar("T")


class Backoff:
    """Capped exponential backoff with jitter: each wait is a random 50-100% of a delay that
    starts at `first` seconds and doubles up to `cap`; `reset` after a success."""

    def __init__(self, first: float = 0.2, cap: float = PROBE_SECONDS) -> None:
        self.first = first
        self.cap = cap
        self._delay = first

    def wait(self, stop: threading.Event | None = None) -> None:
        """Sleep for the next delay. Raises `Interrupted` as soon as `stop` is set."""
        pause = self._delay * random.uniform(0.5, 1.0)
        self._delay = min(self._delay * 2, self.cap)
        if stop is None:
            time.sleep(pause)
        elif stop.wait(pause):
            raise Interrupted("stopping while an outside system was unavailable")

    def reset(self) -> None:
        self._delay = self.first


class Outage:
    """The state of one link: one warning when it goes down, one when it comes back.

    With `metrics` and a `key` (`source`, `sink` or `checkpoint`), it also keeps
    `cdc_degraded{component}` and `cdc_reconnects_total{component}` up to date.
    """

    def __init__(self, component: str, key: str | None = None, metrics: Metrics | None = None):
        self.component = component
        self._key = key
        self._metrics = metrics
        self.since: float | None = None
        """Monotonic time of the first failure of the current outage; None while up."""
        self.retries = 0
        self._lock = threading.Lock()
        """Several threads may report on one link (bulk requests in flight)."""

    @property
    def down(self) -> bool:
        return self.since is not None

    def failed(self, exc: BaseException) -> None:
        """Record a failure; the first of an outage is logged."""
        with self._lock:
            self.retries += 1
            if self._metrics is not None and self._key is not None:
                self._metrics.reconnects.labels(self._key).inc()
            if self.since is None:
                self.since = time.monotonic()
                if self._metrics is not None and self._key is not None:
                    self._metrics.degraded.labels(self._key).set(1)
                log.warning("%s unavailable: %s; retrying with backoff", self.component, exc)

    def recovered(self) -> None:
        """Record a success; the end of an outage is logged."""
        if self.since is None:
            return
        with self._lock:
            if self.since is not None:
                if self._metrics is not None and self._key is not None:
                    self._metrics.degraded.labels(self._key).set(0)
                log.warning(
                    "%s recovered after %.1f s and %d retries",
                    self.component,
                    time.monotonic() - self.since,
                    self.retries,
                )
            self.since = None
            self.retries = 0


def retry(
    call: Callable[[], T],
    outage: Outage,
    stop: threading.Event | None,
    backoff: Backoff | None = None,
) -> T:
    """`call()`, again and again while it raises a transient error, waiting `backoff` (0.2 s
    doubling to 30 s by default) in between. Any other error is raised at once; `Interrupted`
    when `stop` is set while waiting."""
    backoff = backoff or Backoff()
    while True:
        try:
            result = call()
        except TransientError as exc:
            outage.failed(exc)
            backoff.wait(stop)
            continue
        outage.recovered()
        return result
