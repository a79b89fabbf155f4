"""What the binlog source emits: transaction boundaries and row changes.

These types are the seam between the source (which knows the binlog library) and the pure
mapping code (which knows only these). Values in `before`/`after` are the binlog library's
decoded Python values; `columns` says what MySQL type each one came from, so that the mapping
can normalise MySQL and MariaDB shapes to one document form.

None of them is changed once built. The ones built for every row change or transaction
(`RowChange`, `Begin`, `Commit`, `Heartbeat`) are plain slotted dataclasses rather than frozen
ones, which cost four times as much to build; they hash and compare as frozen ones would.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any, Literal

from cdc.model.position import Position


class Kind(enum.Enum):
    """The MySQL column type family, which decides how a value becomes JSON."""

    INT = "int"
    DECIMAL = "decimal"
    FLOAT = "float"
    DATE = "date"
    DATETIME = "datetime"
    TIMESTAMP = "timestamp"
    TIME = "time"
    YEAR = "year"
    STRING = "string"
    ENUM = "enum"
    SET = "set"
    BIT = "bit"
    JSON = "json"
    BINARY = "binary"
    GEOMETRY = "geometry"


@dataclass(frozen=True, slots=True)
class Column:
    """One column of a table as the binlog table map describes it."""

    name: str
    kind: Kind
    unsigned: bool = False
    is_primary: bool = False
    sql_type: str = field(default="", compare=False)
    """The column's full SQL type (`decimal(10,2)`, `bigint(20) unsigned`) when it was read
    from the catalog; empty from a binlog table map. For index field mappings only."""


@dataclass(frozen=True, slots=True)
class TableSchema:
    """A table's columns in binlog order and its primary key column names."""

    schema: str
    table: str
    columns: tuple[Column, ...]
    primary_key: tuple[str, ...]

    @property
    def name(self) -> str:
        return f"{self.schema}.{self.table}"

    def column(self, name: str) -> Column | None:
        for col in self.columns:
            if col.name == name:
                return col
        return None


@dataclass(frozen=True, slots=True)
class ForeignKey:
    """One FOREIGN KEY constraint of a table."""

    columns: tuple[str, ...]
    references: str
    """`schema.table` it points at."""
    referenced: tuple[str, ...]
    """The columns it points at, in the order of `columns`."""


Op = Literal["insert", "update", "delete"]


@dataclass(slots=True, unsafe_hash=True)
class RowChange:
    """One row inserted, updated or deleted. `before` is None for inserts, `after` for deletes."""

    table: TableSchema
    op: Op
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    size: int = 0
    """Approximate bytes of the row in the binlog (for memory bounds)."""


@dataclass(slots=True, unsafe_hash=True)
class Begin:
    """A transaction starts. `gtid` is its GTID in the server's own notation, if any."""

    gtid: str | None


@dataclass(slots=True, unsafe_hash=True)
class Commit:
    """A transaction ended; `position` is where streaming resumes to re-read what follows it.

    `timestamp` is the commit's event time (seconds since the epoch), used for lag.
    """

    position: Position
    timestamp: int
    changes: int = 0
    """Row changes of mapped tables the transaction held."""


@dataclass(slots=True, unsafe_hash=True)
class Heartbeat:
    """The server sent everything before `file`/`offset` (it is idle, or skipped events)."""

    file: str
    offset: int


Event = Begin | RowChange | Commit | Heartbeat
