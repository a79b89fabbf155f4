"""Chaos: random writes on several tables while the connector is killed with SIGKILL and every
link is cut, again and again. Afterwards every document equals its row, no row is missing and
no deleted row has come back."""

from __future__ import annotations

import random
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from harness import (
    CdcProcess,
    RandomWriter,
    run_until_caught_up,
    wait_for,
    write_config,
    writer_rows,
    writer_table_ddl,
)
from rig import MariaDB

from cdc.testing import EsStandIn, FaultProxy

TABLES = ("items_a", "items_b", "items_c")
STATEMENTS = 20_000
KILLS = 10
CUTS_PER_LINK = 5


@pytest.mark.slow
def test_kills_and_cut_links_during_random_writes_lose_nothing(
    mariadb: MariaDB, fresh_db: str, redis_url: str, tmp_path: Path
) -> None:
    for table in TABLES:
        mariadb.sql(writer_table_ddl(table), db=fresh_db)
    rng = random.Random(2026)
    redis_parts = urlsplit(redis_url)
    with EsStandIn() as standin:
        standin.start()
        proxies = {
            "mysql": FaultProxy("127.0.0.1", mariadb.port).start(),
            "es": FaultProxy("127.0.0.1", standin.port).start(),
            "redis": FaultProxy("127.0.0.1", redis_parts.port or 6379).start(),
        }
        try:
            config = write_config(
                tmp_path / "c.yaml",
                port=proxies["mysql"].port,
                es_url=f"http://127.0.0.1:{proxies['es'].port}",
                redis_url=f"redis://127.0.0.1:{proxies['redis'].port}{redis_parts.path}",
                tables=[{"table": f"{fresh_db}.{t}", "index": t} for t in TABLES],
                sink={"request_timeout": 3, "max_backoff": 1, "bulk": {"max_actions": 200}},
            )
            run_until_caught_up(config)
            writer = RandomWriter(
                mariadb, fresh_db, seed=11, tables=TABLES, pause=0.004, limit=STATEMENTS
            )
            writer.start()
            kills = 0
            cuts = dict.fromkeys(proxies, 0)
            proc = CdcProcess(config)
            try:
                while writer.is_alive() or kills < KILLS or min(cuts.values()) < CUTS_PER_LINK:
                    time.sleep(rng.uniform(0.3, 1.2))
                    if rng.random() < 0.4:
                        proc.kill()
                        proc.wait()
                        kills += 1
                        proc = CdcProcess(config)
                    else:
                        link = rng.choice(sorted(proxies))
                        getattr(proxies[link], rng.choice(["reset", "reset", "blackhole"]))()
                        time.sleep(rng.uniform(0.2, 2.0))
                        proxies[link].pass_through()
                        cuts[link] += 1
                writer.finish()
                for table in TABLES:
                    wait_for(
                        lambda t=table: standin.docs(t) == writer_rows(mariadb, fresh_db, t),  # type: ignore[misc]
                        timeout=180,
                        what=f"{table} in the index to equal MySQL",
                    )
                assert proc.proc.poll() is None, proc.log()
                proc.terminate()
                assert proc.wait(timeout=10) == 0, proc.log()
            finally:
                if proc.proc.poll() is None:
                    proc.kill()
                    proc.wait()
            # A final catch-up from the stored checkpoint finds nothing left to do.
            docs = {t: standin.docs(t) for t in TABLES}
            assert run_until_caught_up(config).actions == 0
            assert {t: standin.docs(t) for t in TABLES} == docs
            stale = standin.items.get("conflict", 0)
        finally:
            for proxy in proxies.values():
                proxy.close()
    rows = sum(len(writer_rows(mariadb, fresh_db, t)) for t in TABLES)
    print(
        f"\nchaos: {writer.statements} statements in {writer.transactions} transactions, "
        f"{kills} kill -9, cuts {cuts}, {rows} rows = documents, "
        f"{stale} replayed writes refused as stale"
    )
    assert writer.statements >= STATEMENTS
    assert kills >= KILLS
    assert min(cuts.values()) >= CUTS_PER_LINK
