"""The dead-letter queue: documents Elasticsearch rejected for their content.

A rejected document is parked here (durably, before the checkpoint moves past it) with what the
operator needs to fix and replay it: the operation, the index and id, the table and the row's
key, the error, and the transaction it came from. The pipeline then goes on (design invariant 5).
`cdc dlq replay` re-reads the current rows from MySQL and sends them again.

Stores: `RedisDeadLetterQueue` (in `cdc.redis_store`, a Redis stream) and `FileDeadLetterQueue`
(here, JSON lines next to the file checkpoint).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import orjson

from cdc.elastic import BulkItem, ItemResult


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One rejected document operation."""

    op: str
    index: str
    doc_id: str
    table: str
    key: dict[str, str]
    """Id column -> rendered value: enough to SELECT the row again."""
    error: str
    status: int
    version: int
    gtid: str | None = None
    """GTID of the transaction the change came from, when the server has GTIDs."""
    time: float = field(default_factory=time.time)

    @classmethod
    def from_item(cls, item: BulkItem, result: ItemResult) -> DeadLetter:
        return cls(
            op=item.action.op,
            index=item.action.index,
            doc_id=item.action.doc_id,
            table=item.table,
            key=dict(zip(item.id_columns, item.action.key, strict=False)),
            error=result.error or f"HTTP {result.status}",
            status=result.status,
            version=item.version,
            gtid=item.gtid,
        )

    def to_json(self) -> bytes:
        return orjson.dumps(asdict(self))

    @classmethod
    def from_json(cls, data: bytes | str) -> DeadLetter:
        raw: dict[str, Any] = orjson.loads(data)
        return cls(**raw)


class DeadLetterQueue(Protocol):
    """Durable storage of rejected documents, oldest first."""

    def park(self, letters: Sequence[DeadLetter]) -> None:
        """Append letters; durable when it returns. Raises CheckpointUnavailable (retryable)."""
        ...

    def size(self) -> int:
        """Number of parked letters."""
        ...
