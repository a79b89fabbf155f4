"""Active/standby through the lease: real `cdc run` processes with one name and one Redis. A
standby takes over after the active is killed or frozen; a frozen active that wakes up steps
down by itself and never moves the checkpoint back; the index ends equal to MySQL."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import orjson
import pytest
import redis
from harness import (
    CdcProcess,
    RandomWriter,
    run_until_caught_up,
    wait_for,
    wait_until_equal,
    write_config,
    writer_rows,
    writer_table_ddl,
)
from rig import MariaDB

from cdc.config import ConfigError, load_config
from cdc.testing import EsStandIn

TTL = 3.0
TAKE_OVER_WITHIN = TTL + 5.0


class CheckpointWatch(threading.Thread):
    """Reads the stored checkpoint's counter all along: it must never go down."""

    def __init__(self, client: redis.Redis, key: str) -> None:
        super().__init__(daemon=True)
        self.client, self.key = client, key
        self.counters: list[int] = []
        self.stop_event = threading.Event()

    def run(self) -> None:
        while not self.stop_event.wait(0.05):
            raw = self.client.get(self.key)
            if raw is not None:
                self.counters.append(int(orjson.loads(raw)["counter"]))


def _active(processes: list[CdcProcess]) -> CdcProcess:
    """The one process whose last lease line says it is active."""
    found = []
    for proc in processes:
        log = proc.log()
        took, stepped = log.rfind("took the lease"), log.rfind("stepped down")
        if proc.proc.poll() is None and took > stepped:
            found.append(proc)
    assert len(found) == 1, [p.log()[-500:] for p in processes]
    return found[0]


def test_a_standby_takes_over_from_a_killed_and_from_a_frozen_active(
    mariadb: MariaDB, fresh_db: str, redis_url: str, tmp_path: Path
) -> None:
    mariadb.sql(writer_table_ddl(), db=fresh_db)
    with EsStandIn() as standin:
        standin.start()
        config = write_config(
            tmp_path / "c.yaml",
            port=mariadb.port,
            es_url=standin.url,
            redis_url=redis_url,
            tables=[{"table": f"{fresh_db}.items", "index": "items"}],
            ha={"enabled": True, "lease_ttl": TTL},
        )
        run_until_caught_up(config)  # a checkpoint before the writer starts: nothing is missed
        client = redis.Redis.from_url(redis_url)
        watch = CheckpointWatch(client, "cdc:test:checkpoint")
        watch.start()
        writer = RandomWriter(mariadb, fresh_db, seed=3, pause=0.01)
        writer.start()
        first, second = CdcProcess(config), CdcProcess(config)
        processes = [first, second]
        try:
            wait_for(lambda: any("took the lease" in p.log() for p in processes), 30, "an active")
            wait_for(
                lambda: any("standby:" in p.log() for p in processes), 30, "a standby to say so"
            )
            active = _active(processes)
            standby = second if active is first else first
            status = subprocess.run(
                [sys.executable, "-m", "cdc", "status", "--config", str(config)],
                capture_output=True,
                text=True,
                timeout=60,
            ).stdout
            assert "active" in status and "standby" in status, status
            wait_for(lambda: len(standin.docs("items")) > 20, 30, "streaming")

            # 1. The active dies: the standby takes over within the TTL and a few seconds.
            active.kill()
            killed = time.monotonic()
            wait_for(lambda: "took the lease" in standby.log(), TAKE_OVER_WITHIN, "take-over")
            took_over_kill = time.monotonic() - killed

            # 2. A third process waits; the active freezes past the TTL and then wakes up.
            third = CdcProcess(config)
            processes.append(third)
            wait_for(lambda: "standby:" in third.log(), 30, "the new standby")
            frozen = _active(processes)
            frozen.proc.send_signal(signal.SIGSTOP)
            stopped = time.monotonic()
            others = [p for p in processes if p is not frozen and p.proc.poll() is None]
            wait_for(
                lambda: any("took the lease" in p.log() for p in others),
                TAKE_OVER_WITHIN,
                "take-over from the frozen active",
            )
            took_over_freeze = time.monotonic() - stopped
            time.sleep(1.0)
            frozen.proc.send_signal(signal.SIGCONT)
            wait_for(
                lambda: (
                    "stepped down to standby" in frozen.log() or "lost the lease" in frozen.log()
                ),
                TTL * 3,
                "the woken active to step down",
            )
            time.sleep(TTL)
            writer.finish()

            def logs_and_status() -> str:
                now = subprocess.run(
                    [sys.executable, "-m", "cdc", "status", "--config", str(config)],
                    capture_output=True,
                    text=True,
                    timeout=60,
                ).stdout
                return now + "\n" + "\n\n".join(p.log()[-3000:] for p in processes)

            wait_until_equal(
                lambda: standin.docs("items"),
                lambda: writer_rows(mariadb, fresh_db),
                60,
                logs_and_status,
            )
            assert _active(processes) is not frozen
        finally:
            watch.stop_event.set()
            for proc in processes:
                if proc.proc.poll() is None:
                    proc.proc.send_signal(signal.SIGCONT)
                    proc.terminate()
            for proc in processes:
                if proc is not active:
                    assert proc.wait(timeout=20) == 0, proc.log()[-3000:]
                else:
                    proc.wait(timeout=20)
    print(
        f"\ntake-over: {took_over_kill:.1f} s after kill -9, {took_over_freeze:.1f} s after SIGSTOP"
    )
    assert took_over_kill <= TAKE_OVER_WITHIN
    assert took_over_freeze <= TAKE_OVER_WITHIN
    assert watch.counters, "no checkpoint was read"
    assert watch.counters == sorted(watch.counters), "the checkpoint moved back"


def test_the_file_store_refuses_ha(tmp_path: Path) -> None:
    config = write_config(
        tmp_path / "c.yaml",
        port=3306,
        es_url="http://127.0.0.1:9200",
        tables=[{"table": "a.b", "index": "i"}],
        ha={"enabled": True},
    )

    with pytest.raises(ConfigError, match=r"ha\.enabled needs checkpoint\.redis"):
        load_config(config)
