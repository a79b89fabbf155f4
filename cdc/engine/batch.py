"""The state the main loop keeps between events: versions and the pending batch.

`Versions` numbers every document operation (see `cdc.model.versions`): each transaction the
stream passes gets the next counter, each operation in it the next slot. `Batch` holds the
operations not sent yet, in binlog order, and remembers where the open transaction's operations
begin, so that a transaction cut by a broken link can be dropped and read again whole.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from cdc.errors import MappingError
from cdc.model.versions import TRANSACTION_SLOTS
from cdc.sink.bulk import BulkItem


class Versions:
    """Transaction counters and row slots, in binlog order."""

    def __init__(self, committed: int) -> None:
        self.committed = committed
        """The counter of the last transaction read to its commit."""
        self.open = 0
        """The counter of the transaction being read; 0 between transactions."""
        self.gtid: str | None = None
        """The open transaction's GTID, if the server has GTIDs."""
        self._slot = 0

    def begin(self, gtid: str | None) -> None:
        self.open = self.committed + 1
        self.gtid = gtid
        self._slot = 0

    def reserve(self, count: int, table: str) -> int:
        """The first of `count` consecutive slots of the open transaction, for the operations
        of one row change; raises MappingError once a transaction has more than fit."""
        first = self._slot
        self._slot += count
        if self._slot > TRANSACTION_SLOTS:
            raise MappingError(
                f"a transaction on {table} has more than {TRANSACTION_SLOTS:,} row changes",
                hint="split the transaction; larger ones cannot be versioned",
            )
        return first

    def commit(self) -> int:
        """End the open transaction (a commit without a begin, such as a DDL statement, still
        takes a counter of its own); returns its counter."""
        self.committed = self.open or self.committed + 1
        self.open = 0
        return self.committed

    def drop(self) -> None:
        """Forget the open transaction: it is read again from its begin."""
        self.open = 0
        self._slot = 0


@dataclass
class Batch:
    """Operations waiting to be sent, oldest first."""

    items: list[BulkItem] = field(default_factory=list)
    nbytes: int = 0
    started: float = 0.0
    """Clock time when the oldest pending operation was added."""
    open_from: int = 0
    """Index of the open transaction's first operation (`len(items)` between transactions)."""

    def __len__(self) -> int:
        return len(self.items)

    def add(self, item: BulkItem, now: float) -> None:
        if not self.items:
            self.started = now
        self.items.append(item)
        self.nbytes += len(item.body)

    def full(self, max_actions: int, max_bytes: int) -> bool:
        return len(self.items) >= max_actions or self.nbytes >= max_bytes

    def due(self, now: float, interval: float) -> bool:
        """True when the oldest pending operation has waited `interval` seconds."""
        return bool(self.items) and now - self.started >= interval

    def close_transaction(self) -> None:
        """Everything pending now belongs to ended transactions (or snapshot chunks)."""
        self.open_from = len(self.items)

    def drop_open(self) -> None:
        """Remove the open transaction's operations that were not sent yet."""
        del self.items[self.open_from :]
        self.nbytes = sum(len(i.body) for i in self.items)

    def take(self) -> list[BulkItem]:
        """Every pending operation; the batch is empty afterwards."""
        items = self.items
        self.items = []
        self.nbytes = 0
        self.open_from = 0
        return items
