"""The checkpoint: where to resume, and the version counter that goes with it.

A checkpoint names a transaction boundary whose every change, and every earlier one,
Elasticsearch has acknowledged (or the dead-letter queue holds); see "Commit-aligned
checkpoints" in docs/design.md. It is stored as a small versioned JSON document
(`Checkpoint.to_json`); stores live in `cdc.state`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import Any

import orjson

from cdc.errors import PositionError
from cdc.model.position import Position

FORMAT_VERSION = 1
"""Format of the stored document; `from_json` refuses others (see `_migrate`)."""


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """Where to resume and the version counter of the last acknowledged transaction."""

    position: Position
    """The transaction boundary streaming resumes after."""
    counter: int
    """The version counter of the transaction that ends at `position` (see `versions`)."""
    server: str = ""
    """Identity of the server the position was read from (its uuid, or `server_id=N`)."""
    event_time: int = 0
    """Commit time of that transaction on the server (seconds since the epoch; 0 unknown)."""
    written_at: float = 0.0
    """When the checkpoint was stored (seconds since the epoch; 0: not stored yet)."""

    def to_dict(self) -> dict[str, Any]:
        """The stored document, as a dict (also what `cdc position export` writes)."""
        return {
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

    def to_json(self) -> bytes:
        return orjson.dumps(self.to_dict())

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
        """This checkpoint, written now."""
        return replace(self, written_at=time.time())


def _migrate(raw: dict[str, Any], source: str) -> dict[str, Any]:
    fmt = raw.get("format")
    if fmt == FORMAT_VERSION:
        return raw
    raise PositionError(
        f"{source} has format {fmt!r}; this version of the connector reads format {FORMAT_VERSION}",
        hint="upgrade the connector, or export the position with the version that wrote it",
    )
