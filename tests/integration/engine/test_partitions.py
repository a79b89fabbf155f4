"""Network partitions: each link (MySQL, Elasticsearch, Redis) reset or blackholed twice, 5 s
apart, under a steady write load, through a TCP proxy the test controls. The connector must
ride through without exiting, be back within 5 s of each heal (the first acknowledgement after
it: documents for MySQL and Elasticsearch, a checkpoint for Redis), log one line when the link
goes down and one when it recovers, and end with the index equal to MySQL."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import redis
from harness import (
    CdcProcess,
    RandomWriter,
    run_until_caught_up,
    wait_for,
    write_config,
    writer_rows,
    writer_table_ddl,
)
from rig import MariaDB, Redis

from cdc.testing import EsStandIn, FaultProxy

OUTAGE_SECONDS = 12.0
GAP_SECONDS = 5.0
"""Between the two cuts: a window the connector must use, not sleep through."""
BACK_WITHIN = 5.0
"""Heal to the first acknowledgement, at most."""
LOG_NAME = {"mysql": "MySQL binlog stream", "es": "Elasticsearch", "redis": "checkpoint store"}


@pytest.fixture
def standin() -> Iterator[EsStandIn]:
    with EsStandIn() as server:
        yield server.start()


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["reset", "blackhole"])
@pytest.mark.parametrize("link", ["mysql", "es", "redis"])
def test_two_outages_of_one_link_are_ridden_out_and_cost_little_more_than_their_length(
    link: str,
    mode: str,
    mariadb: MariaDB,
    redis_server: Redis,
    standin: EsStandIn,
    fresh_db: str,
    redis_url: str,
    tmp_path: Path,
) -> None:
    mariadb.sql(writer_table_ddl(), db=fresh_db)
    redis_parts = urlsplit(redis_url)
    proxies = {
        "mysql": FaultProxy("127.0.0.1", mariadb.port),
        "es": FaultProxy("127.0.0.1", standin.port),
        "redis": FaultProxy("127.0.0.1", redis_parts.port or 6379),
    }
    for proxy in proxies.values():
        proxy.start()
    try:
        config = write_config(
            tmp_path / "c.yaml",
            port=proxies["mysql"].port,
            es_url=f"http://127.0.0.1:{proxies['es'].port}",
            redis_url=f"redis://127.0.0.1:{proxies['redis'].port}{redis_parts.path}",
            tables=[{"table": f"{fresh_db}.items", "index": "items"}],
            sink={"request_timeout": 5},
        )
        run_until_caught_up(config)
        writer = RandomWriter(mariadb, fresh_db, seed=hash((link, mode)) % 1000, pause=0.02)
        writer.start()
        client = redis.Redis.from_url(redis_url)  # straight to Redis, not through the proxy
        checkpoint_key = "cdc:test:checkpoint"

        def acknowledged() -> object:
            """What moves when the link that was cut works again."""
            if link == "redis":
                return client.get(checkpoint_key)
            return sum(standin.items.values())

        with CdcProcess(config) as proc:
            wait_for(lambda: len(standin.docs("items")) > 20, what="streaming to start")
            before = writer.transactions
            back_after = []
            for cut in range(2):
                getattr(proxies[link], mode)()
                time.sleep(OUTAGE_SECONDS)
                marker = acknowledged()
                proxies[link].pass_through()
                healed = time.monotonic()
                wait_for(
                    lambda m=marker: acknowledged() != m,  # type: ignore[misc]
                    timeout=30,
                    what=f"the first acknowledgement after heal {cut + 1}",
                )
                back_after.append(time.monotonic() - healed)
                time.sleep(max(0.0, GAP_SECONDS - back_after[-1]))
            during = writer.transactions - before
            time.sleep(3)
            writer.finish()
            wait_for(
                lambda: standin.docs("items") == writer_rows(mariadb, fresh_db),
                timeout=90,
                what="the index to equal MySQL after the outage",
            )
            wait_for(
                lambda: f"{LOG_NAME[link]} recovered after" in proc.log(),
                timeout=30,
                what="the recovery to be logged",
            )
            assert proc.proc.poll() is None, "the connector exited during the outage"
            proc.terminate()
            assert proc.wait(timeout=10) == 0, proc.log()
        log = proc.log()
    finally:
        for proxy in proxies.values():
            proxy.close()
    name = LOG_NAME[link]
    print(
        f"\n{link} {mode}: {during} transactions written during two {OUTAGE_SECONDS:.0f} s "
        f"outages; back {back_after[0]:.1f} s and {back_after[1]:.1f} s after the heals"
    )
    assert during > 100
    assert all(seconds <= BACK_WITHIN for seconds in back_after), back_after
    assert log.count(f"{name} unavailable") == 2, log
    assert log.count(f"{name} recovered after") == 2, log
    for other in set(LOG_NAME.values()) - {name}:
        assert f"{other} unavailable" not in log, log
