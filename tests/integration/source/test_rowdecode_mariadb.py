"""The compiled row decoder against python-mysql-replication on rows a real server wrote.

Hypothesis generates rows for a table with a column of every type family (several integer
widths signed and unsigned, FLOAT/DOUBLE, DECIMAL at the widest and narrow precisions, DATE,
DATETIME/TIMESTAMP/TIME at several fractional precisions, YEAR, text in utf8mb4, latin1 and
cp1251, binary strings, ENUM, SET, BIT of 1, 12 and 64 bits, JSON and GEOMETRY), with NULLs and
edge values; each example inserts, updates and deletes them in one transaction. Every rows
event of that transaction is then decoded twice from the same bytes, by the library
(`event.rows`) and by `cdc.source.rowdecode`, and the images must be identical in value and
type; the compiled decoder (`cdc.source.rownative`), where it is built, must give the same
images as well, and the documents of the images must be the same bulk bytes whether they are
built in Python or encoded by `cdc.transform.docnative`.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pymysqlreplication import BinLogStreamReader
from pymysqlreplication.row_event import DeleteRowsEvent, UpdateRowsEvent, WriteRowsEvent
from rig import MariaDB

from cdc import native as compiled_path
from cdc.config import SourceConfig, TableMapping
from cdc.model.events import Column, Kind, RowChange, TableSchema
from cdc.sink.bulk import encode
from cdc.source import rowdecode, rownative
from cdc.source.binlog import _kind
from cdc.source.mysql import connect, current_position, server_info
from cdc.transform.mapping import Mapper

TABLE = "everything"
COLUMNS: dict[str, str] = {
    "t_tiny": "TINYINT",
    "t_utiny": "TINYINT UNSIGNED",
    "t_small": "SMALLINT",
    "t_medium": "MEDIUMINT",
    "t_umedium": "MEDIUMINT UNSIGNED",
    "t_int": "INT",
    "t_big": "BIGINT",
    "t_ubig": "BIGINT UNSIGNED",
    "t_float": "FLOAT",
    "t_double": "DOUBLE",
    "t_dec_wide": "DECIMAL(65,30)",
    "t_dec_money": "DECIMAL(10,2)",
    "t_dec_int": "DECIMAL(5,0)",
    "t_date": "DATE",
    "t_dt0": "DATETIME",
    "t_dt3": "DATETIME(3)",
    "t_dt6": "DATETIME(6)",
    "t_ts1": "TIMESTAMP(1) NULL",
    "t_ts6": "TIMESTAMP(6) NULL",
    "t_time0": "TIME",
    "t_time5": "TIME(5)",
    "t_year": "YEAR",
    "t_char_latin1": "CHAR(10) CHARACTER SET latin1",
    "t_varchar": "VARCHAR(300) CHARACTER SET utf8mb4",
    "t_varchar_cp1251": "VARCHAR(20) CHARACTER SET cp1251",
    "t_text": "TEXT CHARACTER SET utf8mb4",
    "t_blob": "BLOB",
    "t_varbinary": "VARBINARY(20)",
    "t_binary": "BINARY(4)",
    "t_enum": "ENUM('new','paid','shipped')",
    "t_set": "SET('red','green','blue')",
    "t_bit1": "BIT(1)",
    "t_bit12": "BIT(12)",
    "t_bit64": "BIT(64)",
    "t_json": "JSON",
    "t_geo": "GEOMETRY",
}


def _source_config(mariadb: MariaDB) -> SourceConfig:
    return SourceConfig(
        host="127.0.0.1", port=mariadb.port, user="cdc", password="cdc", server_id=933
    )


def _time_text(negative: bool, hours: int, minutes: int, seconds: int, micro: int) -> str:
    if hours == 838:
        minutes, seconds, micro = min(minutes, 59), min(seconds, 59), 0
    return f"{'-' if negative else ''}{hours}:{minutes:02d}:{seconds:02d}.{micro:06d}"


def _decimal(int_digits: int, scale: int) -> st.SearchStrategy[str]:
    # Exact operations only: arithmetic (even unary minus) rounds to the context's 28 digits.
    top = Decimal("9" * int_digits + ("." + "9" * scale if scale else ""))
    bottom = top.copy_negate()
    edges = st.sampled_from([top, bottom, Decimal(0), Decimal(1).scaleb(-scale)])
    values = st.decimals(min_value=bottom, max_value=top, places=scale, allow_nan=False).filter(
        lambda d: bottom <= d <= top
    )
    # As fixed-point text: str() may write an exponent, which the server reads as a DOUBLE.
    return st.one_of(edges, values).map(lambda d: format(d, "f"))


LATIN1 = "".join(chr(c) for c in [*range(0x20, 0x7F), *range(0xA0, 0x100)])
CYRILLIC = "абвгдеёжзийклмнопрстуфхцчшщъыьэюяАБВГДЕЁЖЗИЙКЛМНОПРСТУФХЦЧШЩЪЫЬЭЮЯ abc123"
TIMESTAMPS = st.datetimes(min_value=dt.datetime(1970, 1, 2), max_value=dt.datetime(2038, 1, 18))
DATETIMES = st.one_of(
    st.datetimes(min_value=dt.datetime(1000, 1, 1), max_value=dt.datetime(9999, 12, 31)),
    st.sampled_from([dt.datetime(1000, 1, 1), dt.datetime(9999, 12, 31, 23, 59, 59, 999999)]),
)

VALUES: dict[str, st.SearchStrategy[Any]] = {
    "t_tiny": st.integers(-128, 127),
    "t_utiny": st.integers(0, 255),
    "t_small": st.integers(-(2**15), 2**15 - 1),
    "t_medium": st.integers(-(2**23), 2**23 - 1),
    "t_umedium": st.integers(0, 2**24 - 1),
    "t_int": st.integers(-(2**31), 2**31 - 1),
    "t_big": st.integers(-(2**63), 2**63 - 1),
    "t_ubig": st.integers(0, 2**64 - 1),
    "t_float": st.floats(width=32, allow_nan=False, allow_infinity=False),
    "t_double": st.floats(allow_nan=False, allow_infinity=False),
    "t_dec_wide": _decimal(35, 30),
    "t_dec_money": _decimal(8, 2),
    "t_dec_int": _decimal(5, 0),
    "t_date": st.dates(min_value=dt.date(1000, 1, 1), max_value=dt.date(9999, 12, 31)),
    "t_dt0": DATETIMES,
    "t_dt3": DATETIMES,
    "t_dt6": DATETIMES,
    "t_ts1": TIMESTAMPS,
    "t_ts6": TIMESTAMPS,
    "t_time0": st.builds(
        _time_text,
        st.booleans(),
        st.integers(0, 838),
        st.integers(0, 59),
        st.integers(0, 59),
        st.just(0),
    ),
    "t_time5": st.builds(
        _time_text,
        st.booleans(),
        st.integers(0, 838),
        st.integers(0, 59),
        st.integers(0, 59),
        st.integers(0, 999_990).map(lambda n: n - n % 10),
    ),
    "t_year": st.one_of(st.integers(1901, 2155), st.just(0)),
    "t_char_latin1": st.text(alphabet=LATIN1, max_size=10).map(str.rstrip),
    "t_varchar": st.text(max_size=300),
    "t_varchar_cp1251": st.text(alphabet=CYRILLIC, max_size=20),
    "t_text": st.text(max_size=500),
    "t_blob": st.binary(max_size=300),
    "t_varbinary": st.binary(max_size=20),
    "t_binary": st.binary(min_size=4, max_size=4),
    "t_enum": st.sampled_from(["new", "paid", "shipped"]),
    "t_set": st.sets(st.sampled_from(["red", "green", "blue"])).map(",".join),
    "t_bit1": st.integers(0, 1),
    "t_bit12": st.integers(0, 2**12 - 1),
    "t_bit64": st.integers(0, 2**64 - 1),
    "t_json": st.recursive(
        st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=10),
        lambda inner: (
            st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
        ),
        max_leaves=8,
    ).map(lambda v: orjson.dumps(v).decode()),
    "t_geo": st.tuples(
        st.floats(-180, 180, allow_nan=False), st.floats(-90, 90, allow_nan=False)
    ).map(lambda p: f"POINT({p[0]!r} {p[1]!r})"),
}


@st.composite
def rows(draw: st.DrawFn) -> list[dict[str, Any]]:
    """Rows whose every column is NULL about one time in five."""
    out = []
    for _ in range(draw(st.integers(1, 8))):
        row = {}
        for name, values in VALUES.items():
            row[name] = None if draw(st.integers(0, 4)) == 0 else draw(values)
        out.append(row)
    return out


def _placeholder(name: str) -> str:
    return "ST_GeomFromText(%s)" if name == "t_geo" else "%s"


def _library_images(event: Any) -> list[dict[str, Any]]:
    images = []
    for row in event.rows:
        if "values" in row:
            images.append(row["values"])
        else:
            images.extend([row["before_values"], row["after_values"]])
    return images


def _same(a: Any, b: Any) -> bool:
    if type(a) is not type(b):
        return False
    if isinstance(a, Decimal):
        return bool(a.as_tuple() == b.as_tuple())
    if isinstance(a, dict):
        return list(a) == list(b) and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def _assert_documents_alike(event: Any, images: list[dict[str, Any]]) -> None:
    """The bulk lines of the images' documents are the same bytes whether the document is
    built in Python or encoded in C (`cdc.transform.docnative`), in both decimal modes."""
    columns = tuple(
        Column(
            c.name,
            Kind.JSON if c.name == "t_json" else _kind(c),
            bool(c.unsigned),
            c.name == "id",
        )
        for c in event.columns
    )
    schema = TableSchema(schema="db", table=TABLE, columns=columns, primary_key=("id",))
    zone = ZoneInfo("UTC")
    for decimal in ("string", "number"):
        mapping = TableMapping(table=f"db.{TABLE}", index="docs", decimal=decimal)
        python = Mapper(mapping, schema, zone)
        compiled = Mapper(mapping, schema, zone, encoded=True)
        assert compiled_path.docnative is None or compiled._encode is not None
        for image in images:
            change = RowChange(schema, "insert", None, image)
            assert [encode(a, 1) for a in compiled.map(change)] == [
                encode(a, 1) for a in python.map(change)
            ]


@pytest.fixture(scope="module")
def table(mariadb: MariaDB) -> str:
    db = "rowdecode_diff"
    mariadb.sql(f"DROP DATABASE IF EXISTS {db}")
    mariadb.sql(f"CREATE DATABASE {db}")
    columns = ", ".join(f"{name} {sql}" for name, sql in COLUMNS.items())
    mariadb.sql(f"CREATE TABLE {TABLE} (id INT PRIMARY KEY, {columns})", db=db)
    return db


def test_every_compiled_type_is_in_the_table() -> None:
    assert set(VALUES) == set(COLUMNS)


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(batch=rows(), updates=st.data())
def test_decoder_equals_the_library_on_rows_the_server_wrote(
    mariadb: MariaDB, table: str, batch: list[dict[str, Any]], updates: st.DataObject
) -> None:
    cfg = _source_config(mariadb)
    ctl = connect(cfg)
    info = server_info(ctl)
    start = current_position(ctl, info)
    ctl.close()

    conn = mariadb.connect(database=table, autocommit=False)
    names = list(COLUMNS)
    with contextlib.closing(conn), conn.cursor() as cur:
        cur.execute("SET time_zone = '+00:00'")
        cur.execute(f"DELETE FROM {TABLE}")
        insert = (
            f"INSERT INTO {TABLE} (id, {', '.join(names)}) VALUES "
            f"(%s, {', '.join(_placeholder(n) for n in names)})"
        )
        for i, row in enumerate(batch):
            cur.execute(insert, [i, *(row[n] for n in names)])
        changed = updates.draw(rows())
        for i, row in enumerate(changed[: len(batch)]):
            sets = ", ".join(f"{n} = {_placeholder(n)}" for n in names)
            cur.execute(f"UPDATE {TABLE} SET {sets} WHERE id = %s", [*(row[n] for n in names), i])
        cur.execute(f"DELETE FROM {TABLE} WHERE MOD(id, 2) = 0")
        conn.commit()

    reader = BinLogStreamReader(
        connection_settings={
            "host": "127.0.0.1",
            "port": mariadb.port,
            "user": "cdc",
            "password": "cdc",
        },
        server_id=934,
        is_mariadb=True,
        auto_position=start.gtid,
        blocking=False,
        only_events=[WriteRowsEvent, UpdateRowsEvent, DeleteRowsEvent],
        only_schemas=[table],
    )
    compared = 0
    try:
        for event in reader:
            decoder = rowdecode.compile_table(event.columns)
            assert decoder is not None, "a column type of the table is not compiled"
            # Peek at the rows without consuming them, for the library to read them after.
            packet = event.packet
            data = packet.packet.get_all_data()
            start_at = len(data) - packet.bytes_to_read()
            body = bytes(data[start_at : start_at + event.event_size - packet.read_bytes])
            ours = decoder(body, 0, len(body))
            native = rownative.compile_native(event.columns, decoder)
            assert native is not None or compiled_path.rownative is None
            if native is not None:
                # The compiled decoder, where it is built, must read the server's bytes alike.
                compiled = native(body, 0, len(body))
                assert len(compiled) == len(ours)
                for mine, python in zip(compiled, ours, strict=True):
                    assert _same(mine, python), {
                        k: (mine.get(k), python.get(k))
                        for k in python
                        if not _same(mine[k], python[k])
                    }
            theirs = _library_images(event)
            assert len(ours) == len(theirs)
            _assert_documents_alike(event, ours)
            for mine, library in zip(ours, theirs, strict=True):
                assert _same(mine, library), {
                    k: (mine.get(k), library.get(k))
                    for k in library
                    if not _same(mine.get(k), library[k])
                }
            compared += len(ours)
    finally:
        reader.close()
    # Every insert and delete is a row image; an update that changes nothing is not logged.
    assert compared >= len(batch) + (len(batch) + 1) // 2
