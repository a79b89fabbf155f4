"""What the connector keeps between runs, as four small contracts, and the bundle of them.

One connector (one `name`) owns four stores, kept side by side in one backend: Redis
(`cdc.state.redis`, for production) or local files (`cdc.state.files`, single host);
`cdc.state.backends.open_stores` opens the configured one. Every method raises
`CheckpointUnavailable` when the backend cannot be reached right now (retryable) and another
`CdcError` for what retrying cannot fix (bad credentials, corrupt data, a malformed id).
`tests/integration/state/test_contracts.py` runs the same contract against every backend.
"""

from __future__ import annotations

import builtins
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from cdc.model.checkpoint import Checkpoint
from cdc.model.letters import DeadLetter, Listing
from cdc.model.progress import Progress
from cdc.model.status import Status


class CheckpointStore(Protocol):
    """The connector's checkpoint: one value, replaced whole."""

    def load(self) -> Checkpoint | None:
        """The stored checkpoint, or None if there is none. Raises PositionError when the
        stored data is not a checkpoint this version can read."""
        ...

    def save(self, checkpoint: Checkpoint) -> None:
        """Replace the stored checkpoint atomically (readers see the old or the new one).
        Idempotent."""
        ...

    def delete(self) -> None:
        """Remove the checkpoint; a missing one is not an error."""
        ...

    def describe(self) -> str:
        """Where the checkpoint lives, for messages."""
        ...

    def hold(self, token: str | None) -> None:
        """Fence every later `save` by the lease: it writes only while `token` holds it, and
        raises `LeaseLost` otherwise (None: no fencing). Backends without leases refuse."""
        ...


class LeaseStore(Protocol):
    """Which of several connectors of one name streams: the holder of a token with a time to
    live. Writes of the checkpoint are fenced by it (`CheckpointStore.hold`)."""

    def acquire(self, token: str, ttl: float) -> bool:
        """Take the lease for `ttl` seconds if nobody holds it, or renew it if `token` does;
        True when `token` holds it now."""
        ...

    def holder(self) -> str | None:
        """The token holding the lease, or None."""
        ...

    def release(self, token: str) -> None:
        """Give the lease up if `token` holds it (a clean stop: a standby takes over at once)."""
        ...

    def standby(self, token: str, ttl: float) -> None:
        """Mark `token` as a waiting standby for `ttl` seconds."""
        ...

    def standbys(self) -> list[str]:
        """The tokens of the standbys waiting now."""
        ...


class HeartbeatStore(Protocol):
    """The running connector's status, kept alive by repeated writes."""

    def beat(self, status: Status, ttl: float) -> None:
        """Publish `status`, replacing the previous one, for `ttl` seconds. Idempotent."""
        ...

    def read(self) -> Status | None:
        """The last status published, or None when none is alive (never written, or its time
        to live ran out)."""
        ...


class SnapshotStore(Protocol):
    """Snapshot progress, one entry per table (`schema.table`)."""

    def load_all(self) -> dict[str, Progress]:
        """Every table's progress; empty when there is none."""
        ...

    def save(self, progress: Progress) -> None:
        """Record the progress of `progress.table`, replacing what was there. Idempotent."""
        ...


class DeadLetterQueue(Protocol):
    """Rejected documents, oldest first, under ids like `1718000000000-0` (any other id is a
    CdcError)."""

    def park(self, letters: Sequence[DeadLetter]) -> builtins.list[str]:
        """Append letters, all or none, and return their ids in order. Durable when it returns
        (as durable as the backend's own writes). Not idempotent: parking twice keeps two."""
        ...

    def list(self, limit: int = 100, after: str | None = None) -> Listing:
        """Up to `limit` letters with their ids, oldest first, starting after id `after`
        (which need not exist any more). An empty list means there are no more."""
        ...

    def get(self, letter_id: str) -> DeadLetter | None:
        """The letter with this id, or None if there is none."""
        ...

    def remove(self, ids: Sequence[str]) -> int:
        """Remove these letters; returns how many existed. Idempotent: unknown ids are skipped."""
        ...

    def update(self, letter_id: str, letter: DeadLetter) -> str | None:
        """Replace a letter, atomically: the old id disappears and the new content is parked at
        the end of the queue under the returned id. Returns None, and changes nothing, when
        `letter_id` does not exist (it was replayed or purged meanwhile)."""
        ...

    def purge(self) -> int:
        """Remove every letter; returns how many there were. Ids are not reused afterwards."""
        ...

    def size(self) -> int:
        """Number of parked letters."""
        ...

    def describe(self) -> str:
        """Where the letters live, for messages."""
        ...


class Closer(Protocol):
    def close(self) -> None: ...


@dataclass(frozen=True)
class Stores:
    """The four stores of one connector, opened together on one backend."""

    checkpoints: CheckpointStore
    heartbeats: HeartbeatStore
    snapshots: SnapshotStore
    letters: DeadLetterQueue
    backend: Closer
    """What holds the backend's connections; closed by `close`."""
    lease: LeaseStore | None = None
    """The active/standby lease (Redis only)."""

    def close(self) -> None:
        self.backend.close()

    def __enter__(self) -> Stores:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
