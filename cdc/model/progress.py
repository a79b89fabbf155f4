"""Snapshot progress: the persisted state of one table's snapshot, and its resume key.

A snapshot reads a table in key order, chunk by chunk; after each acknowledged chunk its
`Progress` is stored (in `cdc.state`), with the key of the chunk's last row, so that a crash
resumes after the last completed chunk. Keys are stored as JSON (`encode_key`), with the
values JSON lacks (decimals, dates, times, bytes, sets) tagged.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Literal


def encode_key(key: tuple[Any, ...] | None) -> list[Any] | None:
    """A chunk's last key as JSON (Decimal, dates, times and bytes tagged)."""
    if key is None:
        return None
    out: list[Any] = []
    for value in key:
        if isinstance(value, Decimal):
            out.append({"dec": str(value)})
        elif isinstance(value, dt.datetime):
            out.append({"datetime": value.isoformat()})
        elif isinstance(value, dt.date):
            out.append({"date": value.isoformat()})
        elif isinstance(value, dt.timedelta):
            out.append({"time": value.total_seconds()})
        elif isinstance(value, bytes):
            out.append({"hex": value.hex()})
        elif isinstance(value, set | frozenset):
            out.append({"set": sorted(value)})
        else:
            out.append(value)
    return out


_DECODERS: dict[str, Callable[[Any], Any]] = {
    "dec": Decimal,
    "datetime": dt.datetime.fromisoformat,
    "date": dt.date.fromisoformat,
    "time": lambda seconds: dt.timedelta(seconds=seconds),
    "hex": bytes.fromhex,
    "set": set,
}


def decode_key(data: list[Any] | None) -> tuple[Any, ...] | None:
    """The inverse of `encode_key`."""
    if data is None:
        return None
    out: list[Any] = []
    for value in data:
        if isinstance(value, dict):
            (tag, raw), *_ = value.items()
            out.append(_DECODERS[tag](raw))
        else:
            out.append(value)
    return tuple(out)


SnapshotState = Literal["pending", "running", "done", "failed"]


@dataclass
class Progress:
    """The persisted state of one table's snapshot (mutated by the snapshotter as it goes)."""

    table: str
    """`schema.table`."""
    state: SnapshotState = "pending"
    """`pending` (requested), `running`, `done` or `failed` (see `error`)."""
    after: list[Any] | None = None
    """The key of the last row of the last acknowledged chunk (`encode_key`); None: none yet."""
    rows_done: int = 0
    """Rows acknowledged so far."""
    rows_total: int = 0
    """The server's estimate of the table's rows when the snapshot started."""
    rows_read: int = 0
    """Rows read by this process (re-reads after a crash included); for progress and tests."""
    started_at: float = 0.0
    updated_at: float = 0.0
    error: str | None = None
    """Why the snapshot failed."""
    target_index: str | None = None
    """For a rebuild: the new index the rows go to."""

    @property
    def active(self) -> bool:
        """Requested or under way."""
        return self.state in ("pending", "running")

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Progress:
        """The progress in a stored dict; keys this version does not know are ignored."""
        known = {k: v for k, v in raw.items() if k in cls.__dataclass_fields__}
        return cls(**known)
