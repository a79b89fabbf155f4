"""Checkpoints: the last transaction boundary Elasticsearch fully acknowledged.

A checkpoint is a small versioned JSON document (see `Checkpoint.to_json`). Stores implement
`CheckpointStore`; Redis lives in `cdc.state.redis`, the single-host file store is here.
"""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

import orjson

from cdc.errors import CheckpointUnavailable, PositionError
from cdc.model.position import Position

FORMAT_VERSION = 1

# External versions are (transaction counter << ROW_BITS) | row slot; see design invariant 2.
ROW_BITS = 23
MAX_ROW_SLOT = (1 << ROW_BITS) - 1
MAX_COUNTER = (1 << 40) - 1


def initial_counter(now: float | None = None) -> int:
    """Counter for a connector with no checkpoint at all.

    Derived from the clock (256 per second) so that a connector whose state was lost and that
    starts over against an existing index still writes versions above the old ones, unless the
    old one averaged more than 256 transactions per second since it started.
    """
    return int(now if now is not None else time.time()) << 8


def version(counter: int, slot: int) -> int:
    """The external version of the `slot`-th operation of transaction `counter`."""
    return (counter << ROW_BITS) | slot


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """Where to resume and the version counter of the last acknowledged transaction."""

    position: Position
    counter: int
    server: str = ""
    event_time: int = 0
    written_at: float = 0.0

    def to_json(self) -> bytes:
        return orjson.dumps(
            {
                "format": FORMAT_VERSION,
                "flavor": self.position.flavor,
                "gtid": self.position.gtid,
                "file": self.position.file,
                "offset": self.position.offset,
                "server": self.server,
                "counter": self.counter,
                "event_time": self.event_time,
                "written_at": self.written_at,
            }
        )

    @classmethod
    def from_json(cls, data: bytes | str, source: str = "checkpoint") -> Checkpoint:
        try:
            raw = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise PositionError(
                f"{source} is not valid JSON: {exc}",
                hint="restore it from an export or run `cdc position reset`",
            ) from None
        if not isinstance(raw, dict):
            raise PositionError(f"{source} is not a JSON object")
        return cls.from_dict(_migrate(raw, source), source)

    @classmethod
    def from_dict(cls, raw: dict[str, Any], source: str = "checkpoint") -> Checkpoint:
        try:
            return cls(
                position=Position.from_dict(raw),
                counter=int(raw["counter"]),
                server=str(raw.get("server") or ""),
                event_time=int(raw.get("event_time") or 0),
                written_at=float(raw.get("written_at") or 0.0),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise PositionError(
                f"{source} is malformed: {exc}",
                hint="restore it from an export or run `cdc position reset`",
            ) from None

    def stamped(self) -> Checkpoint:
        return replace(self, written_at=time.time())


def _migrate(raw: dict[str, Any], source: str) -> dict[str, Any]:
    fmt = raw.get("format")
    if fmt == FORMAT_VERSION:
        return raw
    raise PositionError(
        f"{source} has format {fmt!r}; this version of the connector reads format {FORMAT_VERSION}",
        hint="upgrade the connector, or export the position with the version that wrote it",
    )


class CheckpointStore(Protocol):
    """Durable storage of one connector's checkpoint."""

    def load(self) -> Checkpoint | None:
        """The stored checkpoint, or None if there is none. Raises CheckpointUnavailable when
        the store cannot be reached (retryable) and PositionError when the data is corrupt."""
        ...

    def save(self, checkpoint: Checkpoint) -> None:
        """Replace the stored checkpoint atomically. Idempotent. Raises CheckpointUnavailable."""
        ...

    def delete(self) -> None:
        """Remove the checkpoint; a missing one is not an error."""
        ...

    def describe(self) -> str:
        """Where the checkpoint lives, for messages."""
        ...

    def beat(self, status: dict[str, Any], ttl: float) -> None:
        """Record that the connector is alive, with its status, for `ttl` seconds.
        Raises CheckpointUnavailable."""
        ...

    def read_status(self) -> dict[str, Any] | None:
        """The last heartbeat's status, or None if none is alive (never written or expired)."""
        ...

    def load_snapshots(self) -> dict[str, dict[str, Any]]:
        """Snapshot progress by table (`schema.table`); empty when there is none."""
        ...

    def save_snapshot(self, table: str, state: dict[str, Any] | None) -> None:
        """Record (or with None, forget) the snapshot progress of one table. Idempotent."""
        ...

    def close(self) -> None: ...


class FileCheckpointStore:
    """`<directory>/<name>.json`, replaced atomically (write, fsync, rename)."""

    def __init__(self, directory: str | os.PathLike[str], name: str) -> None:
        self.path = Path(directory) / f"{name}.json"
        self.status_path = Path(directory) / f"{name}.status.json"
        self.snapshots_path = Path(directory) / f"{name}.snapshots.json"

    def load(self) -> Checkpoint | None:
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise CheckpointUnavailable(f"cannot read {self.path}: {exc.strerror}") from exc
        return Checkpoint.from_json(data, str(self.path))

    def save(self, checkpoint: Checkpoint) -> None:
        _write_atomically(self.path, checkpoint.to_json(), durable=True)

    def beat(self, status: dict[str, Any], ttl: float) -> None:
        data = orjson.dumps({**status, "expires_at": time.time() + ttl})
        _write_atomically(self.status_path, data, durable=False)

    def read_status(self) -> dict[str, Any] | None:
        try:
            raw = orjson.loads(self.status_path.read_bytes())
        except (FileNotFoundError, orjson.JSONDecodeError):
            return None
        except OSError as exc:
            raise CheckpointUnavailable(f"cannot read {self.status_path}: {exc.strerror}") from exc
        if not isinstance(raw, dict) or float(raw.get("expires_at", 0)) < time.time():
            return None
        return raw

    def delete(self) -> None:
        self.path.unlink(missing_ok=True)

    def load_snapshots(self) -> dict[str, dict[str, Any]]:
        try:
            raw = orjson.loads(self.snapshots_path.read_bytes())
        except FileNotFoundError:
            return {}
        except orjson.JSONDecodeError:
            return {}
        except OSError as exc:
            raise CheckpointUnavailable(
                f"cannot read {self.snapshots_path}: {exc.strerror}"
            ) from exc
        return raw if isinstance(raw, dict) else {}

    def save_snapshot(self, table: str, state: dict[str, Any] | None) -> None:
        states = self.load_snapshots()
        if state is None:
            states.pop(table, None)
        else:
            states[table] = state
        _write_atomically(self.snapshots_path, orjson.dumps(states), durable=True)

    def describe(self) -> str:
        return str(self.path)

    def close(self) -> None:
        return None


def _write_atomically(path: Path, data: bytes, durable: bool) -> None:
    """Replace `path` with `data` so readers see the old or the new content, never a mix."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}-", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                if durable:
                    fh.flush()
                    os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except OSError as exc:
        raise CheckpointUnavailable(f"cannot write {path}: {exc.strerror}") from exc
