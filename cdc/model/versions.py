"""External versions: the numbers that make every write idempotent and order-safe.

Every transaction the stream passes gets the next value of a counter that is stored with the
checkpoint; every document operation inside it gets `counter << ROW_BITS | slot`, its row's
place in the transaction. Versions therefore increase strictly in binlog order and are the same
when the same binlog is replayed, and Elasticsearch refuses (HTTP 409) any write older than the
document it holds. See "Idempotent, order-safe writes" in docs/design.md.
"""

from __future__ import annotations

import time

ROW_BITS = 23
"""Bits of the row slot."""
MAX_ROW_SLOT = (1 << ROW_BITS) - 1
"""The highest slot, the one `cdc verify --repair` writes with: above everything else of its
counter."""
HEADROOM = 1 << 16
"""Slots kept free below `MAX_ROW_SLOT`: something that re-indexes or deletes a document with
Elasticsearch's internal versioning adds one to its version, and a repair must still be above."""
COPY_SLOT = MAX_ROW_SLOT - HEADROOM
"""The slot of snapshot chunks and dead-letter replays: just above every operation of the
transaction with the same counter."""
TRANSACTION_SLOTS = COPY_SLOT
"""Operations one transaction can hold (slots 0 to 8,323,070)."""
MAX_COUNTER = (1 << 40) - 1
"""The highest transaction counter (40 bits, so that versions fit Elasticsearch's long)."""


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


def counter_of(version: int) -> int:
    """The transaction counter a version was made from."""
    return version >> ROW_BITS
