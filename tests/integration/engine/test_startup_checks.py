"""`cdc run` refuses to stream from a server that lacks a prerequisite or from a position the
server no longer has: one paragraph naming the problem and the fix, exit 1, no traceback."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from harness import CdcProcess, run_until_caught_up, stored_checkpoint, write_config
from rig import MariaDB

from cdc.config import load_config
from cdc.state.backends import open_stores


def _run_once(config: Path) -> tuple[int, str]:
    with CdcProcess(config) as proc:
        code = proc.wait(timeout=60)
    return code, proc.log()


def test_a_server_without_row_binlogs_and_full_metadata_is_refused(
    make_mariadb: Callable[..., MariaDB], es_url: str, redis_url: str, tmp_path: Path
) -> None:
    server = make_mariadb(extra_args=["--binlog-format=STATEMENT", "--binlog-row-metadata=MINIMAL"])
    server.sql("CREATE DATABASE shop")
    config = write_config(
        tmp_path / "c.yaml",
        port=server.port,
        es_url=es_url,
        redis_url=redis_url,
        tables=[{"table": "shop.t", "index": "t"}],
    )
    code, log = _run_once(config)
    assert code == 1, log
    assert "Traceback" not in log
    assert "(2 problems)" in log
    assert "binlog_format is STATEMENT" in log
    assert "SET GLOBAL binlog_format = ROW" in log
    assert "binlog_row_metadata is MINIMAL" in log
    assert "SET GLOBAL binlog_row_metadata = FULL" in log
    assert stored_checkpoint(config) is None  # nothing was recorded


def test_a_purged_checkpoint_is_refused_with_the_fix(
    make_mariadb: Callable[..., MariaDB], es_url: str, redis_url: str, tmp_path: Path
) -> None:
    server = make_mariadb()
    server.sql("CREATE DATABASE shop")
    server.sql("CREATE TABLE shop.t (id INT PRIMARY KEY)")
    config = write_config(
        tmp_path / "c.yaml",
        port=server.port,
        es_url=es_url,
        redis_url=redis_url,
        tables=[{"table": "shop.t", "index": "purged_t"}],
    )
    run_until_caught_up(config)
    before = stored_checkpoint(config)
    for i in range(5):
        server.sql("INSERT INTO shop.t VALUES (%s)", (i,))
    server.purge_binary_logs_to_current()
    code, log = _run_once(config)
    assert code == 1, log
    assert "Traceback" not in log
    assert "was purged" in log
    assert "cdc position reset --to now" in log
    assert "cdc snapshot --all" in log
    assert stored_checkpoint(config) == before  # the position was left for the operator
    # The reason is left where `cdc status` and `cdc health` look.
    with open_stores(load_config(config)) as stores:
        status = stores.heartbeats.read()
    assert status is not None
    assert status.state == "stopped"
    assert status.last_error is not None and "was purged" in status.last_error
