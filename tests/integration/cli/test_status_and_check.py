"""`cdc health`, `cdc status` and `cdc check` against the rig: what they say before, during and
after a run, when a link is down, and on a misconfigured server."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest
from harness import CdcProcess, run_until_caught_up, wait_for, write_config
from rig import MariaDB, Osmem, Redis
from typer.testing import CliRunner, Result

from cdc.cli.app import app
from cdc.config import load_config
from cdc.errors import PositionError
from cdc.model.status import Status
from cdc.state.backends import open_stores
from cdc.testing.proxy import FaultProxy

PREREQUISITES = [
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


def cdc(*args: str) -> Result:
    return CliRunner().invoke(app, list(args))


def lines_by_name(output: str) -> dict[str, str]:
    """`cdc check` output as {check name: whole line}."""
    found = {}
    for line in output.splitlines():
        if line[:2] in ("✓ ", "✗ ", "! "):
            name = line[2:].split(":", 1)[0]
            found[name] = line
    return found


@pytest.fixture
def config(
    mariadb: MariaDB, fresh_db: str, es_url: str, es_index: str, redis_url: str, tmp_path: Path
) -> Path:
    mariadb.sql("CREATE TABLE items (id INT PRIMARY KEY, v INT NOT NULL)", db=fresh_db)
    return write_config(
        tmp_path / "c.yaml",
        port=mariadb.port,
        es_url=es_url,
        redis_url=redis_url,
        tables=[{"table": f"{fresh_db}.items", "index": es_index}],
    )


def status_json(config: Path) -> dict[str, object]:
    result = cdc("status", "--config", str(config), "--json")
    assert result.exit_code == 0, result.output
    report: dict[str, object] = orjson.loads(result.stdout)
    return report


# -- health and status ------------------------------------------------------------------------


def test_health_and_status_before_during_and_after_a_run(
    mariadb: MariaDB, fresh_db: str, config: Path
) -> None:
    before_health = cdc("health", "--config", str(config))
    before_status = cdc("status", "--config", str(config))

    assert before_health.exit_code == 1
    assert before_health.stderr.startswith("unhealthy: no heartbeat next to Redis key cdc:test:")
    assert "the connector is not running" in before_health.stderr
    assert before_status.exit_code == 0
    assert "  state        not running (no heartbeat)" in before_status.stdout

    with CdcProcess(config) as proc:
        wait_for(lambda: cdc("health", "-c", str(config)).exit_code == 0, what="healthy")
        for i in range(3):
            mariadb.sql(f"INSERT INTO items VALUES ({i}, {i})", db=fresh_db)
        mariadb.sql("UPDATE items SET v = 7 WHERE id = 1", db=fresh_db)
        table = f"{fresh_db}.items"

        def counted() -> bool:
            heartbeat = status_json(config)["heartbeat"]
            return isinstance(heartbeat, dict) and heartbeat["by_table"] == {table: 4}

        wait_for(counted, what="the heartbeat to count 4 row changes")
        during_health = cdc("health", "-c", str(config))
        during = status_json(config)
        during_text = cdc("status", "-c", str(config)).stdout
        refused = cdc("position", "reset", "-c", str(config), "--to", "now", "--yes")
        proc.terminate()
        assert proc.wait() == 0, proc.log()

    assert during_health.exit_code == 0
    assert during_health.stdout.startswith(f"healthy: running, pid {proc.proc.pid} on ")
    assert during["running"] is True and during["state"] == "running"
    assert isinstance(during["heartbeat"], dict)
    assert during["heartbeat"]["pid"] == proc.proc.pid
    assert during["heartbeat"]["degraded"] == []
    assert during["dead_letters"] == 0
    assert isinstance(during["checkpoint"], dict) and during["checkpoint"]["flavor"] == "mariadb"
    assert f"  state        running (pid {proc.proc.pid} on " in during_text
    assert f"    {table}  4 row changes" in during_text
    assert refused.exit_code == 1
    assert f"connector 'test' is running (pid {proc.proc.pid} on " in refused.stderr

    after_health = cdc("health", "-c", str(config))
    after = status_json(config)
    after_text = cdc("status", "-c", str(config)).stdout
    assert after_health.exit_code == 1
    assert after_health.stderr.startswith("unhealthy: the connector stopped ")
    assert after["running"] is False and after["state"] == "stopped"
    assert after["behind"] == {
        "transactions": 0,
        "bytes": 0,
        "seconds": 0.0,
        "file_purged": False,
    }
    assert "  state        stopped at " in after_text
    assert "  lag          0 transactions, 0 bytes, 0 s" in after_text
    assert "  last error   none" in after_text
    assert f"    {table}  4 row changes" in after_text


def test_health_says_degraded_while_elasticsearch_is_down(
    mariadb: MariaDB, fresh_db: str, osmem: Osmem, es_index: str, redis_url: str, tmp_path: Path
) -> None:
    mariadb.sql("CREATE TABLE items (id INT PRIMARY KEY, v INT NOT NULL)", db=fresh_db)
    with FaultProxy(osmem.host, osmem.port) as proxy:
        config = write_config(
            tmp_path / "c.yaml",
            port=mariadb.port,
            es_url=f"http://127.0.0.1:{proxy.port}",
            redis_url=redis_url,
            tables=[{"table": f"{fresh_db}.items", "index": es_index}],
            sink={"request_timeout": 2},
        )
        with CdcProcess(config) as proc:
            wait_for(lambda: cdc("health", "-c", str(config)).exit_code == 0, what="healthy")
            proxy.reset()
            mariadb.sql("INSERT INTO items VALUES (1, 1)", db=fresh_db)
            wait_for(lambda: "degraded" in cdc("health", "-c", str(config)).stdout, what="degraded")
            degraded = cdc("health", "-c", str(config))
            status = status_json(config)
            proxy.pass_through()
            wait_for(
                lambda: cdc("health", "-c", str(config)).stdout.startswith("healthy: running"),
                what="recovery",
            )
            proc.terminate()
            proc.wait()

    assert degraded.exit_code == 0
    assert degraded.stdout.startswith("healthy: degraded (Elasticsearch unavailable), pid ")
    assert status["state"] == "degraded" and status["running"] is True
    assert isinstance(status["heartbeat"], dict)
    assert status["heartbeat"]["degraded"] == ["Elasticsearch"]


@pytest.mark.parametrize("fault", ["refused", "blackhole"])
def test_health_fails_fast_when_redis_cannot_be_reached(
    fault: str, redis_server: Redis, es_url: str, tmp_path: Path
) -> None:
    with FaultProxy(redis_server.host, redis_server.port) as proxy:
        if fault == "refused":
            proxy.reset()
        else:
            proxy.blackhole()
        config = write_config(
            tmp_path / "c.yaml",
            port=3306,
            es_url=es_url,
            redis_url=f"redis://127.0.0.1:{proxy.port}/0",
            tables=[{"table": "shop.items", "index": "items"}],
        )
        started = time.monotonic()
        result = cdc("health", "--config", str(config))
        took = time.monotonic() - started

    assert result.exit_code == 1
    assert result.stderr.startswith("unhealthy: cannot read the heartbeat: ")
    assert result.stderr.count("\n") == 1
    assert took < 3.0


def test_status_health_and_check_after_the_server_purged_the_checkpoint(
    make_mariadb: Callable[..., MariaDB], osmem: Osmem, es_index: str, tmp_path: Path
) -> None:
    server = make_mariadb()
    server.sql("CREATE DATABASE shop")
    server.sql("CREATE TABLE shop.items (id INT PRIMARY KEY, v INT NOT NULL)")
    config = write_config(
        tmp_path / "c.yaml",
        port=server.port,
        es_url=osmem.url,
        tables=[{"table": "shop.items", "index": es_index}],
    )
    run_until_caught_up(config)
    server.sql("INSERT INTO shop.items VALUES (1, 1)")
    server.purge_binary_logs_to_current()  # the row the connector has not read yet is gone
    with pytest.raises(PositionError):
        run_until_caught_up(config)

    health = cdc("health", "-c", str(config))
    status = cdc("status", "-c", str(config))
    check = cdc("check", "-c", str(config))

    assert health.exit_code == 1
    assert health.stderr.startswith("unhealthy: the connector stopped ")
    assert status.exit_code == 0
    assert "  state        stopped at " in status.stdout
    assert (
        "  lag          1 transaction (the checkpoint's binlog file is no longer on the server)"
        in status.stdout
    )
    position = lines_by_name(check.stdout)["position"]
    assert check.exit_code == 1
    assert position.startswith("✗ position: position gtid ")
    assert " was purged: " in position
    assert "— run `cdc position reset --to now` and re-snapshot the tables" in position


def test_status_and_health_show_the_last_error_of_a_stopped_connector(
    config: Path, redis_url: str
) -> None:
    run_until_caught_up(config)
    stopped_at = time.time() - 90
    with open_stores(load_config(config)) as stores:
        stores.heartbeats.beat(
            Status(
                state="stopped",
                pid=4242,
                host="box-7",
                started_at=stopped_at - 600,
                updated_at=stopped_at,
                last_error="reading the binlog: connection lost",
                degraded=[],
                by_table={"shop.items": 12, "shop.orders": 3},
            ),
            60,
        )

    health = cdc("health", "-c", str(config))
    status = cdc("status", "-c", str(config))

    assert health.exit_code == 1
    assert health.stderr == (
        "unhealthy: the connector stopped 90 s ago; last error: reading the binlog: "
        "connection lost\n"
    )
    assert "  last error   reading the binlog: connection lost" in status.stdout
    assert "  last run     0 transactions" in status.stdout
    assert "    shop.items  12 row changes\n    shop.orders  3 row changes" in status.stdout


def test_status_counts_the_documents_parked_in_the_dead_letter_queue(
    mariadb: MariaDB, fresh_db: str, osmem: Osmem, es_index: str, redis_url: str, tmp_path: Path
) -> None:
    mariadb.sql("CREATE TABLE items (id INT PRIMARY KEY, v VARCHAR(20))", db=fresh_db)
    config = write_config(
        tmp_path / "c.yaml",
        port=mariadb.port,
        es_url=osmem.url,
        redis_url=redis_url,
        tables=[
            {
                "table": f"{fresh_db}.items",
                "index": es_index,
                "index_mappings": {"properties": {"v": {"type": "long"}}},
            }
        ],
    )
    with CdcProcess(config, "--until-caught-up") as first:
        assert first.wait() == 0, first.log()
    mariadb.sql(
        "INSERT INTO items VALUES (1, '5'), (2, 'not a number'), (3, 'nor this')", db=fresh_db
    )
    with CdcProcess(config, "--until-caught-up") as second:
        assert second.wait() == 0, second.log()

    report = status_json(config)
    text = cdc("status", "-c", str(config)).stdout

    assert report["dead_letters"] == 2
    assert "  dead letters 2" in text


# -- check ------------------------------------------------------------------------------------


def test_check_passes_on_a_correct_setup_with_one_line_per_check(
    mariadb: MariaDB, config: Path, es_index: str
) -> None:
    result = cdc("check", "--config", str(config))

    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    names = list(lines_by_name(result.stdout))
    assert names == [
        "config",
        "checkpoint_store",
        "source",
        *PREREQUISITES,
        "mappings",
        "position",
        "sink",
        f"index {es_index}",
    ]
    assert all(line.startswith("✓ ") for line in lines[:-1])
    assert lines[-1] == f"{len(names)} passed"
    by_name = lines_by_name(result.stdout)
    assert by_name["checkpoint_store"] == (
        "✓ checkpoint_store: Redis key cdc:test:checkpoint is reachable and writable"
    )
    assert by_name["source"].startswith(f"✓ source: connected to 127.0.0.1:{mariadb.port} as cdc")
    assert by_name["mappings"] == (
        "✓ mappings: 1 table mapping covers 1 table; every column and option it names fits"
    )
    assert by_name["position"].startswith("✓ position: no stored checkpoint")
    assert by_name["sink"].startswith("✓ sink: http://127.0.0.1:")
    assert by_name[f"index {es_index}"] == (
        f"✓ index {es_index}: does not exist yet; the connector creates it with the field "
        "types of its columns"
    )
    again = cdc("check", "--config", str(config))
    assert again.stdout == result.stdout  # deterministic: nothing was written or created


def test_check_lists_each_failing_prerequisite_with_its_fix(
    make_mariadb: Callable[..., MariaDB], osmem: Osmem, es_index: str, tmp_path: Path
) -> None:
    server = make_mariadb(extra_args=["--binlog-format=STATEMENT", "--binlog-row-metadata=MINIMAL"])
    server.sql("CREATE DATABASE shop")
    server.sql("CREATE TABLE shop.items (id INT PRIMARY KEY, v INT NOT NULL)")
    server.sql("CREATE USER 'weak'@'%' IDENTIFIED BY 'weak'")
    server.sql("GRANT SELECT ON shop.* TO 'weak'@'%'")
    config = write_config(
        tmp_path / "c.yaml",
        port=server.port,
        es_url=osmem.url,
        tables=[{"table": "shop.items", "index": es_index}],
        source={"user": "weak", "password": "weak"},
    )

    result = cdc("check", "--config", str(config))

    assert result.exit_code == 1
    lines = lines_by_name(result.stdout)
    assert lines["binlog_format"] == (
        "✗ binlog_format: binlog_format is STATEMENT; the connector needs ROW because only "
        "row events say which rows changed — SET GLOBAL binlog_format = ROW, and binlog_format "
        "= ROW in the [mysqld] section of the server config file so it survives a restart "
        "(connections already open keep the old value until they reconnect)"
    )
    assert lines["binlog_row_metadata"].startswith(
        "✗ binlog_row_metadata: binlog_row_metadata is MINIMAL; the connector needs FULL "
    )
    assert lines["binlog_row_metadata"].endswith(
        "— SET GLOBAL binlog_row_metadata = FULL, and binlog_row_metadata = FULL in the "
        "[mysqld] section of the server config file so it survives a restart"
    )
    assert lines["replication_privileges"].startswith(
        "✗ replication_privileges: 'weak'@'%' lacks REPLICATION SLAVE and BINLOG MONITOR on *.*"
    )
    assert lines["replication_privileges"].endswith(
        "— GRANT REPLICATION SLAVE, BINLOG MONITOR ON *.* TO 'weak'@'%'"
    )
    failing = {name for name, line in lines.items() if not line.startswith("✓ ")}
    assert failing == {"binlog_format", "binlog_row_metadata", "replication_privileges"}
    assert result.stdout.splitlines()[-1] == f"{len(lines) - 3} passed, 3 failed"


def test_check_reports_unreachable_sink_and_checkpoint_store_with_fixes(
    mariadb: MariaDB, tmp_path: Path
) -> None:
    with FaultProxy("127.0.0.1", 9) as redis_hole, FaultProxy("127.0.0.1", 9) as es_hole:
        redis_hole.reset()
        es_hole.reset()
        es_url = f"http://127.0.0.1:{es_hole.port}"
        config = write_config(
            tmp_path / "c.yaml",
            port=mariadb.port,
            es_url=es_url,
            redis_url=f"redis://127.0.0.1:{redis_hole.port}/0",
            tables=[{"table": "shop.items", "index": "items"}],
        )
        result = cdc("check", "--config", str(config))

    assert result.exit_code == 1
    lines = lines_by_name(result.stdout)
    assert lines["checkpoint_store"].startswith("✗ checkpoint_store: reading the checkpoint")
    assert lines["checkpoint_store"].endswith("— check checkpoint.redis.url and that Redis is up")
    assert lines["sink"].startswith("✗ sink: Elasticsearch unreachable")
    assert lines["sink"].endswith(f"— check sink.urls ({es_url}) and that the cluster is up")
    assert "position" not in lines  # cannot be judged without the store
    assert lines["binlog_format"].startswith("✓ ")


def test_check_flags_an_existing_index_whose_field_types_differ_as_a_warning(
    osmem: Osmem, mariadb: MariaDB, fresh_db: str, es_index: str, redis_url: str, tmp_path: Path
) -> None:
    osmem.request(
        "PUT",
        f"/{es_index}",
        {"mappings": {"properties": {"v": {"type": "keyword"}, "id": {"type": "long"}}}},
    )
    # The mapped table exists: `cdc check` fails a mapping that matches no table.
    mariadb.sql("CREATE TABLE items (id INT PRIMARY KEY, v INT NOT NULL)", db=fresh_db)
    config = write_config(
        tmp_path / "c.yaml",
        port=mariadb.port,
        es_url=osmem.url,
        redis_url=redis_url,
        tables=[
            {
                "table": f"{fresh_db}.items",
                "index": es_index,
                "index_mappings": {
                    "properties": {
                        "id": {"type": "long"},
                        "v": {"type": "long"},
                        "meta": {"properties": {"tag": {"type": "keyword"}}},
                    }
                },
            }
        ],
    )

    result = cdc("check", "--config", str(config))

    assert result.exit_code == 0, result.output
    assert lines_by_name(result.stdout)[f"index {es_index}"] == (
        f"! index {es_index}: exists, but its field types differ from its columns and "
        "index_mappings: meta is not mapped (configured object); meta.tag is not mapped "
        "(configured keyword); v is keyword (configured long) — reindex into an index "
        "created with the configured mappings, or change index_mappings to match (the "
        "connector never changes an "
        "existing index)"
    )
    assert result.stdout.splitlines()[-1].endswith(" passed, 1 warning")


def test_check_reports_an_unwritable_checkpoint_directory(
    mariadb: MariaDB, es_url: str, tmp_path: Path
) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    config = write_config(
        tmp_path / "c.yaml",
        port=mariadb.port,
        es_url=es_url,
        tables=[{"table": "shop.items", "index": "items"}],
        checkpoint={"file": {"path": str(blocker / "sub")}},
    )

    result = cdc("check", "--config", str(config))

    assert result.exit_code == 1
    line = lines_by_name(result.stdout)["checkpoint_store"]
    assert line.startswith(f"✗ checkpoint_store: cannot read {blocker}/sub/test.json: ")
    assert line.endswith("— check checkpoint.file.path")


def test_check_rejects_an_invalid_config_with_exit_2(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("name: x\nsource: {port: 99999}\n")

    result = cdc("check", "--config", str(config))

    assert result.exit_code == 2
    lines = result.stdout.splitlines()
    assert len(lines) == 1 and lines[0].startswith("✗ config: ")
    assert "source.port" in lines[0] and lines[0].endswith("— fix the config file")


def test_health_of_a_standby_is_healthy_whatever_the_active_does(
    redis_url: str, tmp_path: Path
) -> None:
    """`cdc health` beside a waiting standby (a container's probe) answers for the standby;
    beside the active, or with no standby of this host, it answers from the heartbeat."""
    config = write_config(
        tmp_path / "c.yaml",
        port=3306,
        es_url="http://127.0.0.1:9200",
        redis_url=redis_url,
        tables=[{"table": "shop.items", "index": "items"}],
        ha={"enabled": True, "lease_ttl": 10},
    )
    here = socket.gethostname()
    with open_stores(load_config(config)) as stores:
        assert stores.lease is not None
        lease = stores.lease
        lease.standby("elsewhere:1:aa", 30)
        assert lease.acquire("elsewhere:2:bb", 30)
        no_standby_here = cdc("health", "-c", str(config))
        lease.standby(f"{here}:3:cc", 30)
        standby_here = cdc("health", "-c", str(config))
        lease.release("elsewhere:2:bb")
        lease_free = cdc("health", "-c", str(config))
        assert lease.acquire(f"{here}:4:dd", 30)
        active_here = cdc("health", "-c", str(config))

    assert no_standby_here.exit_code == 1
    assert "no heartbeat" in no_standby_here.stderr
    assert standby_here.exit_code == 0, standby_here.stderr
    assert standby_here.stdout == (
        "healthy: standby, waiting for the lease (elsewhere:2:bb holds it)\n"
    )
    assert lease_free.exit_code == 0
    assert "the lease, which is free" in lease_free.stdout
    assert active_here.exit_code == 1
    assert "no heartbeat" in active_here.stderr
