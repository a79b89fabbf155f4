"""How far one position is behind another: in transactions, binlog bytes and seconds.

The GTID arithmetic of both flavors in one place: MySQL counts the executed transactions a
position lacks; MariaDB counts sequence numbers per replication domain. Pure: the server's
state comes in as arguments.
"""

from __future__ import annotations

from dataclasses import dataclass

from cdc.model.checkpoint import Checkpoint
from cdc.model.gtid import MariadbGtidList, MysqlGtidSet
from cdc.model.position import Position


def reached(position: Position, target: Position) -> bool:
    """True if `position` is at or past `target` (same server)."""
    if target.gtid and position.gtid:
        if target.flavor == "mariadb":
            return MariadbGtidList.parse(target.gtid).is_reached_by(
                MariadbGtidList.parse(position.gtid)
            )
        return MysqlGtidSet.parse(target.gtid).issubset(MysqlGtidSet.parse(position.gtid))
    if target.file and position.file:
        return (position.file, position.offset or 0) >= (target.file, target.offset or 0)
    return not target.gtid


@dataclass(frozen=True, slots=True)
class Behind:
    """How far a checkpoint is behind the server; None where it cannot be known."""

    transactions: int | None
    bytes: int | None
    seconds: float | None
    file_purged: bool = False

    def describe(self) -> str:
        parts = [
            _plural(self.transactions, "transaction") if self.transactions is not None else None,
            _size(self.bytes) if self.bytes is not None else None,
            f"{self.seconds:.0f} s" if self.seconds is not None else None,
        ]
        text = ", ".join(p for p in parts if p is not None) or "unknown"
        if self.file_purged:
            text += " (the checkpoint's binlog file is no longer on the server)"
        return text


def _plural(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def transactions_behind(checkpoint: Position, now: Position) -> int | None:
    """Transactions `now` holds that `checkpoint` lacks; None when either has no GTIDs."""
    if now.flavor == "mysql":
        if not checkpoint.gtid or not now.gtid:
            return None
        return MysqlGtidSet.parse(now.gtid).difference(MysqlGtidSet.parse(checkpoint.gtid)).count()
    mine = MariadbGtidList.parse(checkpoint.gtid)
    theirs = MariadbGtidList.parse(now.gtid)
    total = 0
    for domain in theirs.domains():
        entry = theirs.get(domain)
        assert entry is not None
        ours = mine.get(domain)
        total += max(0, entry[1] - (ours[1] if ours else 0))
    return total


def _bytes_behind(
    checkpoint: Position, now: Position, logs: list[tuple[str, int]]
) -> tuple[int | None, bool]:
    """Bytes of binlog between the two positions, and whether the checkpoint's file is gone."""
    if not checkpoint.file or checkpoint.offset is None or not now.file or now.offset is None:
        return None, False
    names = [name for name, _ in logs]
    if checkpoint.file not in names:
        return None, True
    if now.file not in names:
        return None, False
    first, last = names.index(checkpoint.file), names.index(now.file)
    if first > last:
        return 0, False
    if first == last:
        return max(0, now.offset - checkpoint.offset), False
    total = max(0, logs[first][1] - checkpoint.offset)
    total += sum(sz for _, sz in logs[first + 1 : last])
    return total + now.offset, False


def measure_behind(
    checkpoint: Checkpoint, now: Position, logs: list[tuple[str, int]], clock: float
) -> Behind:
    """How far `checkpoint` is behind the server position `now` (pure; `logs` from
    SHOW BINARY LOGS, `clock` the current Unix time)."""
    transactions = transactions_behind(checkpoint.position, now)
    nbytes, purged = _bytes_behind(checkpoint.position, now, logs)
    caught_up = transactions == 0 or (transactions is None and nbytes == 0)
    if caught_up:
        seconds: float | None = 0.0
    elif checkpoint.event_time:
        seconds = max(0.0, clock - checkpoint.event_time)
    else:
        seconds = None
    return Behind(transactions, nbytes, seconds, purged)


def _size(n: int) -> str:
    """`635 bytes`, or `12,345,678 bytes (11.8 MiB)`."""
    if n < 1024:
        return f"{n} bytes"
    units = ("KiB", "MiB", "GiB", "TiB")
    value = n / 1024
    unit = 0
    while value >= 1024 and unit < len(units) - 1:
        value /= 1024
        unit += 1
    return f"{n:,} bytes ({value:.1f} {units[unit]})"
