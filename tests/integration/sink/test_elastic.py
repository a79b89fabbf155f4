"""The sink against an Elasticsearch-API stand-in that fails on demand, and against osmem."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from harness import run_until_caught_up, write_config
from rig import MariaDB, Osmem

from cdc.config import SinkConfig
from cdc.sink.elastic import ElasticSink, _node
from cdc.testing import EsStandIn


@pytest.fixture
def standin() -> Iterator[EsStandIn]:
    with EsStandIn() as server:
        yield server.start()


def _expected(mariadb: MariaDB, db: str) -> dict[str, dict[str, object]]:
    return {str(i): {"id": i, "v": v} for i, v in mariadb.query("SELECT id, v FROM t", db=db)}


def _config(tmp_path: Path, mariadb: MariaDB, es_url: str, redis_url: str, db: str) -> Path:
    mariadb.sql("CREATE TABLE t (id INT PRIMARY KEY, v INT NOT NULL)", db=db)
    return write_config(
        tmp_path / "c.yaml",
        port=mariadb.port,
        es_url=es_url,
        redis_url=redis_url,
        tables=[{"table": f"{db}.t", "index": "docs"}],
        sink={"bulk": {"max_actions": 10, "flush_interval_ms": 20}, "max_backoff": 0.2},
    )


def _write(mariadb: MariaDB, db: str, n: int) -> None:
    for i in range(1, n + 1):
        mariadb.sql(
            "INSERT INTO t VALUES (%s, %s) ON DUPLICATE KEY UPDATE v = v + 1", (i, i), db=db
        )
    mariadb.sql("DELETE FROM t WHERE id % 7 = 0", db=db)


def test_whole_request_429s_and_503s_are_retried_until_they_succeed(
    mariadb: MariaDB,
    standin: EsStandIn,
    fresh_db: str,
    redis_url: str,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    config = _config(tmp_path, mariadb, standin.url, redis_url, fresh_db)
    run_until_caught_up(config)
    _write(mariadb, fresh_db, 50)
    standin.fail_next(3, 429)
    with caplog.at_level(logging.WARNING, logger="cdc"):
        run_until_caught_up(config)
        standin.fail_next(2, 503)
        _write(mariadb, fresh_db, 60)
        run_until_caught_up(config)
    assert standin.failed_requests == 5
    assert standin.docs("docs") == _expected(mariadb, fresh_db)
    messages = [r.getMessage() for r in caplog.records]
    # One line when the outage starts and one when it ends, not one per retry.
    assert sum("Elasticsearch unavailable" in m for m in messages) == 2, messages
    assert sum("Elasticsearch recovered after" in m for m in messages) == 2, messages


def test_only_the_failed_items_are_sent_again(
    mariadb: MariaDB, standin: EsStandIn, fresh_db: str, redis_url: str, tmp_path: Path
) -> None:
    config = _config(tmp_path, mariadb, standin.url, redis_url, fresh_db)
    run_until_caught_up(config)
    _write(mariadb, fresh_db, 30)
    failures = {"left": 4}

    def fail_id_13_four_times(op: object) -> bool:
        if getattr(op, "doc_id", None) == "13" and failures["left"] > 0:
            failures["left"] -= 1
            return True
        return False

    standin.fail_items(fail_id_13_four_times, status=503)
    run_until_caught_up(config)
    assert failures["left"] == 0
    assert standin.items["failed"] == 4
    # 30 inserts + 4 deletes; only document 13's operation was repeated.
    assert standin.items["created"] + standin.items["deleted"] == 34
    assert standin.docs("docs") == _expected(mariadb, fresh_db)


def test_an_unreachable_cluster_is_waited_for(
    mariadb: MariaDB, standin: EsStandIn, fresh_db: str, redis_url: str, tmp_path: Path
) -> None:
    config = _config(tmp_path, mariadb, standin.url, redis_url, fresh_db)
    run_until_caught_up(config)
    _write(mariadb, fresh_db, 20)
    standin.down()
    timer = threading.Timer(1.5, standin.up)
    timer.start()
    started = time.monotonic()
    run_until_caught_up(config)
    timer.join()
    assert time.monotonic() - started >= 1.5
    assert standin.docs("docs") == _expected(mariadb, fresh_db)


def test_missing_indices_are_created_with_the_configured_settings_and_mappings(
    osmem: Osmem, es_index: str
) -> None:
    from cdc.config import TableMapping

    sink = ElasticSink(SinkConfig(urls=[osmem.url]))
    mapping = TableMapping(
        table="s.t",
        index=es_index,
        index_settings={"number_of_replicas": 0},
        index_mappings={"properties": {"name": {"type": "keyword"}}},
    )
    assert sink.ensure_indices([mapping]) == [es_index]
    assert sink.ensure_indices([mapping]) == []  # existing indices are left alone
    # The index is created as `<name>_v1` behind the alias `<name>`.
    _, aliases = osmem.request("GET", f"/_alias/{es_index}")
    assert aliases == {f"{es_index}_v1": {"aliases": {es_index: {"is_write_index": True}}}}
    _, body = osmem.request("GET", f"/{es_index}/_mapping")
    assert body[f"{es_index}_v1"]["mappings"]["properties"]["name"]["type"] == "keyword"
    _, settings = osmem.request("GET", f"/{es_index}/_settings")
    assert str(settings[f"{es_index}_v1"]["settings"]["index"]["number_of_replicas"]) == "0"
    sink.close()


@pytest.mark.parametrize(
    ("auth", "header"),
    [
        ({"username": "elastic", "password": "s3cret"}, "Basic ZWxhc3RpYzpzM2NyZXQ="),
        ({"api_key": "aWQ6a2V5"}, "ApiKey aWQ6a2V5"),
    ],
)
def test_credentials_become_the_authorization_header(auth: dict[str, str], header: str) -> None:
    cfg = SinkConfig(urls=["https://es.example:9243/prefix"], **auth)
    node = _node(cfg.urls[0], cfg)
    assert node.headers["authorization"] == header
    assert (node.scheme, node.host, node.port, node.path_prefix) == (
        "https",
        "es.example",
        9243,
        "/prefix",
    )
