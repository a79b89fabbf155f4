"""The test rig starts servers configured as the connector needs them and can break them."""

from __future__ import annotations

import os
from collections.abc import Callable

import pymysql
import pytest
import redis
from pymysqlreplication import BinLogStreamReader
from pymysqlreplication.row_event import WriteRowsEvent
from rig import MariaDB, Osmem, Redis, RigError


def test_binlog_is_row_based_with_full_image_and_metadata(mariadb: MariaDB) -> None:
    assert mariadb.variable("log_bin") == "ON"
    assert mariadb.variable("binlog_format") == "ROW"
    assert mariadb.variable("binlog_row_image") == "FULL"
    assert mariadb.variable("binlog_row_metadata") == "FULL"
    assert mariadb.variable("server_id") == "1"


def test_cdc_user_streams_named_columns_from_the_binlog(mariadb: MariaDB, fresh_db: str) -> None:
    mariadb.sql("CREATE TABLE t (id INT PRIMARY KEY, name VARCHAR(20))", db=fresh_db)
    start = mariadb.query("SELECT @@gtid_binlog_pos")[0][0]
    mariadb.sql("INSERT INTO t VALUES (1, %s)", ("zoë",), db=fresh_db)

    stream = BinLogStreamReader(
        connection_settings={
            "host": mariadb.host,
            "port": mariadb.port,
            "user": mariadb.user,
            "password": mariadb.password,
        },
        server_id=4001,
        is_mariadb=True,
        auto_position=start,
        blocking=False,
        only_events=[WriteRowsEvent],
    )
    try:
        rows = [(ev.schema, ev.table, row["values"]) for ev in stream for row in ev.rows]
    finally:
        stream.close()
    assert rows == [(fresh_db, "t", {"id": 1, "name": "zoë"})]


def test_cdc_user_can_read_but_not_write(mariadb: MariaDB, fresh_db: str) -> None:
    mariadb.sql("CREATE TABLE t (id INT PRIMARY KEY)", db=fresh_db)
    mariadb.sql("INSERT INTO t VALUES (7)", db=fresh_db)
    conn = mariadb.connect(user=mariadb.user, password=mariadb.password, database=fresh_db)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT id FROM t")
            assert cur.fetchall() == ((7,),)
            cur.execute("SHOW MASTER STATUS")
            assert cur.fetchone()[0].startswith("mysql-bin.")
            with pytest.raises(pymysql.err.OperationalError) as denied:
                cur.execute("INSERT INTO t VALUES (8)")
            assert denied.value.args[0] == 1142
    finally:
        conn.close()


def test_killed_mariadb_restarts_on_same_port_with_committed_data(
    make_mariadb: Callable[..., MariaDB],
) -> None:
    server = make_mariadb()
    port, before = server.port, server.binary_logs()
    server.sql("CREATE DATABASE shop")
    server.sql("CREATE TABLE shop.orders (id INT PRIMARY KEY, total DECIMAL(10,2))")
    server.sql("INSERT INTO shop.orders VALUES (1, 9.50), (2, 20.00)")
    gtid = server.query("SELECT @@gtid_binlog_pos")[0][0]

    server.kill()
    assert not server.running
    with pytest.raises(pymysql.err.OperationalError):
        server.connect(connect_timeout=1)

    server.start()
    assert server.port == port
    assert [(i, str(t)) for i, t in server.query("SELECT * FROM shop.orders ORDER BY id")] == [
        (1, "9.50"),
        (2, "20.00"),
    ]
    assert server.query("SELECT @@gtid_binlog_pos")[0][0] == gtid
    assert set(before) < set(server.binary_logs())


def test_extra_args_override_the_binlog_defaults(make_mariadb: Callable[..., MariaDB]) -> None:
    server = make_mariadb(extra_args=["--binlog-format=STATEMENT"])
    assert server.variable("binlog_format") == "STATEMENT"


def test_purge_leaves_only_the_current_binlog(make_mariadb: Callable[..., MariaDB]) -> None:
    server = make_mariadb()
    server.sql("CREATE DATABASE d")
    first = server.binary_logs()[0]
    current = server.purge_binary_logs_to_current()
    assert current != first
    assert server.binary_logs() == [current]


def test_startup_failure_names_the_cause(make_mariadb: Callable[..., MariaDB]) -> None:
    with pytest.raises(RigError, match=r"(?s)exited during startup.*no-such-option"):
        make_mariadb(extra_args=["--no-such-option"])


def test_close_removes_process_and_directory(make_redis: Callable[..., Redis]) -> None:
    server = make_redis()
    pid, directory = server.pid, server.dir
    assert pid is not None
    server.close()
    assert not directory.exists()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_redis_url_is_an_isolated_database(redis_server: Redis, redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    client.set("k", "v")
    assert client.get("k") == "v"
    with redis_server.client(0) as other:
        assert other.get("k") is None
    client.close()


def test_redis_keeps_data_across_kill_only_with_appendonly(
    make_redis: Callable[..., Redis],
) -> None:
    durable, volatile = make_redis(appendonly=True), make_redis()
    for server in (durable, volatile):
        with server.client() as client:
            client.set("position", "0-1-42")
        server.kill()
        server.start()
    with durable.client() as client:
        assert client.get("position") == "0-1-42"
    with volatile.client() as client:
        assert client.get("position") is None


def test_osmem_rejects_an_older_external_version(osmem: Osmem, es_index: str) -> None:
    path = f"/{es_index}/_doc/1?version_type=external&version="
    osmem.request("PUT", path + "5", {"name": "new"})
    body = osmem.request("PUT", path + "3", {"name": "old"}, ok=(409,))[1]
    assert body["error"]["type"] == "version_conflict_engine_exception"

    doc = osmem.get_doc(es_index, "1")
    assert doc is not None
    assert (doc["_version"], doc["_source"]) == (5, {"name": "new"})
    assert osmem.versions(es_index) == {"1": 5}


def test_osmem_helpers_read_every_document(make_osmem: Callable[..., Osmem]) -> None:
    server = make_osmem()
    server.page_size = 7
    for i in range(20):
        server.request("PUT", f"/items/_doc/{i}", {"n": i})

    assert server.count("items") == 20
    assert server.all_docs("items") == {str(i): {"n": i} for i in range(20)}
    assert server.get_doc("items", "99") is None

    server.delete_index("items")
    assert server.count("items") == 0
    assert server.all_docs("items") == {}
