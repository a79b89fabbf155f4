"""In-memory stores: the contracts of `cdc.state.stores` without a backend, for unit tests.

They keep everything in dicts of this process, honour the same contracts as the Redis and file
stores (the shared contract tests run against all three), and can be told to fail like an
unreachable backend (`down = True`) to drive retry paths.
"""

from __future__ import annotations

import builtins
import threading
import time
from collections.abc import Sequence

from cdc.errors import CheckpointUnavailable
from cdc.model.checkpoint import Checkpoint
from cdc.model.letters import DeadLetter, Listing, format_id, next_id, parse_id
from cdc.model.progress import Progress
from cdc.model.status import Status
from cdc.state.stores import Stores


class Memory:
    """The state shared by one connector's in-memory stores."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.down = False
        """While True, every store call raises `CheckpointUnavailable`."""
        self.checkpoint: Checkpoint | None = None
        self.saved: list[Checkpoint] = []
        """Every checkpoint saved, oldest first."""
        self.heartbeat: tuple[Status, float] | None = None
        self.snapshots: dict[str, Progress] = {}
        self.letters: dict[tuple[int, int], DeadLetter] = {}
        self.last_id = (0, 0)

    def check(self, what: str) -> None:
        if self.down:
            raise CheckpointUnavailable(f"{what}: the in-memory store is down")

    def close(self) -> None:
        return None


def memory_stores(memory: Memory | None = None) -> Stores:
    """Stores over `memory` (a new one by default; read it back as `stores.backend`)."""
    memory = memory or Memory()
    return Stores(
        checkpoints=MemoryCheckpoints(memory),
        heartbeats=MemoryHeartbeats(memory),
        snapshots=MemorySnapshots(memory),
        letters=MemoryDeadLetters(memory),
        backend=memory,
    )


class MemoryCheckpoints:
    def __init__(self, memory: Memory) -> None:
        self._m = memory

    def load(self) -> Checkpoint | None:
        with self._m.lock:
            self._m.check("reading the checkpoint")
            return self._m.checkpoint

    def save(self, checkpoint: Checkpoint) -> None:
        with self._m.lock:
            self._m.check("writing the checkpoint")
            self._m.checkpoint = checkpoint
            self._m.saved.append(checkpoint)

    def delete(self) -> None:
        with self._m.lock:
            self._m.check("deleting the checkpoint")
            self._m.checkpoint = None

    def describe(self) -> str:
        return "memory"

    def hold(self, token: str | None) -> None:
        if token is not None:
            raise AssertionError("the in-memory stores take no lease")


class MemoryHeartbeats:
    def __init__(self, memory: Memory) -> None:
        self._m = memory

    def beat(self, status: Status, ttl: float) -> None:
        with self._m.lock:
            self._m.check("writing the heartbeat")
            self._m.heartbeat = (status, time.monotonic() + ttl)

    def read(self) -> Status | None:
        with self._m.lock:
            self._m.check("reading the heartbeat")
            if self._m.heartbeat is None or self._m.heartbeat[1] < time.monotonic():
                return None
            return self._m.heartbeat[0]


class MemorySnapshots:
    def __init__(self, memory: Memory) -> None:
        self._m = memory

    def load_all(self) -> dict[str, Progress]:
        with self._m.lock:
            self._m.check("reading snapshot progress")
            return {t: Progress.from_dict(p.to_dict()) for t, p in self._m.snapshots.items()}

    def save(self, progress: Progress) -> None:
        with self._m.lock:
            self._m.check("writing snapshot progress")
            self._m.snapshots[progress.table] = Progress.from_dict(progress.to_dict())


class MemoryDeadLetters:
    def __init__(self, memory: Memory) -> None:
        self._m = memory

    def park(self, letters: Sequence[DeadLetter]) -> builtins.list[str]:
        with self._m.lock:
            self._m.check("parking dead letters")
            ids = []
            for letter in letters:
                self._m.last_id = next_id(self._m.last_id)
                self._m.letters[self._m.last_id] = letter
                ids.append(format_id(self._m.last_id))
            return ids

    def list(self, limit: int = 100, after: str | None = None) -> Listing:
        start = parse_id(after) if after is not None else (-1, -1)
        with self._m.lock:
            self._m.check("reading dead letters")
            found = [(format_id(i), letter) for i, letter in sorted(self._m.letters.items())]
            return [(i, letter) for i, letter in found if parse_id(i) > start][: max(0, limit)]

    def get(self, letter_id: str) -> DeadLetter | None:
        wanted = parse_id(letter_id)
        with self._m.lock:
            self._m.check("reading dead letters")
            return self._m.letters.get(wanted)

    def remove(self, ids: Sequence[str]) -> int:
        wanted = {parse_id(i) for i in ids}
        with self._m.lock:
            self._m.check("removing dead letters")
            return sum(self._m.letters.pop(i, None) is not None for i in wanted)

    def update(self, letter_id: str, letter: DeadLetter) -> str | None:
        old = parse_id(letter_id)
        with self._m.lock:
            self._m.check("updating a dead letter")
            if self._m.letters.pop(old, None) is None:
                return None
            self._m.last_id = next_id(self._m.last_id)
            self._m.letters[self._m.last_id] = letter
            return format_id(self._m.last_id)

    def purge(self) -> int:
        with self._m.lock:
            self._m.check("purging dead letters")
            count = len(self._m.letters)
            self._m.letters.clear()
            return count

    def size(self) -> int:
        with self._m.lock:
            self._m.check("reading dead letters")
            return len(self._m.letters)

    def describe(self) -> str:
        return "memory"
