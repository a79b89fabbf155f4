"""Active/standby under chaos: two `cdc run` with one name, a 100,000-change workload, and 30
random blows to whichever connector is active: `kill -9`, SIGSTOP past the lease's TTL, or a cut
of its own link to Redis. Afterwards the index equals MySQL, and a record of every command
Redis executed (`MONITOR`, read independently of the connector) shows that every checkpoint
write was fenced and made by the connector that held the lease at that moment, so no two
holders ever wrote checkpoints. Takeover times are printed."""

from __future__ import annotations

import random
import re
import signal
import statistics
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

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

from cdc.testing import EsStandIn, FaultProxy

TTL = 2.0
CHANGES = 100_000
EVENTS = 30
TAKE_OVER_WITHIN = TTL + 5.0
LEASE_KEY = "cdc:test:lease"
CHECKPOINT_KEY = "cdc:test:checkpoint"


@dataclass
class Slot:
    """One of the two connectors: its own config, whose Redis link runs through its own proxy,
    and the process now running in it."""

    config: Path
    redis_proxy: FaultProxy
    proc: CdcProcess
    retired: list[CdcProcess] = field(default_factory=list)

    def restart(self) -> None:
        self.proc.wait()
        self.retired.append(self.proc)
        self.proc = CdcProcess(self.config)

    @property
    def pid(self) -> int:
        return self.proc.proc.pid


# -- the record of every command Redis ran ------------------------------------------------------

_LINE = re.compile(r"^\d+\.\d+ \[(\d+) (lua|[^\]]+)\] (.*)$")
_ARG = re.compile(r'"((?:[^"\\]|\\.)*)"')
_ESCAPES = {"n": "\n", "r": "\r", "t": "\t", "a": "\a", "b": "\b", '"': '"', "\\": "\\"}


def _unquote(text: str) -> str:
    def one(match: re.Match[str]) -> str:
        escaped = match.group(1)
        if escaped.startswith("x"):
            return chr(int(escaped[1:], 16))
        return _ESCAPES.get(escaped, escaped)

    return re.sub(r"\\(x[0-9a-fA-F]{2}|.)", one, text)


@dataclass
class Audit:
    """What the MONITOR record says about the lease and the checkpoint writes."""

    fenced_writes: int = 0
    refused_writes: int = 0
    unfenced_writes: int = 0
    holders: list[str] = field(default_factory=list)
    """Tokens that took the lease, in order."""
    violations: list[str] = field(default_factory=list)
    counters: list[int] = field(default_factory=list)


def audit(record: str, db: int) -> Audit:
    """Replays the record: who holds the lease (the last token a script SET it to; a release
    DELs it), and for every checkpoint write by a script, whose token the script carried."""
    result = Audit()
    holder: str | None = None
    script_token: str | None = None
    script_is_fenced_set = False
    script_wrote = True
    for line in record.splitlines():
        match = _LINE.match(line)
        if not match or int(match.group(1)) != db:
            continue
        args = [_unquote(a) for a in _ARG.findall(match.group(3))]
        if not args:
            continue
        command = args[0].upper()
        from_script = match.group(2) == "lua"
        if not from_script:
            if script_is_fenced_set and not script_wrote:
                result.refused_writes += 1
            script_is_fenced_set = False
            if command in ("EVAL", "EVALSHA"):
                keys = int(args[2])
                keys_given, argv = args[3 : 3 + keys], args[3 + keys :]
                if CHECKPOINT_KEY in keys_given:
                    script_is_fenced_set, script_wrote = True, False
                    script_token = argv[-1]
            elif command in ("SET", "DEL") and len(args) > 1 and args[1] == CHECKPOINT_KEY:
                result.unfenced_writes += 1
                result.violations.append(f"a client wrote the checkpoint unfenced: {line}")
            continue
        if command == "SET" and args[1] == LEASE_KEY:
            holder = args[2]
            result.holders.append(holder)
        elif command == "DEL" and args[1] == LEASE_KEY:
            holder = None
        elif command == "SET" and args[1] == CHECKPOINT_KEY:
            script_wrote = True
            result.fenced_writes += 1
            result.counters.append(int(orjson.loads(args[2])["counter"]))
            if not script_is_fenced_set or script_token != holder:
                result.violations.append(
                    f"checkpoint written by {script_token} while {holder} held the lease"
                )
    if script_is_fenced_set and not script_wrote:
        result.refused_writes += 1
    return result


def test_audit_catches_a_write_by_a_deposed_holder() -> None:
    """The audit itself can fail: a write carrying the token of a deposed holder is a
    violation, a refused one is counted, and a plain SET is an unfenced write."""
    script = '"eval" "fenced" "2" "cdc:test:checkpoint" "cdc:test:lease" "{{}}" "{tok}"'
    record = "\n".join(
        [
            '1.0 [3 lua] "SET" "cdc:test:lease" "A" "PX" "2000"',
            f"1.1 [3 127.0.0.1:1] {script.format(tok='A')}",
            '1.1 [3 lua] "GET" "cdc:test:lease"',
            '1.1 [3 lua] "SET" "cdc:test:checkpoint" "{\\"counter\\":5}"',
            '2.0 [3 lua] "SET" "cdc:test:lease" "B" "PX" "2000"',
            f"2.1 [3 127.0.0.1:1] {script.format(tok='A')}",
            '2.1 [3 lua] "GET" "cdc:test:lease"',
            f"2.2 [3 127.0.0.1:2] {script.format(tok='A')}",
            '2.2 [3 lua] "GET" "cdc:test:lease"',
            '2.2 [3 lua] "SET" "cdc:test:checkpoint" "{\\"counter\\":6}"',
            '2.3 [3 127.0.0.1:2] "SET" "cdc:test:checkpoint" "{}"',
            '2.4 [4 lua] "SET" "cdc:test:checkpoint" "{\\"counter\\":1}"',
        ]
    )

    result = audit(record, db=3)

    assert result.holders == ["A", "B"]
    assert result.fenced_writes == 2
    assert result.refused_writes == 1
    assert result.unfenced_writes == 1
    assert result.counters == [5, 6]
    assert len(result.violations) == 2
    assert "written by A while B held the lease" in result.violations[0]


# -- the chaos ------------------------------------------------------------------------------


def _holder_pid(client: redis.Redis) -> int | None:
    token = client.get(LEASE_KEY)
    if token is None:
        return None
    assert isinstance(token, bytes)
    return int(token.decode().split(":")[1])


WAITING = "holds the lease; this connector takes over"


def _wait_for_standby(slot: Slot, seen: int = 0) -> None:
    """Until the slot's connector has said `seen + 1` times that it waits as a standby."""
    wait_for(
        lambda: slot.proc.log().count(WAITING) > seen,
        60,
        f"pid {slot.pid} to wait as a standby",
    )


@pytest.mark.slow
def test_two_connectors_through_kills_freezes_and_cut_redis_links_lose_nothing(
    mariadb: MariaDB, fresh_db: str, redis_url: str, tmp_path: Path
) -> None:
    mariadb.sql(writer_table_ddl(), db=fresh_db)
    rng = random.Random(14)
    parts = urlsplit(redis_url)
    db = int(parts.path.strip("/") or 0)
    client = redis.Redis.from_url(redis_url)
    with EsStandIn() as standin:
        standin.start()
        proxies = [FaultProxy("127.0.0.1", parts.port or 6379).start() for _ in range(2)]
        configs = [
            write_config(
                tmp_path / f"c{i}.yaml",
                port=mariadb.port,
                es_url=standin.url,
                redis_url=f"redis://127.0.0.1:{proxy.port}/{db}",
                tables=[{"table": f"{fresh_db}.items", "index": "items"}],
                ha={"enabled": True, "lease_ttl": TTL},
            )
            for i, proxy in enumerate(proxies)
        ]
        run_until_caught_up(configs[0])  # a checkpoint before the writer starts
        record_path = tmp_path / "monitor.txt"
        with open(record_path, "wb") as record_file:
            monitor = subprocess.Popen(
                ["redis-cli", "-h", "127.0.0.1", "-p", str(parts.port or 6379), "monitor"],
                stdout=record_file,
                stderr=subprocess.STDOUT,
            )
        wait_for(lambda: record_path.stat().st_size > 0, 10, "MONITOR to start")
        slots = [
            Slot(config, proxy, CdcProcess(config))
            for config, proxy in zip(configs, proxies, strict=True)
        ]
        writer = RandomWriter(mariadb, fresh_db, seed=14, pause=0.003, limit=CHANGES)
        takeovers: dict[str, list[float]] = {"kill": [], "freeze": [], "cut": []}
        try:
            wait_for(lambda: _holder_pid(client) is not None, 30, "an active connector")
            for slot in slots:
                if slot.pid != _holder_pid(client):
                    _wait_for_standby(slot)
            writer.start()
            for _ in range(EVENTS):
                time.sleep(rng.uniform(0.5, 2.5))
                before = client.get(CHECKPOINT_KEY)
                pid = _holder_pid(client)
                active = next(s for s in slots if s.pid == pid)
                standby = next(s for s in slots if s is not active)
                kind = rng.choice(sorted(takeovers))
                seen = active.proc.log().count(WAITING)
                if kind == "kill":
                    active.proc.kill()
                elif kind == "freeze":
                    active.proc.proc.send_signal(signal.SIGSTOP)
                else:
                    rng.choice([active.redis_proxy.reset, active.redis_proxy.blackhole])()
                struck = time.monotonic()
                wait_for(
                    lambda: _holder_pid(client) == standby.pid,  # noqa: B023
                    TAKE_OVER_WITHIN,
                    f"the standby to take over after {kind}",
                )
                takeovers[kind].append(time.monotonic() - struck)
                if kind == "kill":
                    active.restart()
                    seen = 0
                elif kind == "freeze":
                    time.sleep(0.5)
                    active.proc.proc.send_signal(signal.SIGCONT)
                else:
                    time.sleep(0.5)
                    active.redis_proxy.pass_through()
                _wait_for_standby(active, seen)
                if writer.is_alive():
                    # The new active delivers: its checkpoints move on.
                    wait_for(
                        lambda: client.get(CHECKPOINT_KEY) != before,  # noqa: B023
                        30,
                        "the new active to write a checkpoint",
                    )
            writer.join(timeout=300)  # the whole workload, even if the events ended first
            writer.finish()
            wait_until_equal(
                lambda: standin.docs("items"),
                lambda: writer_rows(mariadb, fresh_db),
                120,
                lambda: "\n\n".join(s.proc.log()[-3000:] for s in slots),
            )
        finally:
            for slot in slots:
                if slot.proc.proc.poll() is None:
                    slot.proc.proc.send_signal(signal.SIGCONT)
                    slot.proc.terminate()
            codes = [slot.proc.wait(timeout=30) for slot in slots]
            for retired in (p for s in slots for p in s.retired):
                retired.wait()
            monitor.terminate()
            monitor.wait(timeout=10)
            for proxy in proxies:
                proxy.close()
    assert codes == [0, 0], [s.proc.log()[-3000:] for s in slots]
    result = audit(record_path.read_text(errors="replace"), db)
    times = sorted(t for ts in takeovers.values() for t in ts)
    documents = len(writer_rows(mariadb, fresh_db))
    print(
        f"\nHA chaos: {writer.statements} changes in {writer.transactions} transactions, "
        f"{documents} rows = documents; events { ({k: len(v) for k, v in takeovers.items()}) }; "
        f"takeover p50 {statistics.median(times):.1f} s, max {max(times):.1f} s "
        f"(lease_ttl {TTL:g} s); {len(result.holders)} terms, {result.fenced_writes} fenced "
        f"checkpoint writes, {result.refused_writes} refused (a deposed holder's)"
    )
    assert writer.statements >= CHANGES
    assert len(times) == EVENTS
    assert all(ts for ts in takeovers.values()), takeovers
    assert not result.violations, result.violations[:5]
    assert result.unfenced_writes == 0
    assert len(result.holders) >= EVENTS + 1
    assert result.counters == sorted(result.counters), "the checkpoint moved back"
    assert max(times) <= TAKE_OVER_WITHIN
