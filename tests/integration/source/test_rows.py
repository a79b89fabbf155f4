"""RowReader against a real MariaDB: rows read with SELECT must be indistinguishable from the
same rows decoded from the binlog, so replayed and snapshotted documents equal streamed ones."""

from __future__ import annotations

import datetime as dt
from typing import Any
from zoneinfo import ZoneInfo

import orjson
import pytest
from rig import MariaDB, free_port

from cdc.config import SourceConfig, TableMapping
from cdc.errors import CdcError, SourceUnavailable
from cdc.model.events import Heartbeat, RowChange
from cdc.source.binlog import BinlogSource
from cdc.source.mysql import connect, current_position, server_info
from cdc.source.rows import RowReader
from cdc.transform.mapping import Mapper

# Every column type the connector documents, plus the shapes that differ between the binlog
# and the text protocol: 4-byte FLOAT, zero dates, the zero TIMESTAMP, YEAR 0000, empty SET,
# BIT widths, CHAR padding, MariaDB JSON, geometry, unsigned columns.
ALL_TYPES_DDL = """
CREATE TABLE all_types (
  id BIGINT UNSIGNED PRIMARY KEY,
  ti TINYINT, tu TINYINT UNSIGNED, su SMALLINT UNSIGNED, mi MEDIUMINT, mu MEDIUMINT UNSIGNED,
  i INT, iu INT UNSIGNED ZEROFILL, bi BIGINT,
  dc DECIMAL(30,10), du DECIMAL(5,2) UNSIGNED, d0 DECIMAL(4,0),
  f FLOAT, d DOUBLE, fu FLOAT UNSIGNED,
  dd DATE, dt DATETIME(6), dt0 DATETIME, ts TIMESTAMP(3) NULL DEFAULT NULL,
  ts0 TIMESTAMP NULL DEFAULT NULL, t TIME(2), t0 TIME, y YEAR,
  c CHAR(5), vc VARCHAR(100) CHARACTER SET utf8mb4, txt TEXT CHARACTER SET utf8mb4,
  tt TINYTEXT, lt LONGTEXT, lat VARCHAR(20) CHARACTER SET latin1,
  e ENUM('small','large','it''s'), s SET('a','b','c'), b BIT(10), b1 BIT(1), b64 BIT(64),
  j JSON, bin BINARY(4), vb VARBINARY(10), bl BLOB, g POINT NULL, n INT NULL
) DEFAULT CHARSET=utf8mb4
"""

ROWS = [
    "INSERT INTO all_types VALUES (18446744073709551615, -128, 255, 65535, -8388608, 16777215,"
    " 2147483647, 4294967295, -9223372036854775808,"
    " '12345678901234567890.0123456789', '999.99', '-9999',"
    " 1.2345678, 0.30000000000000004, 3.4028234e38, '2024-02-29',"
    " '2024-07-01 12:30:00.250000', '9999-12-31 23:59:59', '2024-01-02 03:04:05.123',"
    " '2038-01-19 03:14:07', '-838:59:59.00', '838:59:59', 2155,"
    " 'ab  ', 'héllo 🚀  ', 'long text', 'tiny', REPEAT('x', 70000), 'café',"
    " 'it''s', 'a,c', b'1111111111', b'1', b'1' << 63 | 1,"
    ' \'{"k": [1, "two", null, true], "n": {"x": 1.5}, "u": "ü"}\','
    " x'00ff1020', x'6869', x'000102', POINT(1.5, -2), NULL)",
    "INSERT INTO all_types (id, dd, dt, dt0, ts0, t, y, s, b, b1, j, e, c, f, d)"
    " VALUES (2, '0000-00-00', '1999-12-31 23:59:59', '2024-00-10 00:00:00',"
    " '0000-00-00 00:00:00', '100:00:00.50', 0, '', b'0', b'0', '[]', '', '', 1e-40, 5e-324)",
    "INSERT INTO all_types (id, dd, dt, t, t0, y, s, b, j, vc, f, d, dc, bin, vb)"
    " VALUES (3, '2024-05-00', '1000-01-01 00:00:00.000001', '-00:00:00.01', '-01:02:03',"
    " 1901, 'c,b,a', b'0000000101', '\"just a string\"', '', -0.1, -1.5e-300, '-0.0000000001',"
    " x'0100', x'0100')",
    "INSERT INTO all_types (id) VALUES (4)",
]


def _source_config(mariadb: MariaDB, time_zone: str = "UTC") -> SourceConfig:
    return SourceConfig(
        host="127.0.0.1",
        port=mariadb.port,
        user="cdc",
        password="cdc",
        server_id=4242,
        heartbeat_interval=0.3,
        read_timeout=5,
        time_zone=time_zone,
    )


def _streamed_rows(cfg: SourceConfig, db: str, write: Any) -> list[RowChange]:
    """Run `write()` and return the row changes the binlog source decodes from it."""
    conn = connect(cfg)
    info = server_info(conn)
    start = current_position(conn, info)
    conn.close()
    write()
    source = BinlogSource(cfg, [f"{db}.*"], start, info)
    changes = []
    for event in source.events():
        if isinstance(event, Heartbeat):
            break
        if isinstance(event, RowChange):
            changes.append(event)
    source.close()
    return changes


def _documents(mapper: Mapper, row: dict[str, Any]) -> list[tuple[str, str, bytes]]:
    actions = mapper.map(RowChange(mapper.table, "insert", None, row))
    return [(a.op, a.doc_id, orjson.dumps(a.source)) for a in actions]


def test_selected_rows_have_the_binlog_shapes_and_map_to_the_same_documents(
    mariadb: MariaDB, fresh_db: str
) -> None:
    cfg = _source_config(mariadb)
    mariadb.sql("SET GLOBAL sql_mode = 'NO_ENGINE_SUBSTITUTION'")
    try:

        def write() -> None:
            mariadb.sql(ALL_TYPES_DDL, db=fresh_db)
            conn = mariadb.connect(database=fresh_db)
            with conn.cursor() as cur:
                cur.execute("SET time_zone = '+00:00'")
                for statement in ROWS:
                    cur.execute(statement)
            conn.close()

        streamed = _streamed_rows(cfg, fresh_db, write)
    finally:
        mariadb.sql("SET GLOBAL sql_mode = DEFAULT")
    assert len(streamed) == len(ROWS)
    binlog_schema = streamed[0].table

    with RowReader(cfg) as reader:
        schema = reader.table_schema(fresh_db, "all_types")
        chunk = reader.fetch_chunk(fresh_db, "all_types", ["id"], None, 100)

    # The same table description, column for column: kinds, unsigned, primary key.
    assert [c for c in schema.columns if c not in binlog_schema.columns] == []
    assert schema == binlog_schema
    selected = {row["id"]: row for row in chunk}
    assert sorted(selected) == sorted(change.after["id"] for change in streamed if change.after)
    # python-mysql-replication 1.0.17 decodes a negative TIME with a fraction wrongly
    # (-00:00:00.01 arrives as -00:00:00.99); the reader keeps the server's value. When the
    # library is fixed, the first assertion fails and this exception can go.
    decoded = {change.after["id"]: dict(change.after) for change in streamed if change.after}
    assert decoded[3]["t"] == -dt.timedelta(milliseconds=990)
    assert selected[3]["t"] == -dt.timedelta(milliseconds=10)
    decoded[3]["t"] = selected[3]["t"]
    for row_id, row in selected.items():
        # Exactly the decoded values, type for type (a 1 == True or 1.0 == 1 would pass `==`).
        assert row == decoded[row_id]
        assert {k: type(v) for k, v in row.items()} == {
            k: type(v) for k, v in decoded[row_id].items()
        }
    # A few shapes spelled out, so a change in both decoders at once still shows.
    assert selected[18446744073709551615]["b"] == "1111111111"
    assert selected[18446744073709551615]["f"] == pytest.approx(1.2345678, rel=1e-7)
    assert selected[18446744073709551615]["f"] != 1.2345678  # the float32 value, not the text
    assert selected[2]["dd"] is None and selected[2]["dt0"] is None
    assert selected[2]["ts0"] == dt.datetime(1970, 1, 1)
    assert selected[2]["y"] == 1900 and selected[2]["s"] is None
    assert selected[3]["s"] == {"a", "b", "c"}
    assert isinstance(selected[18446744073709551615]["j"], str)  # MariaDB JSON is text
    assert selected[3]["bin"] == b"\x01" and selected[3]["vb"] == b"\x01\x00"

    for mapping in (
        TableMapping(table=f"{fresh_db}.all_types", index="x"),
        TableMapping(
            table=f"{fresh_db}.all_types",
            index="x",
            decimal="number",
            id_columns=["id", "dt", "bin"],
            exclude=["lt"],
        ),
    ):
        for zone in ("UTC", "Europe/Berlin"):
            from_binlog = Mapper(mapping, binlog_schema, ZoneInfo(zone))
            from_select = Mapper(mapping, schema, ZoneInfo(zone))
            for row_id, row in decoded.items():
                if any(row[column] is None for column in mapping.id_columns or []):
                    continue  # no document id either way
                expected = _documents(from_binlog, row)
                assert _documents(from_select, selected[row_id]) == expected


def test_rows_are_found_by_the_rendered_key_parts_of_their_documents(
    mariadb: MariaDB, fresh_db: str
) -> None:
    cfg = _source_config(mariadb, time_zone="Europe/Berlin")
    mariadb.sql(
        "CREATE TABLE k (u BIGINT UNSIGNED, dc DECIMAL(8,3), dd DATE, dt DATETIME(3),"
        " ts TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6), t TIME(1), s SET('x','y','z'),"
        " bin BINARY(3), name VARCHAR(20), v INT,"
        " PRIMARY KEY (u, dc, dd, dt, ts, t, s, bin, name))",
        db=fresh_db,
    )

    def write() -> None:
        conn = mariadb.connect(database=fresh_db)
        with conn.cursor() as cur:
            cur.execute("SET time_zone = '+00:00'")
            cur.executemany(
                "INSERT INTO k VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                [
                    (
                        18446744073709551615,
                        "12.500",
                        "2024-02-29",
                        "2024-10-27 02:30:00.125",  # ambiguous in Berlin (DST ends)
                        "2024-03-31 01:30:00.000001",
                        "-838:59:59",  # negative fractions: see the test above
                        "z,x",
                        b"\x00\x01",
                        "Name",
                        1,
                    ),
                    (
                        18446744073709551614,
                        "-0.001",
                        "1000-01-01",
                        "2024-03-31 02:30:00",  # inside Berlin's spring-forward gap
                        "1970-01-01 00:00:01",
                        "00:00:00",
                        "y",
                        b"abc",
                        "other ",
                        2,
                    ),
                ],
            )
        conn.close()

    streamed = _streamed_rows(cfg, fresh_db, write)
    assert len(streamed) == 2
    mapping = TableMapping(table=f"{fresh_db}.k", index="x")
    mapper = Mapper(mapping, streamed[0].table, ZoneInfo(cfg.time_zone))
    keys = []
    for change in streamed:
        (action,) = mapper.map(change)
        keys.append(action.key)
    # The binlog drops a BINARY value's trailing zero bytes, and so does the document id.
    assert keys[0][0] == "18446744073709551615" and keys[0][7] == "0001"
    # Differs from the first key only in the last digit of a BIGINT UNSIGNED: compared as a
    # double it would match the first row.
    near_miss = ("18446744073709551613", *keys[0][1:])
    with RowReader(cfg) as reader:
        found = reader.fetch_by_keys(
            fresh_db, "k", mapper.id_columns, [keys[0], keys[1], near_miss, keys[0]]
        )
        assert set(found) == {keys[0], keys[1], near_miss}
        assert found[near_miss] is None
        for change, key in zip(streamed, keys, strict=True):
            assert found[key] == change.after
        with pytest.raises(CdcError, match="not a value of column 'u'"):
            reader.fetch_by_keys(fresh_db, "k", mapper.id_columns, [("x", *keys[0][1:])])
        # Only the key columns, in one IN query (what `cdc verify` looks extra documents up
        # with): the same rows, giving back the same document ids.
        ids = reader.fetch_key_columns(fresh_db, "k", mapper.id_columns, [*keys, near_miss])
        assert sorted(mapper.doc_id(row) for row in ids) == sorted(
            action.doc_id for change in streamed for action in mapper.map(change)
        )
        assert reader.valid_key(fresh_db, "k", mapper.id_columns, keys[0])
        assert not reader.valid_key(fresh_db, "k", mapper.id_columns, ("x", *keys[0][1:]))
        assert not reader.valid_key(fresh_db, "k", mapper.id_columns, keys[0][:2])
        with pytest.raises(CdcError, match="does not exist"):
            reader.table_schema(fresh_db, "missing")


def test_chunks_walk_a_composite_key_in_order_without_gaps_or_repeats(
    mariadb: MariaDB, fresh_db: str
) -> None:
    mariadb.sql(
        "CREATE TABLE ck (a INT, b VARCHAR(8), c DATE, v INT, PRIMARY KEY (a, b, c))",
        db=fresh_db,
    )
    mariadb.sql(
        "CREATE TABLE ek (e ENUM('zz','aa','mm'), t TIME(1), bn VARBINARY(4), bt BIT(3), v INT,"
        " PRIMARY KEY (e, t, bn, bt))",
        db=fresh_db,
    )
    ck_rows = [
        (a, b, f"2024-01-{c:02d}", a * 100 + c)
        for a in (-5, 0, 3)
        for b in ("", "A", "b", "B2", "ü")
        for c in (1, 2, 17)
    ]
    ek_rows = [
        (e, t, bn, bt, 1)
        for e in ("zz", "aa", "mm")
        for t in ("-01:00:00.5", "00:00:00", "00:00:00.1", "12:00:00")
        for bn in (b"", b"\x00", b"\xff\x01")
        for bt in (0, 5)
    ]
    conn = mariadb.connect(database=fresh_db)
    with conn.cursor() as cur:
        cur.executemany("INSERT INTO ck VALUES (%s, %s, %s, %s)", ck_rows)
        cur.executemany("INSERT INTO ek VALUES (%s, %s, %s, %s, %s)", ek_rows)
    conn.close()

    cfg = _source_config(mariadb)
    with RowReader(cfg) as reader:
        tables = [
            ("ck", ["a", "b", "c"], len(ck_rows)),
            ("ek", ["e", "t", "bn", "bt"], len(ek_rows)),
        ]
        for table, key, total in tables:
            whole = reader.fetch_chunk(fresh_db, table, key, None, 10_000)
            assert len(whole) == total
            for limit in (1, 4, 7, total):
                walked: list[dict[str, Any]] = []
                after = None
                chunks = 0
                while True:
                    chunk = reader.fetch_chunk(fresh_db, table, key, after, limit)
                    chunks += 1
                    walked += chunk
                    if len(chunk) < limit:
                        break
                    after = tuple(chunk[-1][c] for c in key)
                assert walked == whole, (table, limit)
                assert chunks == total // limit + 1

    # The server's own order, enum by definition and text by collation, is the order walked.
    order = [r[0] for r in mariadb.query("SELECT v FROM ck ORDER BY a, b, c", db=fresh_db)]
    with RowReader(cfg) as reader:
        walked = reader.fetch_chunk(fresh_db, "ck", ["a", "b", "c"], None, 100)
        assert [r["v"] for r in walked] == order
        first_enum = reader.fetch_chunk(fresh_db, "ek", ["e", "t", "bn", "bt"], None, 1)[0]
    assert first_enum["e"] == "zz"
    assert first_enum["t"] == -dt.timedelta(hours=1, microseconds=500_000)


def test_a_missing_table_and_an_unreachable_server_are_reported_in_our_terms(
    mariadb: MariaDB, fresh_db: str
) -> None:
    cfg = _source_config(mariadb)
    with RowReader(cfg) as reader, pytest.raises(CdcError) as missing:
        reader.table_schema(fresh_db, "missing")
    assert not missing.value.transient
    assert missing.value.hint is not None and "SELECT" in missing.value.hint
    unreachable = cfg.model_copy(update={"port": free_port(), "connect_timeout": 1})
    with RowReader(unreachable) as reader, pytest.raises(SourceUnavailable):
        reader.fetch_chunk(fresh_db, "t", ["id"], None, 10)
