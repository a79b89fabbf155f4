"""Redis Sentinel: the stores reach the master the Sentinels name, `cdc check` says which one it
is, and a running connector follows a failover (forced with SENTINEL FAILOVER, or after the
master was killed) without exiting, without losing a row, and with its checkpoint on the new
master. Real `redis-server` and `redis-sentinel` processes; Sentinels that act within seconds
(`rig.Sentinel`)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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
from rig import BinaryMissing, MariaDB, Osmem, Redis, Sentinel, free_port
from typer.testing import CliRunner

from cdc.cli.app import app
from cdc.config import load_config
from cdc.errors import CdcError, CheckpointUnavailable
from cdc.model.checkpoint import Checkpoint
from cdc.model.lag import reached
from cdc.model.letters import DeadLetter
from cdc.model.position import Position
from cdc.model.progress import Progress
from cdc.model.status import Status
from cdc.state.backends import open_stores
from cdc.state.redis import open_redis
from cdc.state.stores import Stores

CP = Checkpoint(Position("mariadb", "0-1-9", "mysql-bin.000001", 99), 5, "server_id=1", 1700, 1.5)


@dataclass
class Watched:
    """A master with one replica, watched by Sentinels that know both (and each other)."""

    master: Redis
    replica: Redis
    sentinels: list[Sentinel]

    @property
    def addresses(self) -> list[str]:
        return [s.address for s in self.sentinels]

    def all_name(self, server: Redis) -> bool:
        """True when every Sentinel gives `server` as the master."""
        return all(s.master_address() == (server.host, server.port) for s in self.sentinels)

    def ready(self) -> bool:
        """Every Sentinel knows the replica as up and in sync, and knows every other one, so
        that a failover has a replica to promote and Sentinels that agree."""
        for sentinel in self.sentinels:
            with sentinel.client() as client:
                state = client.sentinel_master(Sentinel.master_name)
            if int(state["num-other-sentinels"]) != len(self.sentinels) - 1:
                return False
            replicas = sentinel.replicas()
            if not any(
                int(r["port"]) == self.replica.port
                and not r["is_sdown"]
                and r.get("master-link-status") == "ok"
                for r in replicas
            ):
                return False
        return True


def _sentinel(master_port: int, **kwargs: Any) -> Sentinel:
    # As conftest's factories do: a missing program skips, except under CI.
    try:
        return Sentinel(master_port, **kwargs)
    except BinaryMissing as exc:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{exc} (CI=true: integration tests must not be skipped)", pytrace=False)
        pytest.skip(str(exc))


@pytest.fixture
def make_watched(make_redis: Callable[..., Redis]) -> Iterator[Callable[..., Watched]]:
    """Factory of a master, its replica and `count` Sentinels, ready for a failover. With
    `master_password`, both Redis servers ask for it; with `sentinel_password`, the Sentinels
    ask for theirs."""
    sentinels: list[Sentinel] = []

    def make(
        count: int = 1, master_password: str | None = None, sentinel_password: str | None = None
    ) -> Watched:
        master = make_redis()
        replica = make_redis(extra_args=["--replicaof", master.host, str(master.port)])
        if master_password is not None:
            for server in (replica, master):
                with server.client() as client:
                    client.config_set("masterauth", master_password)
                    client.config_set("requirepass", master_password)
        for _ in range(count):
            sentinel = _sentinel(master.port, password=sentinel_password, auth_pass=master_password)
            sentinels.append(sentinel)
            sentinel.start()
        watched = Watched(master, replica, sentinels[-count:])
        wait_for(watched.ready, timeout=40, what="the Sentinels to know the replica and each other")
        return watched

    yield make
    for sentinel in sentinels:
        sentinel.close()


def _through(watched: Watched, url: str | None = None, **kwargs: Any) -> Stores:
    return open_redis(url, "cdc", "orders", 2, sentinels=watched.addresses, master="cdc", **kwargs)


def _written_at(server: Redis) -> float:
    """When the checkpoint `server` holds itself was written; 0 if it holds none."""
    with server.client() as client:
        raw = client.get("cdc:test:checkpoint")
    return Checkpoint.from_json(raw).written_at if raw is not None else 0.0


# -- the stores through Sentinel ------------------------------------------------------------


def test_the_stores_work_through_sentinel_in_the_masters_database(
    make_watched: Callable[..., Watched],
) -> None:
    watched = make_watched(master_password="mpw", sentinel_password="spw")
    writer = _through(watched, "redis://:mpw@/3", sentinel_password="spw")
    reader = _through(watched, "redis://:mpw@/3", sentinel_password="spw")
    status = Status(name="orders", state="running", pid=1, host="h", started_at=1, updated_at=2)
    letter = DeadLetter("index", "items", "7", "shop.items", {"id": "7"}, "mapper_parsing", 400, 3)
    try:
        assert reader.checkpoints.load() is None
        writer.checkpoints.save(CP)
        writer.heartbeats.beat(status, ttl=30)
        writer.snapshots.save(Progress("shop.items", "running", rows_done=10))
        (letter_id,) = writer.letters.park([letter])

        assert reader.checkpoints.load() == CP
        assert reader.heartbeats.read() == status
        assert reader.snapshots.load_all()["shop.items"].rows_done == 10
        assert reader.letters.list() == [(letter_id, letter)]
        described = reader.checkpoints.describe()
        reader.checkpoints.delete()
        assert writer.checkpoints.load() is None
    finally:
        writer.close()
        reader.close()

    # The keys are in database 3 of the master itself, not of a Sentinel.
    with redis.Redis(watched.master.host, watched.master.port, 3, "mpw") as direct:
        assert direct.exists("cdc:orders:heartbeat", "cdc:orders:snapshots", "cdc:orders:dlq") == 3
    assert described == (
        f"Redis key cdc:orders:checkpoint (master cdc at 127.0.0.1:{watched.master.port}, "
        f"from Sentinels {watched.sentinels[0].address})"
    )
    assert "pw" not in described


def test_any_sentinel_that_answers_names_the_master(make_watched: Callable[..., Watched]) -> None:
    watched = make_watched()
    dead = f"127.0.0.1:{free_port()}"
    later = Checkpoint(Position("mariadb", "0-1-10", "mysql-bin.000001", 150), 6)

    with open_redis(
        None, "cdc", "orders", 2, sentinels=[dead, *watched.addresses], master="cdc"
    ) as stores:
        stores.checkpoints.save(CP)
        assert stores.checkpoints.load() == CP
        # With every Sentinel gone there can be no failover: the known master is written to.
        watched.sentinels[0].kill()
        stores.checkpoints.save(later)
        assert stores.checkpoints.load() == later


def test_what_goes_wrong_through_sentinel_says_what_to_fix(
    make_watched: Callable[..., Watched],
) -> None:
    watched = make_watched(master_password="mpw", sentinel_password="spw")
    nobody = f"127.0.0.1:{free_port()}"
    where = f"(master cdc, from Sentinels {watched.sentinels[0].address})"

    def failure(stores: Stores) -> CdcError:
        with stores, pytest.raises(CdcError) as caught:
            stores.checkpoints.save(CP)
        return caught.value

    no_sentinel_password = failure(_through(watched, "redis://:mpw@/0"))
    wrong_master_password = failure(_through(watched, "redis://:bad@/0", sentinel_password="spw"))
    unknown_master = failure(
        open_redis(
            "redis://:mpw@/0",
            "cdc",
            "orders",
            2,
            sentinels=watched.addresses,
            master="other",
            sentinel_password="spw",
        )
    )
    no_sentinel = failure(open_redis(None, "cdc", "orders", 2, sentinels=[nobody], master="cdc"))

    assert not no_sentinel_password.transient
    assert no_sentinel_password.message == (
        f"writing the checkpoint to Redis (cdc:orders:checkpoint) {where}: a Sentinel refused "
        "the connector's password"
    )
    assert no_sentinel_password.hint == (
        "check checkpoint.redis.sentinel_password (the Sentinels' requirepass)"
    )
    assert not wrong_master_password.transient
    assert wrong_master_password.hint == (
        "check the user and password in checkpoint.redis.url (the master's)"
    )
    assert isinstance(unknown_master, CheckpointUnavailable)
    assert unknown_master.message.endswith(
        "no master found: the Sentinels know no master of that name that is up"
    )
    assert isinstance(no_sentinel, CheckpointUnavailable)
    assert no_sentinel.message == (
        f"writing the checkpoint to Redis (cdc:orders:checkpoint) (master cdc, from Sentinels "
        f"{nobody}): no master found: 1 Sentinel(s) could not be asked (ConnectionError)"
    )


# -- cdc check ------------------------------------------------------------------------------


def _config(
    path: Path, mariadb: MariaDB, es_url: str, index: str, db: str, watched: Watched
) -> Path:
    return write_config(
        path,
        port=mariadb.port,
        es_url=es_url,
        # write_config names one server; the `redis` section given here replaces it.
        redis_url="redis://unused",
        checkpoint={"redis": {"sentinels": watched.addresses, "master": "cdc"}},
        tables=[{"table": f"{db}.items", "index": index}],
        sink={"request_timeout": 5, "max_backoff": 2},
    )


def test_check_names_the_master_the_sentinels_gave(
    make_watched: Callable[..., Watched],
    mariadb: MariaDB,
    fresh_db: str,
    es_url: str,
    es_index: str,
    tmp_path: Path,
) -> None:
    mariadb.sql(writer_table_ddl(), db=fresh_db)
    watched = make_watched(count=2)
    config = _config(tmp_path / "c.yaml", mariadb, es_url, es_index, fresh_db, watched)

    result = CliRunner().invoke(app, ["check", "--config", str(config)])
    for sentinel in watched.sentinels:
        sentinel.kill()
    down = CliRunner().invoke(app, ["check", "--config", str(config)])

    assert result.exit_code == 0, result.output
    sentinels = ", ".join(watched.addresses)
    assert (
        f"✓ checkpoint_store: Redis key cdc:test:checkpoint (master cdc at "
        f"127.0.0.1:{watched.master.port}, from Sentinels {sentinels}) is reachable and writable"
    ) in result.stdout.splitlines()
    assert down.exit_code == 1
    assert (
        f"✗ checkpoint_store: reading the checkpoint from Redis (cdc:test:checkpoint) (master "
        f"cdc, from Sentinels {sentinels}): no master found: 2 Sentinel(s) could not be asked "
        "(ConnectionError, ConnectionError) — check checkpoint.redis.sentinels and master, and "
        "that the Sentinels are up and monitor the master under that name"
    ) in down.stdout.splitlines()


# -- a failover under a running connector ---------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("how", ["forced", "master killed"])
def test_a_running_connector_follows_a_failover(
    how: str,
    make_watched: Callable[..., Watched],
    mariadb: MariaDB,
    osmem: Osmem,
    fresh_db: str,
    es_url: str,
    es_index: str,
    tmp_path: Path,
) -> None:
    mariadb.sql(writer_table_ddl(), db=fresh_db)
    watched = make_watched(count=3)
    config = _config(tmp_path / "c.yaml", mariadb, es_url, es_index, fresh_db, watched)
    run_until_caught_up(config)
    cfg = load_config(config)

    def checkpoint() -> Checkpoint | None:
        with open_stores(cfg, timeout=2) as stores:
            return stores.checkpoints.load()

    def caught_up() -> bool:
        try:
            stored = checkpoint()
        except CheckpointUnavailable:
            return False
        gtid = str(mariadb.query("SELECT @@GLOBAL.gtid_binlog_pos")[0][0])
        return stored is not None and reached(stored.position, Position("mariadb", gtid))

    writer = RandomWriter(mariadb, fresh_db, seed=len(how), pause=0.02)
    writer.start()
    with CdcProcess(config) as proc:
        wait_for(lambda: osmem.count(es_index) > 20, what="streaming to start")
        before = writer.transactions
        if how == "forced":
            watched.sentinels[0].failover()
        else:
            watched.master.kill()
        wait_for(
            lambda: watched.all_name(watched.replica),
            timeout=30,
            what="every Sentinel to name the replica as the master",
        )
        if how == "forced":
            # The old master is still up, and takes writes (to lose them) until Sentinel turns
            # it into a replica some 10 s later; checkpoints must not wait for that.
            switched = time.time()
            wait_for(
                lambda: _written_at(watched.replica) > switched,
                timeout=5,
                what="a checkpoint on the new master within 5 s of the switch",
            )
        time.sleep(3)  # writes go on against the new master
        writer.finish()
        during = writer.transactions - before
        wait_for(caught_up, timeout=60, what="the checkpoint on the new master to reach MySQL")
        wait_for(
            lambda: osmem.all_docs(es_index) == writer_rows(mariadb, fresh_db),
            timeout=60,
            what="the index to equal MySQL after the failover",
        )
        assert proc.proc.poll() is None, "the connector exited during the failover"
        proc.terminate()
        assert proc.wait(timeout=15) == 0, proc.log()
    log = proc.log()

    # Read from the new master itself: the checkpoint lives there, and covers every write.
    stored = checkpoint()
    assert stored is not None
    with watched.replica.client() as new_master:
        assert new_master.info("replication")["role"] == "master"
        raw = new_master.get("cdc:test:checkpoint")
    assert raw is not None and Checkpoint.from_json(raw) == stored
    gtid = str(mariadb.query("SELECT @@GLOBAL.gtid_binlog_pos")[0][0])
    assert reached(stored.position, Position("mariadb", gtid))
    assert osmem.all_docs(es_index) == writer_rows(mariadb, fresh_db)
    assert during > 50
    for other in ("MySQL binlog stream", "Elasticsearch"):
        assert f"{other} unavailable" not in log, log
    outages = log.count("checkpoint store unavailable")
    assert log.count("checkpoint store recovered after") == outages, log
    if how == "master killed":
        # Until Sentinel has promoted the replica there is no master to write to.
        assert outages == 1, log
    print(f"\n{how}: {during} transactions during the failover; {outages} checkpoint outage(s)")
    print("\n".join(line for line in log.splitlines() if "checkpoint store" in line))
