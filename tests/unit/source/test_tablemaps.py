"""TABLE_MAP events parsed once per distinct content, only for readers that opt in."""

from __future__ import annotations

import struct
from typing import Any

import pymysql.protocol
from pymysqlreplication.constants import BINLOG, FIELD_TYPE
from pymysqlreplication.packet import BinLogPacketWrapper
from pymysqlreplication.row_event import TableMapEvent

from cdc.source import tablemaps


class _Control:
    charset = "utf8mb4"

    def _get_dbms(self) -> str:
        return "mariadb"


def _table_map_body(table_id: int, table: str, types: bytes) -> bytes:
    """A TABLE_MAP event body: LONG and VARCHAR(40) columns only, no optional metadata."""
    metadata = b"".join(b"\x28\x00" if t == FIELD_TYPE.VARCHAR else b"" for t in types)
    return (
        table_id.to_bytes(6, "little")
        + b"\x00\x00"
        + bytes([2])
        + b"db\x00"
        + bytes([len(table)])
        + table.encode()
        + b"\x00"
        + bytes([len(types)])
        + types
        + bytes([len(metadata)])
        + metadata
        + bytes([(1 << len(types)) - 1])
    )


def _parse(body: bytes, control: Any, table_map: dict[int, Any]) -> Any:
    header = struct.pack("<IBIIIH", 0, BINLOG.TABLE_MAP_EVENT, 1, 19 + len(body), 0, 0)
    packet = pymysql.protocol.MysqlPacket(b"\x00" + header + body, "utf8")
    wrapper = BinLogPacketWrapper(
        packet,
        table_map,
        control,
        (10, 11, 0),
        False,
        frozenset({TableMapEvent}),
        None,
        None,
        None,
        None,
        False,
        False,
        False,
        False,
        False,
    )
    return wrapper.event


def test_an_opted_in_reader_gets_the_same_table_for_the_same_bytes() -> None:
    control = _Control()
    tablemaps.enable(control)
    types = bytes([FIELD_TYPE.LONG, FIELD_TYPE.VARCHAR])
    table_map: dict[int, Any] = {}
    first = _parse(_table_map_body(41, "orders", types), control, table_map)
    second = _parse(_table_map_body(41, "orders", types), control, table_map)
    assert second.get_table() is first.get_table()
    assert table_map[41] is first.get_table()
    assert (second.schema, second.table, second.table_id) == ("db", "orders", 41)
    assert [c.type for c in second.columns] == list(types)
    assert second.columns[1].max_length == 40


def test_different_bytes_parse_again() -> None:
    control = _Control()
    tablemaps.enable(control)
    table_map: dict[int, Any] = {}
    before = _parse(_table_map_body(41, "orders", bytes([FIELD_TYPE.LONG])), control, table_map)
    wider = bytes([FIELD_TYPE.LONG, FIELD_TYPE.VARCHAR])
    altered = _parse(_table_map_body(41, "orders", wider), control, table_map)
    moved = _parse(_table_map_body(42, "orders", wider), control, table_map)
    assert altered.get_table() is not before.get_table()
    assert len(altered.columns) == 2
    assert moved.get_table() is not altered.get_table()
    assert table_map[42] is moved.get_table()


def test_other_readers_keep_the_library_behaviour() -> None:
    control = _Control()  # not opted in
    body = _table_map_body(41, "orders", bytes([FIELD_TYPE.LONG]))
    first = _parse(body, control, {})
    second = _parse(body, control, {})
    assert second.get_table() is not first.get_table()
    assert not hasattr(control, "_cdc_table_maps")
