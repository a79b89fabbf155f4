"""Prerequisite and position checks for MySQL, which cannot run here: a fake connection answers
the few statements the checks send with canned rows shaped like MySQL 8's."""

from __future__ import annotations

import logging
from typing import Any

import pymysql
import pytest

from cdc.errors import PositionError, PrerequisiteError, SourceUnavailable
from cdc.model.position import Position, ServerInfo
from cdc.source.positions import check_position
from cdc.source.prereq import Check, check_source, require

U = "3e11fa47-71ca-11e1-9e33-c80aa9429562"
V = "b7a5e3c2-0000-11ee-8000-0242ac120002"
INFO = ServerInfo(flavor="mysql", version="8.0.36", server_id=1, server_uuid=U, gtid_mode=True)
GOOD = {
    "log_bin": "ON",
    "binlog_format": "ROW",
    "binlog_row_image": "FULL",
    "binlog_row_metadata": "FULL",
    "binlog_transaction_compression": "OFF",
    "gtid_mode": "ON",
    "enforce_gtid_consistency": "ON",
    "gtid_executed": f"{U}:1-100",
    "gtid_purged": f"{U}:1-40",
    "binlog_expire_logs_seconds": "2592000",
}
FULL_GRANT = "GRANT SELECT, REPLICATION SLAVE, REPLICATION CLIENT ON *.* TO `cdc`@`%`"
BINLOGS = [("binlog.000003", 1000), ("binlog.000004", 2000)]


class FakeMysql:
    """A connection whose cursor answers from canned rows; unknown SQL fails the test."""

    def __init__(
        self,
        variables: dict[str, str] | None = None,
        grants: dict[str, list[str]] | None = None,
        role: str = "NONE",
        binlogs: list[tuple[str, int]] = BINLOGS,
        error: Exception | None = None,
    ) -> None:
        self.variables = dict(GOOD, **(variables or {}))
        self.answers: dict[str, list[tuple[Any, ...]]] = {
            "SELECT CURRENT_USER()": [("cdc@%",)],
            "SELECT CURRENT_ROLE()": [(role,)],
            "SHOW BINARY LOGS": list(binlogs),
        }
        for sql, lines in (grants or {"SHOW GRANTS FOR CURRENT_USER()": [FULL_GRANT]}).items():
            self.answers[sql] = [(line,) for line in lines]
        self.error = error
        self.rows: list[tuple[Any, ...]] = []

    def cursor(self) -> FakeMysql:
        return self

    def __enter__(self) -> FakeMysql:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def execute(self, sql: str, params: Any = None) -> None:
        if self.error is not None:
            raise self.error
        if sql.startswith("SHOW GLOBAL VARIABLES WHERE Variable_name IN"):
            self.rows = [(n, self.variables[n]) for n in params if n in self.variables]
        else:
            self.rows = self.answers[sql]

    def fetchall(self) -> list[tuple[Any, ...]]:
        return self.rows


def _source(server: FakeMysql, schemas: tuple[str, ...] = ("shop",)) -> dict[str, Check]:
    return {c.name: c for c in check_source(server, INFO, schemas)}  # type: ignore[arg-type]


def _failed(checks: dict[str, Check]) -> list[str]:
    return [name for name, check in checks.items() if not check.ok]


def _position(server: FakeMysql, gtid: str = "", file: str | None = None, offset: int = 4) -> Check:
    position = Position("mysql", gtid, file, offset if file else None)
    return check_position(server, INFO, position)  # type: ignore[arg-type]


def test_well_configured_mysql_passes_every_check() -> None:
    checks = _source(FakeMysql())

    assert list(checks) == [
        "server_version",
        "log_bin",
        "binlog_format",
        "binlog_row_image",
        "binlog_row_metadata",
        "binlog_compression",
        "gtid_mode",
        "tagged_gtids",
        "replication_privileges",
        "select_privilege",
    ]
    assert _failed(checks) == []
    assert checks["replication_privileges"].detail == (
        "'cdc'@'%' has REPLICATION SLAVE and REPLICATION CLIENT on *.*"
    )
    require(list(checks.values()))


@pytest.mark.parametrize(
    ("variables", "failed", "fix"),
    [
        pytest.param(
            {"binlog_transaction_compression": "ON"},
            ["binlog_compression"],
            "SET GLOBAL binlog_transaction_compression = OFF, and "
            "binlog_transaction_compression = OFF in the [mysqld] section of the server config "
            "file so it survives a restart (connections already open keep the old value until "
            "they reconnect); binlogs written while it was ON stay unreadable, so if the stored "
            "position lies in them, run `cdc position reset --to now` and re-snapshot the "
            "tables (`cdc snapshot --all`)",
            id="compression",
        ),
        pytest.param(
            {"binlog_format": "MIXED"},
            ["binlog_format"],
            "SET GLOBAL binlog_format = ROW, and binlog_format = ROW in the [mysqld] section of "
            "the server config file so it survives a restart (connections already open keep "
            "the old value until they reconnect)",
            id="binlog_format",
        ),
        pytest.param(
            {"binlog_row_image": "NOBLOB"},
            ["binlog_row_image"],
            "SET GLOBAL binlog_row_image = FULL, and binlog_row_image = FULL in the [mysqld] "
            "section of the server config file so it survives a restart (connections already "
            "open keep the old value until they reconnect)",
            id="binlog_row_image",
        ),
        pytest.param(
            {"binlog_row_metadata": "MINIMAL"},
            ["binlog_row_metadata"],
            "SET GLOBAL binlog_row_metadata = FULL, and binlog_row_metadata = FULL in the "
            "[mysqld] section of the server config file so it survives a restart",
            id="binlog_row_metadata",
        ),
        pytest.param(
            {"log_bin": "OFF"},
            ["log_bin"],
            "remove skip-log-bin / disable-log-bin from the server config file or command line "
            "(MySQL 8 logs by default) and restart the server; log_bin cannot be set at runtime",
            id="log_bin",
        ),
        pytest.param(
            {"gtid_executed": f"{U}:1-100,{U}:etl:1-5:7"},
            ["tagged_gtids"],
            "stop assigning tagged GTIDs (SET gtid_next = 'AUTOMATIC:<tag>' or "
            "'<uuid>:<tag>:<n>'); the tagged GTIDs already in gtid_executed stay there until the "
            "server's GTID history is reset (RESET BINARY LOGS AND GTIDS), and until then this "
            "server cannot be a source",
            id="tagged_gtids",
        ),
    ],
)
def test_wrong_setting_fails_fatally_with_its_fix(
    variables: dict[str, str], failed: list[str], fix: str
) -> None:
    checks = _source(FakeMysql(variables))

    assert _failed(checks) == failed
    check = checks[failed[0]]
    assert check.fatal
    assert check.fix == fix
    with pytest.raises(PrerequisiteError) as raised:
        require(list(checks.values()))
    assert str(raised.value) == (
        f"The source server does not meet the connector's prerequisites: {check.detail}. "
        f"Fix: {fix}."
    )


def test_tagged_gtids_are_named_in_the_detail() -> None:
    checks = _source(FakeMysql({"gtid_executed": f"{U}:1-100,\n{V}:etl:1-5"}))

    assert checks["tagged_gtids"].detail.startswith(
        f"gtid_executed holds tagged GTIDs ({V}:etl:1-5); MySQL 8.4's uuid:tag:N form cannot be "
        "read by the binlog library"
    )


def test_compression_setting_missing_before_8_0_20_passes() -> None:
    variables = dict(GOOD)
    del variables["binlog_transaction_compression"]
    server = FakeMysql()
    server.variables = variables

    check = _source(server)["binlog_compression"]

    assert check.ok
    assert check.detail == "the server has no binlog_transaction_compression setting"


@pytest.mark.parametrize(("mode", "enforce"), [("OFF", "OFF"), ("ON_PERMISSIVE", "ON")])
def test_mysql_without_gtid_mode_is_only_a_warning(
    mode: str, enforce: str, caplog: pytest.LogCaptureFixture
) -> None:
    checks = _source(FakeMysql({"gtid_mode": mode, "enforce_gtid_consistency": enforce}))

    assert _failed(checks) == ["gtid_mode"]
    check = checks["gtid_mode"]
    assert not check.fatal
    assert check.detail == (
        f"gtid_mode is {mode}, enforce_gtid_consistency is {enforce}: the connector works, but "
        "keeps its position as a binlog file and offset, which does not survive a failover to "
        "another server"
    )
    assert check.fix is not None and check.fix.startswith(
        "SET GLOBAL enforce_gtid_consistency = ON, then SET GLOBAL gtid_mode = OFF_PERMISSIVE, "
        "ON_PERMISSIVE and ON one step at a time"
    )
    with caplog.at_level(logging.WARNING, logger="cdc.source.prereq"):
        require(list(checks.values()))
    assert caplog.messages == [f"gtid_mode: {check.detail} (fix: {check.fix})"]


def test_mysql_5_7_is_refused_for_its_version_and_missing_row_metadata() -> None:
    old = ServerInfo(
        flavor="mysql", version="5.7.44-log", server_id=1, server_uuid=U, gtid_mode=True
    )
    server = FakeMysql()
    del server.variables["binlog_row_metadata"]
    del server.variables["binlog_transaction_compression"]

    checks = {c.name: c for c in check_source(server, old, ["shop"])}  # type: ignore[arg-type]

    assert _failed(checks) == ["server_version", "binlog_row_metadata"]
    assert checks["server_version"].detail.startswith(
        "MySQL 5.7.44-log is too old: the connector needs MySQL 8.0 or later"
    )
    assert checks["server_version"].fix == "upgrade the server to MySQL 8.0 or later"
    assert checks["binlog_row_metadata"].fix == (
        "upgrade the server to MySQL 8.0.1 or later and set binlog_row_metadata = FULL"
    )
    with pytest.raises(PrerequisiteError) as raised:
        require(list(checks.values()))
    assert str(raised.value).startswith(
        "The source server does not meet the connector's prerequisites (2 problems): (1) MySQL "
        "5.7.44-log is too old"
    )


# -- privileges --------------------------------------------------------------------------------


def _grants(*lines: str, sql: str = "SHOW GRANTS FOR CURRENT_USER()") -> dict[str, list[str]]:
    return {sql: list(lines)}


def test_missing_replication_privileges_get_one_grant_statement() -> None:
    checks = _source(FakeMysql(grants=_grants("GRANT SELECT ON *.* TO `cdc`@`%`")))

    check = checks["replication_privileges"]
    assert not check.ok and check.fatal
    assert check.detail == (
        "'cdc'@'%' lacks REPLICATION SLAVE and REPLICATION CLIENT on *.* (the connector needs "
        "REPLICATION SLAVE to read the binlog stream; REPLICATION CLIENT to list binlogs and "
        "read the binlog position)"
    )
    assert check.fix == "GRANT REPLICATION SLAVE, REPLICATION CLIENT ON *.* TO 'cdc'@'%'"


@pytest.mark.parametrize(
    "lines",
    [
        pytest.param(["GRANT ALL PRIVILEGES ON *.* TO `cdc`@`%` WITH GRANT OPTION"], id="all"),
        pytest.param(["GRANT SELECT, SUPER, REPLICATION SLAVE ON *.* TO `cdc`@`%`"], id="super"),
        pytest.param(
            [
                "GRANT USAGE ON *.* TO `cdc`@`%`",
                "GRANT REPLICATION SLAVE ON *.* TO `cdc`@`%`",
                "GRANT REPLICATION CLIENT ON *.* TO `cdc`@`%`",
                "GRANT SELECT ON `shop`.* TO `cdc`@`%`",
            ],
            id="separate-lines",
        ),
    ],
)
def test_equivalent_grants_are_accepted(lines: list[str]) -> None:
    checks = _source(FakeMysql(grants=_grants(*lines)))

    assert _failed(checks) == []


def test_privileges_of_active_roles_are_read_with_using() -> None:
    server = FakeMysql(
        role="`repl`@`%`",
        grants=_grants(
            "GRANT USAGE ON *.* TO `cdc`@`%`",
            "GRANT REPLICATION SLAVE, REPLICATION CLIENT ON *.* TO `cdc`@`%`",
            "GRANT SELECT ON `shop`.* TO `cdc`@`%`",
            "GRANT `repl`@`%` TO `cdc`@`%`",
            sql="SHOW GRANTS FOR CURRENT_USER() USING `repl`@`%`",
        ),
    )

    assert _failed(_source(server)) == []


def test_lookalike_and_schema_level_grants_do_not_count_as_replication() -> None:
    server = FakeMysql(
        grants=_grants(
            "GRANT REPLICATION_SLAVE_ADMIN,BACKUP_ADMIN ON *.* TO `cdc`@`%`",
            "GRANT SELECT, REPLICATION CLIENT ON *.* TO `cdc`@`%`",
        )
    )

    assert _failed(_source(server)) == ["replication_privileges"]


@pytest.mark.parametrize(
    ("grant", "schema", "ok"),
    [
        pytest.param("GRANT SELECT ON `shop`.* TO `cdc`@`%`", "shop", True, id="schema"),
        pytest.param("GRANT ALL PRIVILEGES ON `shop`.* TO `cdc`@`%`", "shop", True, id="all"),
        pytest.param("GRANT SELECT ON `shop`.* TO `cdc`@`%`", "crm", False, id="other-schema"),
        pytest.param("GRANT INSERT ON `shop`.* TO `cdc`@`%`", "shop", False, id="other-priv"),
        pytest.param(r"GRANT SELECT ON `shop\_%`.* TO `cdc`@`%`", "shop_eu", True, id="like"),
        pytest.param(r"GRANT SELECT ON `shop\_%`.* TO `cdc`@`%`", "shopxeu", False, id="escaped"),
        pytest.param("GRANT SELECT ON `a``b`.* TO `cdc`@`%`", "a`b", True, id="backtick"),
        pytest.param(
            "GRANT SELECT (`id`, `name`), INSERT ON `shop`.`orders` TO `cdc`@`%`",
            "shop",
            False,
            id="columns",
        ),
        pytest.param(
            "GRANT EXECUTE, SELECT ON PROCEDURE `shop`.`p` TO `cdc`@`%`",
            "shop",
            False,
            id="routine",
        ),
    ],
)
def test_select_privilege_is_read_from_schema_grants(grant: str, schema: str, ok: bool) -> None:
    replication = "GRANT REPLICATION SLAVE, REPLICATION CLIENT ON *.* TO `cdc`@`%`"
    checks = _source(FakeMysql(grants=_grants(replication, grant)), (schema,))

    check = checks["select_privilege"]
    assert check.ok is ok
    if not ok:
        assert check.fatal
        assert check.fix == f"GRANT SELECT ON `{schema.replace('`', '``')}`.* TO 'cdc'@'%'"


def test_select_on_single_tables_is_a_warning() -> None:
    replication = "GRANT REPLICATION SLAVE, REPLICATION CLIENT ON *.* TO `cdc`@`%`"
    table = "GRANT SELECT ON `shop`.`orders` TO `cdc`@`%`"
    checks = _source(FakeMysql(grants=_grants(replication, table)))

    check = checks["select_privilege"]
    assert not check.ok and not check.fatal
    assert check.detail.startswith("'cdc'@'%' may SELECT only in some tables of shop")
    require(list(checks.values()))


# -- positions with GTIDs ----------------------------------------------------------------------


def test_gtid_position_inside_the_kept_binlogs_passes_with_lag_and_horizon() -> None:
    check = _position(FakeMysql(), f"{U}:1-90")

    assert check.ok
    assert check.detail == (
        f"position gtid {U}:1-90 is still in the binlogs, 10 transactions behind the server; "
        "the server keeps 2 binlogs (2.9 KiB, oldest binlog.000003); binlogs expire after "
        "30 days (binlog_expire_logs_seconds)"
    )


def test_gtid_position_with_unread_purged_transactions_is_purged() -> None:
    check = _position(FakeMysql(), f"{U}:1-30")

    assert not check.ok and check.fatal
    assert check.detail == (
        f"position gtid {U}:1-30 was purged: the server no longer has transactions the "
        f"connector has not read yet ({U}:31-40, 10 in all; oldest binlog binlog.000003); "
        "those changes can never be streamed; binlogs expire after 30 days "
        "(binlog_expire_logs_seconds)"
    )
    assert check.fix == (
        "run `cdc position reset --to now` and re-snapshot the tables (`cdc snapshot --all`); "
        "to keep it from happening again, keep binlogs longer than the connector may ever be "
        "stopped (binlog_expire_logs_seconds)"
    )
    with pytest.raises(PositionError) as raised:
        require([check])
    assert str(raised.value) == (
        f"The stored position cannot be used: {check.detail}. Fix: {check.fix}."
    )


@pytest.mark.parametrize(
    ("gtid", "extra"),
    [
        pytest.param(f"{U}:1-120", f"{U}:101-120", id="ahead"),
        pytest.param(f"{U}:1-90,{V}:1-5", f"{V}:1-5", id="other-server"),
    ],
)
def test_gtid_position_the_server_never_executed_is_unknown(gtid: str, extra: str) -> None:
    check = _position(FakeMysql(), gtid)

    assert not check.ok and check.fatal
    assert check.detail == (
        f"position gtid {gtid} holds transactions this server never executed ({extra}); the "
        "position was taken on another server, or this server's history was reset or has "
        "diverged"
    )


def test_gtid_position_after_failover_to_a_server_that_replicated_it_passes() -> None:
    server = FakeMysql({"gtid_executed": f"{U}:1-100,{V}:1-10", "gtid_purged": f"{U}:1-100"})

    check = _position(server, f"{U}:1-100,{V}:1-3")

    assert check.ok
    assert "7 transactions behind" in check.detail


def test_tagged_gtids_on_the_server_fail_the_position_check() -> None:
    check = _position(FakeMysql({"gtid_executed": f"{U}:1-100,{U}:etl:1-3"}), f"{U}:1-90")

    assert not check.ok
    assert check.detail.startswith(f"MySQL GTID '{U}:etl:1-3' is tagged")


def test_gtid_position_on_a_server_with_gtid_mode_off_is_refused() -> None:
    check = _position(FakeMysql({"gtid_mode": "OFF"}), f"{U}:1-90")

    assert not check.ok and check.fatal
    assert "the server runs with gtid_mode OFF and cannot stream from one" in check.detail


def test_position_of_the_other_flavor_is_refused() -> None:
    check = check_position(FakeMysql(), INFO, Position("mariadb", "0-1-5"))  # type: ignore[arg-type]

    assert not check.ok
    assert (
        check.detail == "position gtid 0-1-5 was taken on a mariadb server, but the source is mysql"
    )


# -- positions without GTIDs -------------------------------------------------------------------

UNPADDED = [("bin.9", 500), ("bin.10", 800)]


@pytest.mark.parametrize(
    ("file", "offset", "verdict"),
    [
        pytest.param("bin.9", 120, "is still there", id="oldest"),
        # As strings "bin.10" < "bin.9": only numbers order binlogs correctly.
        pytest.param("bin.10", 800, "is still there", id="newest-end"),
        pytest.param("bin.8", 4, "was purged: binlog bin.8 is gone", id="purged"),
        pytest.param("bin.11", 4, "is unknown to this server", id="newer"),
        pytest.param("mysql-bin.10", 4, "is not one of this server's binlogs", id="other-base"),
        pytest.param("bin.10", 801, "lies beyond the end of bin.10", id="beyond-end"),
    ],
)
def test_file_position_is_compared_by_binlog_number(file: str, offset: int, verdict: str) -> None:
    server = FakeMysql({"gtid_mode": "OFF"}, binlogs=UNPADDED)

    check = _position(server, file=file, offset=offset)

    assert check.ok is (verdict == "is still there")
    assert verdict in check.detail


def test_position_with_neither_gtid_nor_file_is_refused() -> None:
    check = _position(FakeMysql({"gtid_mode": "OFF"}))

    assert not check.ok
    assert check.detail == "position (empty) names neither a GTID set nor a binlog file and offset"


# -- errors and require ------------------------------------------------------------------------


def test_lost_connection_is_transient_not_a_failed_check() -> None:
    lost = pymysql.err.OperationalError(2013, "Lost connection to server during query")

    with pytest.raises(SourceUnavailable):
        _source(FakeMysql(error=lost))
    with pytest.raises(SourceUnavailable):
        _position(FakeMysql(error=lost), f"{U}:1-90")


def test_denied_query_while_checking_the_position_is_a_failed_check() -> None:
    denied = pymysql.err.OperationalError(
        1227, "Access denied; you need (at least one of) the REPLICATION CLIENT privilege(s)"
    )

    check = _position(FakeMysql(error=denied), f"{U}:1-90")

    assert not check.ok and check.fatal
    assert check.detail.startswith("checking the position: Access denied")


def test_require_lists_every_fatal_failure_in_one_paragraph_and_prefers_settings() -> None:
    checks = [
        Check("binlog_format", False, "binlog_format is MIXED", "SET GLOBAL binlog_format = ROW"),
        Check("gtid_mode", False, "gtid_mode is OFF", "turn it on", fatal=False),
        Check("binlog_row_image", True, "binlog_row_image is FULL", None),
        Check("position", False, "position gtid x was purged", "run `cdc position reset`"),
    ]

    with pytest.raises(PrerequisiteError) as raised:
        require(checks)

    assert str(raised.value) == (
        "The source server does not meet the connector's prerequisites (2 problems): "
        "(1) binlog_format is MIXED. Fix: SET GLOBAL binlog_format = ROW. "
        "(2) position gtid x was purged. Fix: run `cdc position reset`."
    )


def test_schema_pattern_without_global_select_is_a_warning() -> None:
    replication = "GRANT REPLICATION SLAVE, REPLICATION CLIENT ON *.* TO `cdc`@`%`"
    schema = "GRANT SELECT ON `shop_eu`.* TO `cdc`@`%`"
    checks = _source(FakeMysql(grants=_grants(replication, schema)), ("shop_*",))

    check = checks["select_privilege"]
    assert not check.ok and not check.fatal
    assert check.detail.startswith(
        "'cdc'@'%' has no global SELECT to cover every schema matching shop_*"
    )
    assert check.fix == "GRANT SELECT ON *.* TO 'cdc'@'%'"
