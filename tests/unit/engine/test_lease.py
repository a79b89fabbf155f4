"""The lease's own rules, over an in-memory store with real time: taking it as a command,
renewing it, giving it up for good, and ending a term when it is lost or cannot be renewed.
The Redis store and real processes are in tests/integration/engine/test_ha*.py."""

from __future__ import annotations

import threading
import time

from cdc.engine.lease import Lease
from cdc.errors import CheckpointUnavailable

TTL = 0.3


class MemoryLease:
    """A lease store in memory, with expiry; `down` makes every call fail like a cut link."""

    def __init__(self) -> None:
        self.token: str | None = None
        self.expires = 0.0
        self.down = False
        self.acquires = 0

    def _check(self) -> None:
        if self.down:
            raise CheckpointUnavailable("Redis is unreachable")
        if self.token is not None and time.monotonic() >= self.expires:
            self.token = None

    def acquire(self, token: str, ttl: float) -> bool:
        self._check()
        self.acquires += 1
        if self.token in (None, token):
            self.token, self.expires = token, time.monotonic() + ttl
            return True
        return False

    def holder(self) -> str | None:
        self._check()
        return self.token

    def release(self, token: str) -> None:
        self._check()
        if self.token == token:
            self.token = None

    def standby(self, token: str, ttl: float) -> None:
        self._check()

    def standbys(self) -> list[str]:
        return []


def test_a_command_takes_a_free_lease_keeps_it_renewed_and_gives_it_up_for_good() -> None:
    store = MemoryLease()
    lease = Lease(store, TTL, threading.Event(), token="cli:1:a")

    assert lease.take() is None
    time.sleep(TTL * 3)  # well past the TTL: only renewals keep it
    held_while_running = store.holder()
    lease.release()
    time.sleep(TTL)  # a renewal would have come by now

    assert held_while_running == "cli:1:a"
    assert store.holder() is None
    assert lease.ends.is_set()


def test_a_held_lease_is_not_taken_and_its_holder_is_named() -> None:
    store = MemoryLease()
    assert store.acquire("box:7:b", 60)

    assert Lease(store, TTL, threading.Event()).take() == "box:7:b"
    assert store.holder() == "box:7:b"


def test_a_term_ends_when_another_takes_the_lease() -> None:
    store = MemoryLease()
    lease = Lease(store, TTL, threading.Event(), token="a:1:a")
    assert lease.take() is None

    store.token = "b:2:b"  # the lease went to another (this one was frozen, say)

    assert lease.ends.wait(TTL * 2)


def test_a_term_ends_before_the_ttl_when_the_lease_cannot_be_renewed() -> None:
    ttl = 1.2
    store = MemoryLease()
    lease = Lease(store, ttl, threading.Event(), token="a:1:a")
    assert lease.take() is None
    cut = time.monotonic()

    store.down = True

    assert lease.ends.wait(ttl * 2)
    # It steps down two thirds of the TTL after its last renewal (at most a third before the
    # cut), before the lease lapses and a standby can take it: within the TTL of the cut.
    assert time.monotonic() - cut < ttl
