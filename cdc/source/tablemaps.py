"""TABLE_MAP events parsed once per distinct content, for the readers that opt in.

The server writes a TABLE_MAP event before the rows of every table in every transaction, and
python-mysql-replication parses each one in full (column definitions, optional metadata,
charsets, a new `Table` object). With one-row transactions that parsing was 60% of the
connector's CPU time. The bytes of a table map only change when the table does (a DDL, or a
new table id after a restart), so a reader that opts in keeps the parsed result keyed by those
bytes and hands the same `Table` object out again. Identical bytes always parse to the same
result here: the connector never lets the library look column names up in the live schema
(`use_column_name_cache` is off; `binlog_row_metadata=FULL` is a prerequisite).

Opting in is per control connection (`enable`), because the hook below replaces
`TableMapEvent.__init__` for the whole process: any other reader of the library in the same
process (tests, the benchmark's bare loop) keeps the library's own behaviour.
"""

from __future__ import annotations

from typing import Any

from pymysqlreplication.event import BinLogEvent
from pymysqlreplication.row_event import TableMapEvent

_ATTRIBUTE = "_cdc_table_maps"
_MAX_ENTRIES = 2_000
# What BinLogEvent.__init__ sets for every event; the rest of a parsed table map is cached.
_PER_EVENT = frozenset(
    {
        "packet",
        "table_map",
        "event_type",
        "timestamp",
        "event_size",
        "_post_header_lengths",
        "_ctl_connection",
        "mysql_version",
        "_ignore_decode_errors",
        "_verify_checksum",
        "_is_event_valid",
        "_processed",
        "complete",
        "dbms",
    }
)

_library_init = TableMapEvent.__init__


def enable(ctl_connection: Any) -> None:
    """Parse each distinct table map once for the reader using this control connection."""
    setattr(ctl_connection, _ATTRIBUTE, {})


def _init(
    self: TableMapEvent,
    from_packet: Any,
    event_size: int,
    table_map: dict[int, Any],
    ctl_connection: Any,
    **kwargs: Any,
) -> None:
    cache: dict[bytes, dict[str, Any]] | None = getattr(ctl_connection, _ATTRIBUTE, None)
    if cache is None or kwargs.get("freeze_schema"):
        _library_init(self, from_packet, event_size, table_map, ctl_connection, **kwargs)
        return
    # Peek at the event's bytes without consuming them: the library's own parse reads the
    # optional metadata up to the end of the underlying packet, past any pushed-back bytes.
    packet = from_packet.packet
    data = packet.get_all_data()
    start = len(data) - from_packet.bytes_to_read()
    body = bytes(data[start : start + event_size])
    parsed = cache.get(body)
    if parsed is None:
        _library_init(self, from_packet, event_size, table_map, ctl_connection, **kwargs)
        if self._processed:
            if len(cache) >= _MAX_ENTRIES:
                cache.clear()
            cache[body] = {k: v for k, v in vars(self).items() if k not in _PER_EVENT}
        return
    BinLogEvent.__init__(self, from_packet, event_size, table_map, ctl_connection, **kwargs)
    vars(self).update(parsed)
    table_map[self.table_id] = self.table_obj


TableMapEvent.__init__ = _init
