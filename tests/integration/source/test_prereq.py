"""Prerequisite and position checks against real MariaDB servers.

Misconfigured servers are private (`make_mariadb`); the session server is only read. Where the
server itself can judge (a position it cannot stream from fails with error 1236), the check's
verdict is compared with the server's.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable

import pytest
from rig import MariaDB

from cdc.config import SourceConfig
from cdc.errors import PositionError, PrerequisiteError
from cdc.model.events import Heartbeat
from cdc.model.position import Position, ServerInfo
from cdc.source.binlog import BinlogSource
from cdc.source.mysql import connect, current_position, server_info
from cdc.source.positions import check_position
from cdc.source.prereq import Check, check_source, require

MakeMariaDB = Callable[..., MariaDB]


def _config(server: MariaDB, user: str = "cdc", password: str = "cdc") -> SourceConfig:
    return SourceConfig(
        host=server.host,
        port=server.port,
        user=user,
        password=password,
        server_id=4242,
        heartbeat_interval=0.3,
        read_timeout=5,
    )


def _checks(server: MariaDB, schemas: list[str], user: str = "cdc") -> dict[str, Check]:
    with contextlib.closing(connect(_config(server, user, user))) as c:
        return {check.name: check for check in check_source(c, server_info(c), schemas)}


def _position(server: MariaDB) -> tuple[ServerInfo, Position]:
    with contextlib.closing(connect(_config(server))) as conn:
        info = server_info(conn)
        return info, current_position(conn, info)


def _check_position(server: MariaDB, position: Position) -> Check:
    with contextlib.closing(connect(_config(server))) as conn:
        return check_position(conn, server_info(conn), position)


def _server_streams_from(server: MariaDB, position: Position) -> bool:
    """The server's own verdict: True when it streams from `position` up to being idle."""
    info, _ = _position(server)
    source = BinlogSource(_config(server), ["x.*"], position, info)
    try:
        for event in source.events():
            if isinstance(event, Heartbeat):
                return True
    except PositionError:
        return False
    finally:
        source.close()
    raise AssertionError("the binlog stream ended without an error or a heartbeat")


def _failure_message(checks: list[Check], error: type[Exception]) -> str:
    with pytest.raises(error) as raised:
        require(checks)
    message = str(raised.value)
    assert "\n" not in message, "the error must be one paragraph"
    return message


def test_session_server_meets_every_prerequisite(mariadb: MariaDB, fresh_db: str) -> None:
    checks = _checks(mariadb, [fresh_db])

    assert list(checks) == [
        "server_version",
        "log_bin",
        "binlog_format",
        "binlog_row_image",
        "binlog_row_metadata",
        "binlog_compression",
        "gtid_mode",
        "replication_privileges",
        "select_privilege",
    ]
    assert [c for c in checks.values() if not c.ok] == []
    assert all(c.fix is None for c in checks.values())
    assert checks["replication_privileges"].detail == (
        "'cdc'@'%' has REPLICATION SLAVE and BINLOG MONITOR on *.*"
    )
    require(list(checks.values()))


def test_current_position_passes_and_reports_lag_and_binlog_horizon(
    mariadb: MariaDB, fresh_db: str
) -> None:
    _, position = _position(mariadb)
    mariadb.sql("CREATE TABLE t (id INT PRIMARY KEY)", db=fresh_db)
    mariadb.sql("INSERT INTO t VALUES (1)", db=fresh_db)
    mariadb.sql("INSERT INTO t VALUES (2)", db=fresh_db)

    check = _check_position(mariadb, position)

    assert check.ok, check.detail
    assert "3 transactions behind the server" in check.detail
    oldest = mariadb.binary_logs()[0]
    assert f"oldest {oldest}" in check.detail
    assert "binlogs never expire by age (binlog_expire_logs_seconds is 0)" in check.detail
    require([check])


_MISCONFIGURED = [
    pytest.param(
        ["--binlog-format=STATEMENT"],
        "binlog_format",
        "binlog_format is STATEMENT; the connector needs ROW",
        "SET GLOBAL binlog_format = ROW",
        id="binlog_format",
    ),
    pytest.param(
        ["--binlog-row-image=MINIMAL"],
        "binlog_row_image",
        "binlog_row_image is MINIMAL; the connector needs FULL",
        "SET GLOBAL binlog_row_image = FULL",
        id="binlog_row_image",
    ),
    pytest.param(
        ["--binlog-row-metadata=MINIMAL"],
        "binlog_row_metadata",
        "binlog_row_metadata is MINIMAL; the connector needs FULL so that every row event "
        "carries its table's column names: otherwise rows written before an ALTER TABLE",
        "SET GLOBAL binlog_row_metadata = FULL",
        id="binlog_row_metadata",
    ),
    pytest.param(
        ["--log-bin-compress=ON"],
        "binlog_compression",
        "log_bin_compress is ON; the binlog library the connector uses cannot read compressed",
        "SET GLOBAL log_bin_compress = OFF",
        id="log_bin_compress",
    ),
]


@pytest.mark.parametrize(("args", "name", "detail", "statement"), _MISCONFIGURED)
def test_a_wrong_setting_is_fatal_and_its_printed_fix_repairs_it(
    make_mariadb: MakeMariaDB, args: list[str], name: str, detail: str, statement: str
) -> None:
    server = make_mariadb(extra_args=args)

    checks = _checks(server, ["shop"])

    assert [c.name for c in checks.values() if not c.ok] == [name]
    failed = checks[name]
    assert failed.fatal
    assert failed.detail.startswith(detail)
    assert failed.fix is not None
    assert failed.fix.startswith(f"{statement}, and ")
    assert "server config file so it survives a restart" in failed.fix
    message = _failure_message(list(checks.values()), PrerequisiteError)
    assert message == (
        f"The source server does not meet the connector's prerequisites: {failed.detail}. "
        f"Fix: {failed.fix}."
    )
    # The statement the fix names is one the server accepts, and it is enough.
    server.sql(statement)
    assert _checks(server, ["shop"])[name].ok


def test_binary_logging_off_names_log_bin_and_the_restart(make_mariadb: MakeMariaDB) -> None:
    server = make_mariadb(extra_args=["--skip-log-bin"])

    checks = _checks(server, ["shop"])

    assert [c.name for c in checks.values() if not c.ok] == ["log_bin"]
    message = _failure_message(list(checks.values()), PrerequisiteError)
    assert "binary logging is disabled (log_bin is OFF)" in message
    assert "add log_bin = mysql-bin" in message
    assert "restart the server" in message


def test_every_wrong_setting_is_listed_in_one_paragraph(make_mariadb: MakeMariaDB) -> None:
    server = make_mariadb(
        extra_args=["--binlog-format=MIXED", "--binlog-row-metadata=NO_LOG", "--log-bin-compress"]
    )

    message = _failure_message(list(_checks(server, ["shop"]).values()), PrerequisiteError)

    assert message.startswith(
        "The source server does not meet the connector's prerequisites (3 problems): (1) "
        "binlog_format is MIXED"
    )
    assert "(2) binlog_row_metadata is NO_LOG" in message
    assert "(3) log_bin_compress is ON" in message
    assert message.count("Fix: SET GLOBAL ") == 3


def _create_user(server: MariaDB, name: str, *grants: str) -> None:
    server.sql(f"CREATE USER '{name}'@'%' IDENTIFIED BY '{name}'")
    for grant in grants:
        server.sql(grant.format(user=f"'{name}'@'%'"))


def test_missing_replication_slave_is_fatal_and_the_printed_grant_fixes_it(
    make_mariadb: MakeMariaDB,
) -> None:
    server = make_mariadb()
    _create_user(server, "noslave", "GRANT REPLICATION CLIENT, SELECT ON *.* TO {user}")

    checks = _checks(server, ["shop"], user="noslave")

    failed = checks["replication_privileges"]
    assert not failed.ok and failed.fatal
    assert failed.detail == (
        "'noslave'@'%' lacks REPLICATION SLAVE on *.* (the connector needs REPLICATION SLAVE "
        "to read the binlog stream)"
    )
    assert failed.fix == "GRANT REPLICATION SLAVE ON *.* TO 'noslave'@'%'"
    message = _failure_message(list(checks.values()), PrerequisiteError)
    assert "Fix: GRANT REPLICATION SLAVE ON *.* TO 'noslave'@'%'." in message
    server.sql(failed.fix)
    assert _checks(server, ["shop"], user="noslave")["replication_privileges"].ok


def test_the_documented_grant_satisfies_the_privilege_checks(make_mariadb: MakeMariaDB) -> None:
    # MariaDB 10.5+ prints REPLICATION CLIENT back as BINLOG MONITOR.
    server = make_mariadb()
    _create_user(
        server, "docs", "GRANT REPLICATION SLAVE, REPLICATION CLIENT, SELECT ON *.* TO {user}"
    )
    grants = server.query("SHOW GRANTS FOR 'docs'@'%'")
    assert "REPLICATION SLAVE, BINLOG MONITOR" in grants[0][0]

    checks = _checks(server, ["shop", "crm"], user="docs")

    assert checks["replication_privileges"].ok
    assert checks["select_privilege"].ok


def test_select_is_checked_per_schema_and_through_roles(make_mariadb: MakeMariaDB) -> None:
    server = make_mariadb()
    server.sql("CREATE DATABASE crm")
    server.sql("CREATE TABLE crm.accounts (id INT PRIMARY KEY)")
    server.sql("CREATE ROLE streamer")
    server.sql("GRANT REPLICATION SLAVE, BINLOG MONITOR ON *.* TO streamer")
    _create_user(
        server,
        "viarole",
        "GRANT SELECT ON `shop`.* TO {user}",
        "GRANT SELECT ON `crm`.`accounts` TO {user}",
        "GRANT streamer TO {user}",
        "SET DEFAULT ROLE streamer FOR {user}",
    )

    checks = _checks(server, ["shop", "crm", "billing"], user="viarole")

    assert checks["replication_privileges"].ok, checks["replication_privileges"].detail
    select = checks["select_privilege"]
    assert not select.ok and select.fatal
    assert select.detail.startswith(
        "'viarole'@'%' has no SELECT privilege in billing and may SELECT only in some tables of crm"
    )
    assert select.fix == (
        "GRANT SELECT ON `billing`.* TO 'viarole'@'%'; GRANT SELECT ON `crm`.* TO 'viarole'@'%'"
    )
    server.sql("GRANT SELECT ON `billing`.* TO 'viarole'@'%'")
    select = _checks(server, ["shop", "crm", "billing"], user="viarole")["select_privilege"]
    # Table-level grants may be deliberate: a warning, not a refusal to start.
    assert not select.ok and not select.fatal
    require([select])


def test_purged_position_is_reported_with_what_is_gone_and_the_fix(
    make_mariadb: MakeMariaDB,
) -> None:
    server = make_mariadb()
    server.sql("CREATE DATABASE x")
    server.sql("CREATE TABLE x.t (id INT PRIMARY KEY)")
    _, before = _position(server)
    for i in range(3):
        server.sql("INSERT INTO x.t VALUES (%s)", (i,))
    oldest = server.purge_binary_logs_to_current()
    server.sql("INSERT INTO x.t VALUES (10)")
    _, now = _position(server)
    seq = int(before.gtid.rsplit("-", 1)[1])

    check = _check_position(server, before)

    assert not check.ok and check.fatal
    assert check.detail == (
        f"position {before.describe()} was purged: the server no longer has the transactions "
        f"after it (domain 0 seq {seq + 1} to {seq + 3}); the oldest binlog, {oldest}, starts "
        f"after 0-1-{seq + 3}; those changes can never be streamed; binlogs never expire by "
        "age (binlog_expire_logs_seconds is 0)"
    )
    message = _failure_message([check], PositionError)
    assert message.startswith("The stored position cannot be used: position ")
    assert (
        "run `cdc position reset --to now` and re-snapshot the tables (`cdc snapshot --all`)"
        in (message)
    )
    assert not _server_streams_from(server, before)
    assert _check_position(server, now).ok
    assert _server_streams_from(server, now)


def test_position_whose_file_is_purged_but_gtid_is_kept_passes(make_mariadb: MakeMariaDB) -> None:
    server = make_mariadb()
    server.sql("CREATE DATABASE x")
    first_file = server.binary_logs()[0]
    server.purge_binary_logs_to_current()
    _, now = _position(server)
    stale_file = Position("mariadb", now.gtid, first_file, 4)

    assert first_file not in server.binary_logs()
    assert _check_position(server, stale_file).ok
    assert _server_streams_from(server, stale_file)


def test_a_domain_missing_from_the_position_whose_start_was_purged_is_purged(
    make_mariadb: MakeMariaDB,
) -> None:
    server = make_mariadb()
    server.sql("CREATE DATABASE x")
    server.sql("CREATE TABLE x.t (id INT PRIMARY KEY)")
    with contextlib.closing(server.connect()) as conn, conn.cursor() as cur:
        cur.execute("SET SESSION gtid_domain_id = 5")
        cur.execute("INSERT INTO x.t VALUES (1)")
    server.purge_binary_logs_to_current()
    _, now = _position(server)
    without_domain_5 = Position("mariadb", re.sub(r",?5-1-1", "", now.gtid))

    check = _check_position(server, without_domain_5)

    assert not check.ok
    assert "(domain 5 seq 1 to 1)" in check.detail
    assert not _server_streams_from(server, without_domain_5)


@pytest.mark.parametrize(
    ("gtid", "server_refuses"),
    [
        pytest.param("0-1-{ahead}", True, id="sequence-ahead-of-server"),
        pytest.param("0-9-{seq}", True, id="server-id-never-seen"),
        # The server streams from it and ignores the domain it never had; the check refuses
        # because the position does not describe this server's history.
        pytest.param("{current},77-1-5", False, id="domain-never-seen"),
    ],
)
def test_position_the_server_never_had_is_unknown(
    mariadb: MariaDB, gtid: str, server_refuses: bool
) -> None:
    _, now = _position(mariadb)
    seq = int(now.gtid.split(",")[0].rsplit("-", 1)[1])
    position = Position("mariadb", gtid.format(ahead=seq + 1000, seq=seq, current=now.gtid))

    check = _check_position(mariadb, position)

    assert not check.ok and check.fatal
    assert check.detail.startswith(f"position gtid {position.gtid} is unknown to this server")
    assert check.fix == (
        "check that source.host names the server the position was taken from; if it does, "
        "run `cdc position reset --to now` and re-snapshot the tables (`cdc snapshot --all`)"
    )
    assert _server_streams_from(mariadb, position) is not server_refuses


def test_position_of_the_other_flavor_is_refused(mariadb: MariaDB) -> None:
    position = Position("mysql", "3e11fa47-71ca-11e1-9e33-c80aa9429562:1-5")

    check = _check_position(mariadb, position)

    assert not check.ok
    assert check.detail == (
        "position gtid 3e11fa47-71ca-11e1-9e33-c80aa9429562:1-5 was taken on a mysql server, "
        "but the source is mariadb"
    )
