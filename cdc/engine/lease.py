"""Active/standby: the lease that decides which of several connectors of one name streams.

Every `cdc run` with `ha.enabled` and the same name and Redis competes for one lease, a token
with a time to live (`ha.lease_ttl`) in Redis. The holder streams and renews it every third of
its TTL; the others wait as standbys, say so once in their log and keep a standby mark that
`cdc status` lists, and take the lease when it lapses: after the active is killed, frozen past
the TTL or cut off from Redis. Every checkpoint write is fenced by the token (compare-and-set
on the server, `cdc.state.redis`), so a deposed active that wakes up can never move the
position back; it notices at its next renewal (or its next checkpoint write) and steps down to
standby by itself. An active that cannot renew for two thirds of the TTL steps down too, before
a standby can take over. Its writes to Elasticsearch meanwhile are versioned like any replay,
so they cannot undo the new active's. See "Active/standby" in docs/design.md.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable

from cdc.errors import CdcError, TransientError
from cdc.state.stores import LeaseStore

log = logging.getLogger(__name__)


def new_token() -> str:
    """A token naming this process: `host:pid:random`."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class Lease:
    """This process's part in the lease; see the module docstring."""

    def __init__(
        self,
        store: LeaseStore,
        ttl: float,
        stop: threading.Event,
        token: str | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self.ttl = ttl
        self._stop = stop
        self.token = token or new_token()
        self._clock = clock
        self.holder: str | None = None
        """The token holding the lease when this process last looked (as a standby)."""
        self.ends = threading.Event()
        """Set when this process's current term ends (see `term`)."""
        self._lock = threading.Lock()
        self._released = False

    def wait_until_held(self) -> bool:
        """Wait as a standby until this process holds the lease (True), or until stopped
        (False). Says once who is active; keeps this standby's mark alive meanwhile."""
        announced = None
        while not self._stop.is_set():
            try:
                if self._store.acquire(self.token, self.ttl):
                    return True
                self.holder = self._store.holder()
                self._store.standby(self.token, self.ttl)
            except TransientError as exc:
                self.holder = f"unknown ({exc.message})"
            if announced != self.holder:
                log.warning(
                    "standby: %s holds the lease; this connector takes over when it lapses "
                    "(ha.lease_ttl %g s)",
                    self.holder,
                    self.ttl,
                )
                announced = self.holder
            self._stop.wait(min(1.0, self.ttl / 5))
        return False

    def term(self) -> threading.Event:
        """Start renewing the lease on a thread of its own; returns an event that is set when
        this process's term ends: the lease went to another, could not be renewed for two
        thirds of its TTL, or the connector is stopping."""
        ends = self.ends = threading.Event()
        self._released = False
        thread = threading.Thread(target=self._renew, args=(ends,), name="lease", daemon=True)
        thread.start()
        return ends

    def _renew(self, ends: threading.Event) -> None:
        renewed = self._clock()
        while not self._stop.wait(self.ttl / 3):
            try:
                with self._lock:
                    if self._released:
                        break
                    held = self._store.acquire(self.token, self.ttl)
                if not held:
                    holder = self._safe_holder()
                    log.warning("lost the lease to %s: stepping down to standby", holder)
                    ends.set()
                    return
                renewed = self._clock()
            except CdcError as exc:
                if self._clock() - renewed >= self.ttl * 2 / 3:
                    log.warning(
                        "could not renew the lease for %.1f s (%s): stepping down before a "
                        "standby takes over",
                        self._clock() - renewed,
                        exc.message,
                    )
                    ends.set()
                    return
        ends.set()

    def _safe_holder(self) -> str | None:
        try:
            return self._store.holder()
        except CdcError:
            return None

    def take(self) -> str | None:
        """Take the lease now if it is free, without waiting (a command that changes the
        checkpoint): None when this process holds it now, renewed until `release`; otherwise
        the token of the holder."""
        if self._store.acquire(self.token, self.ttl):
            self.term()
            return None
        return self._safe_holder() or "another connector"

    def release(self) -> None:
        """Give the lease up on a clean stop, so that a standby takes over at once. Renewal
        ends here too, so a renewal in flight cannot take the lease back afterwards."""
        try:
            with self._lock:
                self._released = True
                self._store.release(self.token)
        except CdcError as exc:
            log.warning("could not give up the lease (%s); it lapses by itself", exc.message)
