"""`cdc position ...` against the rig: each command changes what the next run does exactly as
documented, asks before acting, refuses while a connector runs, and rejects bad arguments
with one clear line."""

from __future__ import annotations

import os
import pty
import select
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest
from harness import run_until_caught_up, stored_checkpoint, write_config
from rig import MariaDB, Osmem
from typer.testing import CliRunner, Result

from cdc.cli.app import app
from cdc.config import load_config
from cdc.model.checkpoint import Checkpoint
from cdc.model.position import Position
from cdc.model.status import State, Status
from cdc.model.versions import initial_counter
from cdc.state.backends import open_stores

UUID_A = "3e11fa47-71ca-11e1-9e33-c80aa9429562"
UUID_B = "4d22eb58-82db-22f2-0f44-d91bb953a673"


def cdc(*args: str) -> Result:
    return CliRunner().invoke(app, list(args))


def gtid_now(mariadb: MariaDB) -> str:
    return str(mariadb.query("SELECT @@GLOBAL.gtid_binlog_pos")[0][0])


def binlog_now(mariadb: MariaDB) -> tuple[str, int]:
    row = mariadb.query("SHOW MASTER STATUS")[0]
    return str(row[0]), int(row[1])


@pytest.fixture
def items(mariadb: MariaDB, fresh_db: str) -> Callable[[str], int]:
    """A table `items (id, v)` in the fresh database; returns a function running one statement
    (one transaction) on it."""
    mariadb.sql("CREATE TABLE items (id INT PRIMARY KEY, v INT NOT NULL)", db=fresh_db)
    return lambda stmt: mariadb.sql(stmt, db=fresh_db)


@pytest.fixture
def config(
    mariadb: MariaDB, fresh_db: str, es_url: str, es_index: str, redis_url: str, tmp_path: Path
) -> Path:
    return write_config(
        tmp_path / "c.yaml",
        port=mariadb.port,
        es_url=es_url,
        redis_url=redis_url,
        tables=[{"table": f"{fresh_db}.items", "index": es_index}],
    )


def docs(osmem: Osmem, index: str) -> dict[str, int]:
    """{id: v} of every document in the index."""
    return {doc_id: src["v"] for doc_id, src in osmem.all_docs(index).items()}


def checkpoint(config: Path) -> Checkpoint:
    stored = stored_checkpoint(config)
    assert stored is not None
    return stored


# -- set --------------------------------------------------------------------------------------


def test_set_to_an_earlier_gtid_resends_the_changes_after_it_with_higher_versions(
    mariadb: MariaDB, osmem: Osmem, items: Callable[[str], int], config: Path, es_index: str
) -> None:
    run_until_caught_up(config)  # a fresh start records "now"; everything below is streamed
    items("INSERT INTO items VALUES (0, 0)")
    items("INSERT INTO items VALUES (1, 1)")
    mark = gtid_now(mariadb)
    items("INSERT INTO items VALUES (2, 2)")
    items("UPDATE items SET v = 10 WHERE id = 1")
    items("INSERT INTO items VALUES (3, 3)")
    run_until_caught_up(config)
    before = osmem.versions(es_index)
    counter = checkpoint(config).counter

    result = cdc("position", "set", "--config", str(config), "--gtid", mark, "--yes")

    assert result.exit_code == 0, result.output
    assert f"->  gtid {mark}" in result.stdout
    stored = checkpoint(config)
    assert stored.position == Position("mariadb", mark)
    assert stored.counter == counter  # never lowered: the replay gets higher versions
    stats = run_until_caught_up(config)
    after = osmem.versions(es_index)
    assert stats.transactions == 3
    assert after["0"] == before["0"]  # before the mark: not sent again
    for doc_id in ("1", "2", "3"):  # after it: applied again, above the old versions
        assert after[doc_id] > before[doc_id], doc_id
    assert docs(osmem, es_index) == {"0": 0, "1": 10, "2": 2, "3": 3}


def test_set_by_file_and_offset_resumes_with_the_transaction_starting_there(
    mariadb: MariaDB, osmem: Osmem, items: Callable[[str], int], config: Path, es_index: str
) -> None:
    run_until_caught_up(config)
    items("INSERT INTO items VALUES (1, 1)")
    after_first = gtid_now(mariadb)
    file, offset = binlog_now(mariadb)
    items("INSERT INTO items VALUES (2, 2)")
    items("INSERT INTO items VALUES (3, 3)")
    run_until_caught_up(config)
    before = osmem.versions(es_index)
    inside = mariadb.query(f"SHOW BINLOG EVENTS IN '{file}' FROM {offset} LIMIT 2")[1]

    refused = cdc(
        "position", "set", "-c", str(config), "--file", file, "--pos", str(inside[1]), "--yes"
    )
    result = cdc("position", "set", "-c", str(config), "--file", file, "--pos", str(offset), "-y")

    assert refused.exit_code == 1
    assert f"{file}:{inside[1]} is inside a transaction (a {inside[2]} event" in refused.stderr
    assert result.exit_code == 0, result.output
    # MariaDB streams by GTID only: the offset became the GTID state there.
    assert checkpoint(config).position == Position("mariadb", after_first, file, offset)
    stats = run_until_caught_up(config)
    after = osmem.versions(es_index)
    assert stats.transactions == 2
    assert after["1"] == before["1"]
    assert after["2"] > before["2"] and after["3"] > before["3"]


# -- reset ------------------------------------------------------------------------------------


def test_reset_to_now_skips_the_changes_made_before_it(
    mariadb: MariaDB, osmem: Osmem, items: Callable[[str], int], config: Path, es_index: str
) -> None:
    run_until_caught_up(config)
    items("INSERT INTO items VALUES (1, 1)")
    run_until_caught_up(config)
    counter = checkpoint(config).counter
    items("INSERT INTO items VALUES (2, 2)")  # written while the connector is stopped
    items("INSERT INTO items VALUES (3, 3)")

    result = cdc("position", "reset", "--config", str(config), "--to", "now", "--yes")
    items("INSERT INTO items VALUES (4, 4)")

    assert result.exit_code == 0, result.output
    assert "re-snapshot" in result.stdout
    assert checkpoint(config).counter == counter
    run_until_caught_up(config)
    assert docs(osmem, es_index) == {"1": 1, "4": 4}


def test_reset_to_earliest_reads_from_the_oldest_binlog_the_server_still_has(
    make_mariadb: Callable[..., MariaDB], osmem: Osmem, es_index: str, tmp_path: Path
) -> None:
    server = make_mariadb()
    server.sql("CREATE DATABASE shop")
    server.sql("CREATE TABLE shop.items (id INT PRIMARY KEY, v INT NOT NULL)")
    server.sql("INSERT INTO shop.items VALUES (1, 1), (2, 2)")
    oldest = server.purge_binary_logs_to_current()
    state_at_oldest = gtid_now(server)
    server.sql("INSERT INTO shop.items VALUES (3, 3)")
    server.sql("INSERT INTO shop.items VALUES (4, 4)")
    config = write_config(
        tmp_path / "c.yaml",
        port=server.port,
        es_url=osmem.url,
        tables=[{"table": "shop.items", "index": es_index}],
    )
    low = initial_counter()

    result = cdc("position", "reset", "-c", str(config), "--to", "earliest", "--yes")

    assert result.exit_code == 0, result.output
    assert "(none: `cdc run` would start at the server's current position)" in result.stdout
    stored = checkpoint(config)
    assert stored.position == Position("mariadb", state_at_oldest, oldest, 4)
    assert low <= stored.counter <= initial_counter()  # no checkpoint before: from the clock
    stats = run_until_caught_up(config)
    assert stats.transactions == 2
    # 3 and 4 predate the first run but are in the binlogs; 1 and 2 were purged with theirs.
    assert docs(osmem, es_index) == {"3": 3, "4": 4}


def test_a_purged_or_unknown_position_is_refused_with_the_reason(
    make_mariadb: Callable[..., MariaDB], osmem: Osmem, es_index: str, tmp_path: Path
) -> None:
    server = make_mariadb()
    server.sql("CREATE DATABASE shop")
    server.sql("CREATE TABLE shop.items (id INT PRIMARY KEY, v INT NOT NULL)")
    early = gtid_now(server)
    server.sql("INSERT INTO shop.items VALUES (1, 1)")
    server.purge_binary_logs_to_current()
    config = write_config(
        tmp_path / "c.yaml",
        port=server.port,
        es_url=osmem.url,
        tables=[{"table": "shop.items", "index": es_index}],
    )
    run_until_caught_up(config)
    before = checkpoint(config)

    purged = cdc("position", "set", "-c", str(config), "--gtid", early, "--yes")
    unknown = cdc("position", "set", "-c", str(config), "--gtid", "0-1-99999", "--yes")
    other_server = cdc("position", "set", "-c", str(config), "--gtid", "0-7-1", "--yes")

    assert purged.exit_code == 1
    assert f"position gtid {early} was purged" in purged.stderr
    assert "cdc position reset --to now" in purged.stderr
    for result in (unknown, other_server):
        assert result.exit_code == 1
        assert "is unknown to this server" in result.stderr
    assert checkpoint(config) == before


# -- export / import --------------------------------------------------------------------------


def test_export_then_import_restores_the_checkpoint_exactly_and_replays_the_same_versions(
    osmem: Osmem,
    items: Callable[[str], int],
    config: Path,
    es_index: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    run_until_caught_up(config)
    items("INSERT INTO items VALUES (1, 1)")
    items("INSERT INTO items VALUES (2, 2)")
    run_until_caught_up(config)

    exported = cdc("position", "export", "--config", str(config))

    assert exported.exit_code == 0, exported.output
    default_path = tmp_path / "checkpoints" / "test.position.json"
    saved = checkpoint(config)
    assert Checkpoint.from_json(default_path.read_bytes()) == saved
    items("UPDATE items SET v = 10 WHERE id = 1")
    items("INSERT INTO items VALUES (3, 3)")
    run_until_caught_up(config)
    versions = osmem.versions(es_index)
    osmem.delete_index(es_index)  # so that what the replay writes shows, versions and all
    assert checkpoint(config).counter > saved.counter

    imported = cdc("position", "import", "--config", str(config), str(default_path), "--yes")

    assert imported.exit_code == 0, imported.output
    assert checkpoint(config).to_json() == saved.to_json()  # counter and all, as exported
    again = cdc("position", "export", "-c", str(config), str(tmp_path / "again.json"))
    assert again.exit_code == 0, again.output
    assert (tmp_path / "again.json").read_bytes() == default_path.read_bytes()
    stats = run_until_caught_up(config)
    assert stats.transactions == 2
    # The replay wrote exactly the changes after the export, with the versions they first got.
    assert osmem.versions(es_index) == {"1": versions["1"], "3": versions["3"]}
    assert docs(osmem, es_index) == {"1": 10, "3": 3}


def test_export_asks_before_replacing_a_file_and_needs_a_checkpoint(
    config: Path, items: Callable[[str], int], tmp_path: Path
) -> None:
    target = tmp_path / "pos.json"
    nothing = cdc("position", "export", "-c", str(config), str(target))
    run_until_caught_up(config)
    target.write_text("keep me")

    refused = cdc("position", "export", "-c", str(config), str(target))
    kept = target.read_text()
    replaced = cdc("position", "export", "-c", str(config), str(target), "--yes")

    assert nothing.exit_code == 1
    assert "no checkpoint stored in Redis key cdc:test:checkpoint" in nothing.stderr
    assert refused.exit_code == 1 and "pass --yes" in refused.stderr
    assert kept == "keep me"
    assert replaced.exit_code == 0, replaced.output
    assert Checkpoint.from_json(target.read_bytes()) == checkpoint(config)


# -- confirmation and running connectors ------------------------------------------------------


def _in_terminal(
    args: list[str], answer: str, while_asked: Callable[[int], None] | None = None
) -> tuple[int, str]:
    """Run `cdc ...` with a pseudo-terminal as stdin/stdout, answer its question (first calling
    `while_asked` with the command's pid), and return the exit status and everything it
    printed."""
    leader, follower = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "cdc", *args],
        stdin=follower,
        stdout=follower,
        stderr=follower,
        close_fds=True,
    )
    os.close(follower)
    output = b""
    answered = False
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        ready, _, _ = select.select([leader], [], [], 0.2)
        if ready:
            try:
                chunk = os.read(leader, 4096)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            output += chunk
            if not answered and b"[y/N]" in output:
                if while_asked is not None:
                    while_asked(proc.pid)
                os.write(leader, answer.encode() + b"\n")
                answered = True
        elif proc.poll() is not None:
            break
    os.close(leader)
    return proc.wait(timeout=30), output.decode(errors="replace")


def test_changes_ask_for_confirmation_on_a_terminal_and_refuse_without_one(
    mariadb: MariaDB, items: Callable[[str], int], config: Path
) -> None:
    run_until_caught_up(config)
    before = checkpoint(config)
    items("INSERT INTO items VALUES (1, 1)")
    target = gtid_now(mariadb)
    args = ["position", "set", "-c", str(config), "--gtid", target]

    no_tty = cdc(*args)
    declined_status, declined = _in_terminal(args, "n")
    unchanged = checkpoint(config)
    accepted_status, accepted = _in_terminal(args, "y")

    assert no_tty.exit_code == 1
    assert "without confirmation (stdin is not a terminal) — pass --yes" in no_tty.stderr
    assert "Change the position? [y/N]" in declined
    assert declined_status == 1 and "cancelled; nothing changed" in declined
    assert unchanged == before
    assert accepted_status == 0, accepted
    assert checkpoint(config).position.gtid == target


@pytest.mark.parametrize("state", ["running", "degraded"])
def test_changes_are_refused_while_the_heartbeat_says_running_unless_forced(
    state: State, mariadb: MariaDB, items: Callable[[str], int], config: Path
) -> None:
    run_until_caught_up(config)
    before = checkpoint(config)
    items("INSERT INTO items VALUES (1, 1)")
    with open_stores(load_config(config)) as stores:
        stores.heartbeats.beat(
            Status(state=state, pid=4242, host="box-7", updated_at=time.time()), 30
        )
    args = ["position", "reset", "-c", str(config), "--to", "now", "--yes"]

    refused = cdc(*args)
    unchanged = checkpoint(config)
    forced = cdc(*args, "--force")

    assert refused.exit_code == 1
    assert "connector 'test' is running (pid 4242 on box-7" in refused.stderr
    assert "stop it first" in refused.stderr
    assert unchanged == before
    assert forced.exit_code == 0, forced.output
    assert "going ahead because of --force" in forced.stderr
    assert checkpoint(config).position.gtid == gtid_now(mariadb)


def test_changes_are_refused_while_a_connector_holds_the_lease_unless_forced(
    mariadb: MariaDB, items: Callable[[str], int], config: Path
) -> None:
    run_until_caught_up(config)
    before = checkpoint(config)
    items("INSERT INTO items VALUES (1, 1)")
    with open_stores(load_config(config)) as stores:
        assert stores.lease is not None
        assert stores.lease.acquire("box-7:4242:0a1b2c3d", 60)
    args = ["position", "reset", "-c", str(config), "--to", "now", "--yes"]

    refused = cdc(*args)
    unchanged = checkpoint(config)
    forced = cdc(*args, "--force")

    assert refused.exit_code == 1
    assert "connector 'test' is active: box-7:4242:0a1b2c3d holds its lease" in refused.stderr
    assert "stop every connector with this name first (all replicas" in refused.stderr
    assert unchanged == before
    assert forced.exit_code == 0, forced.output
    assert "going ahead because of --force, unfenced" in forced.stderr
    assert checkpoint(config).position.gtid == gtid_now(mariadb)


def test_a_change_holds_the_lease_until_saved_and_then_gives_it_up(
    mariadb: MariaDB, items: Callable[[str], int], config: Path
) -> None:
    run_until_caught_up(config)
    items("INSERT INTO items VALUES (1, 1)")
    target = gtid_now(mariadb)
    seen: list[tuple[str | None, int]] = []
    taken_by_a_standby: list[bool] = []

    def while_asked(pid: int) -> None:
        with open_stores(load_config(config)) as stores:
            assert stores.lease is not None
            seen.append((stores.lease.holder(), pid))
            taken_by_a_standby.append(stores.lease.acquire("standby:1:ffff", 10))

    status, output = _in_terminal(
        ["position", "set", "-c", str(config), "--gtid", target], "y", while_asked
    )

    assert status == 0, output
    [(holder, pid)] = seen
    assert holder is not None and holder.split(":")[1] == str(pid), seen
    assert taken_by_a_standby == [False]
    assert checkpoint(config).position.gtid == target
    with open_stores(load_config(config)) as stores:
        assert stores.lease is not None
        assert stores.lease.holder() is None, "the command kept the lease"


def test_a_connector_taking_the_lease_during_a_change_makes_the_write_refused(
    mariadb: MariaDB, items: Callable[[str], int], config: Path
) -> None:
    """The check and the write are one: if a connector takes over while the command asks, the
    fenced write is refused and the position stays the new active's."""
    run_until_caught_up(config)
    before = checkpoint(config)
    items("INSERT INTO items VALUES (1, 1)")

    def take_over(pid: int) -> None:
        with open_stores(load_config(config)) as stores:
            assert stores.lease is not None
            holder = stores.lease.holder()
            assert holder is not None
            stores.lease.release(holder)
            assert stores.lease.acquire("box-8:77:0badf00d", 60)

    status, output = _in_terminal(
        ["position", "reset", "-c", str(config), "--to", "now"], "y", take_over
    )

    assert status == 1, output
    assert "was not written: another connector" in output
    assert checkpoint(config) == before


def test_a_stopped_connector_does_not_block_changes(
    mariadb: MariaDB, items: Callable[[str], int], config: Path
) -> None:
    run_until_caught_up(config)  # leaves a "stopped" heartbeat behind
    items("INSERT INTO items VALUES (1, 1)")

    result = cdc("position", "reset", "-c", str(config), "--to", "now", "--yes")

    assert result.exit_code == 0, result.output
    assert checkpoint(config).position.gtid == gtid_now(mariadb)


# -- bad arguments ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["set", "--gtid", "0-1-1", "--file", "f", "--pos", "4"], "give either --gtid or --file"),
        (["set", "--pos", "4"], "--pos needs --file"),
        (["set", "--file", "{file}"], "--file needs --pos"),
        (["set"], "give --gtid SET, or --file F --pos N"),
        (["set", "--gtid", "0-1"], "malformed MariaDB GTID list: '0-1' is not a GTID"),
        (["set", "--gtid", "  "], "--gtid is empty"),
        (["set", "--gtid", "not-a-uuid:1-5"], "malformed MySQL GTID set: 'not-a-uuid'"),
        (["set", "--gtid", f"{UUID_A}:1-5"], "is a MySQL GTID set but the source"),
        (["set", "--file", "mysql-bin.999999", "--pos", "4"], "is not among the server's"),
        (["set", "--file", "{file}", "--pos", "1"], "offset 1 is outside {file} (4 to "),
        (["reset", "--to", "yesterday"], "--to must be `now` or `earliest`, not 'yesterday'"),
        (["import", "{tmp}/missing.json"], "cannot read {tmp}/missing.json"),
        (["import", "{tmp}/garbage.json"], "is not valid JSON"),
        (["import", "{tmp}/future.json"], "has format 99; this version of the connector reads"),
    ],
)
def test_each_bad_argument_gives_one_clear_line_and_a_non_zero_exit(
    args: list[str], message: str, mariadb: MariaDB, config: Path, tmp_path: Path
) -> None:
    (tmp_path / "garbage.json").write_text("{not json")
    (tmp_path / "future.json").write_text('{"format": 99}')
    run_until_caught_up(config)
    before = checkpoint(config)
    file, _ = binlog_now(mariadb)

    def fill(text: str) -> str:
        return text.replace("{tmp}", str(tmp_path)).replace("{file}", file)

    args = [fill(a) for a in args]

    result = cdc("position", *args[:1], "--config", str(config), *args[1:], "--yes")

    assert result.exit_code != 0
    assert result.stdout == ""
    assert result.stderr.startswith("error: ")
    assert result.stderr.count("\n") == 1, result.stderr
    assert fill(message) in result.stderr
    assert checkpoint(config) == before


def test_a_bad_config_is_reported_with_its_problem(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("name: x\n")

    result = cdc("position", "show", "--config", str(config))

    assert result.exit_code == 2
    assert "error: " in result.stderr and "source" in result.stderr


# -- show -------------------------------------------------------------------------------------


def test_show_reports_the_checkpoint_the_server_position_and_how_far_behind(
    mariadb: MariaDB, items: Callable[[str], int], config: Path
) -> None:
    run_until_caught_up(config)
    items("INSERT INTO items VALUES (1, 1)")
    run_until_caught_up(config)
    stored = checkpoint(config)
    items("INSERT INTO items VALUES (2, 2)")
    items("INSERT INTO items VALUES (3, 3)")
    items("INSERT INTO items VALUES (4, 4)")
    file, offset = binlog_now(mariadb)

    as_json = cdc("position", "show", "--config", str(config), "--json")
    as_text = cdc("position", "show", "--config", str(config))

    assert as_json.exit_code == 0, as_json.output
    shown = orjson.loads(as_json.stdout)
    assert Checkpoint.from_dict(shown["checkpoint"]) == stored
    assert shown["server"]["position"] == {
        "flavor": "mariadb",
        "gtid": gtid_now(mariadb),
        "file": file,
        "offset": offset,
    }
    assert stored.position.file == file and stored.position.offset is not None
    assert shown["behind"]["transactions"] == 3
    assert shown["behind"]["bytes"] == offset - stored.position.offset
    assert stored.event_time > 0
    assert shown["behind"]["seconds"] >= time.time() - stored.event_time - 5
    assert shown["resumable"]["ok"] is True
    assert as_text.exit_code == 0, as_text.output
    assert f"  position    {stored.position.describe()}" in as_text.stdout
    assert f"  counter     {stored.counter}" in as_text.stdout
    assert "behind: 3 transactions, " in as_text.stdout
    assert "resumable: yes" in as_text.stdout


def test_show_without_the_server_still_prints_the_checkpoint_and_fails(
    items: Callable[[str], int], config: Path, tmp_path: Path
) -> None:
    run_until_caught_up(config)
    stored = checkpoint(config)
    text = config.read_text().replace("port:", "port: 1 #", 1)
    broken = tmp_path / "broken.yaml"
    broken.write_text(text)

    result = cdc("position", "show", "--config", str(broken))

    assert result.exit_code == 1
    assert f"  position    {stored.position.describe()}" in result.stdout
    assert result.stderr.startswith("error: connecting to 127.0.0.1:1")
