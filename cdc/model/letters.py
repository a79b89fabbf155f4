"""Dead letters: document operations Elasticsearch rejected for their content.

A letter holds what the operator needs to fix and replay a rejected document: the operation,
the index and id, the table and the row's key, the error, and the transaction it came from.
Letters are stored (in `cdc.state`) under ids of the form `<milliseconds>-<sequence>` (Redis
stream ids), which increase in parking order and are never reused, not even after a purge.
See "Nothing silently lost on bad data" in docs/design.md.
"""

from __future__ import annotations

import re
import time
from dataclasses import asdict, dataclass, field

import orjson

from cdc.errors import CdcError

FORMAT_VERSION = 1
"""Format of a stored letter; a letter of another format is refused, not guessed at."""

MAX_ERROR_CHARS = 2000
"""Elasticsearch errors can quote a whole document; the reason fits in far less."""

_ID = re.compile(r"^(\d{1,20})-(\d{1,20})$")


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One rejected document operation."""

    op: str
    index: str
    doc_id: str
    table: str
    key: dict[str, str]
    """Id column -> rendered value (as in the document id): enough to SELECT the row again."""
    error: str
    status: int
    version: int
    gtid: str | None = None
    """GTID of the transaction the change came from, when the server has GTIDs."""
    time: float = field(default_factory=time.time)
    """When the document was first rejected (seconds since the epoch)."""

    def to_json(self) -> bytes:
        return orjson.dumps({"format": FORMAT_VERSION, **asdict(self)})

    @classmethod
    def from_json(cls, data: bytes | str, source: str = "dead letter") -> DeadLetter:
        """Parse a stored letter; raises CdcError naming `source` when it is not one."""
        try:
            raw = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise CdcError(f"{source} is not valid JSON: {exc}") from None
        if not isinstance(raw, dict):
            raise CdcError(f"{source} is not a JSON object")
        fmt = raw.pop("format", None)
        if fmt != FORMAT_VERSION:
            raise CdcError(
                f"{source} has format {fmt!r}; this version of the connector reads format "
                f"{FORMAT_VERSION}",
                hint="replay or purge the dead-letter queue with the version that wrote it",
            )
        try:
            return cls(**raw)
        except TypeError as exc:
            raise CdcError(f"{source} is malformed: {exc}") from None


def clip_error(error: str) -> str:
    """An error cut to `MAX_ERROR_CHARS`."""
    return error if len(error) <= MAX_ERROR_CHARS else error[: MAX_ERROR_CHARS - 3] + "..."


Listing = list[tuple[str, DeadLetter]]
"""Letters with their ids, oldest first."""


def parse_id(letter_id: str) -> tuple[int, int]:
    """The (milliseconds, sequence) of a letter id; CdcError if it is not one."""
    match = _ID.match(letter_id)
    if match is None:
        raise CdcError(
            f"{letter_id!r} is not a dead-letter id",
            hint="ids look like 1718000000000-0; `cdc dlq list` shows them",
        )
    return int(match[1]), int(match[2])


def format_id(parts: tuple[int, int]) -> str:
    return f"{parts[0]}-{parts[1]}"


def next_id(last: tuple[int, int]) -> tuple[int, int]:
    """An id after `last`: the current millisecond, like Redis, or `last`'s next sequence when
    the clock has not moved past it."""
    now = int(time.time() * 1000)
    return (now, 0) if now > last[0] else (last[0], last[1] + 1)
