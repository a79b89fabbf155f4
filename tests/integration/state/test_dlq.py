"""The dead-letter queue: one contract for both stores, and the whole path a rejected document
takes with the real connector: parked with its reason, the stream going on, `cdc dlq list`,
`cdc dlq replay` after the index is fixed, `cdc dlq purge`, and `sink.on_rejected: fail`."""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import orjson
import pytest
from harness import stored_checkpoint, write_config
from rig import MariaDB, Osmem, Redis, free_port

from cdc.config import load_config
from cdc.errors import CdcError, CheckpointUnavailable
from cdc.model.letters import DeadLetter, parse_id
from cdc.model.versions import COPY_SLOT, version
from cdc.state.backends import open_stores
from cdc.state.files import open_files
from cdc.state.redis import open_redis
from cdc.state.stores import DeadLetterQueue, Stores
from cdc.testing.memory import Memory, memory_stores


def _letter(n: int, **changes: Any) -> DeadLetter:
    fields: dict[str, Any] = {
        "op": "index",
        "index": "items",
        "doc_id": str(n),
        "table": "shop.items",
        "key": {"id": str(n)},
        "error": f"mapper_parsing_exception: failed to parse field [price] (row {n}) ü",
        "status": 400,
        "version": (1234 << 23) | n,
        "gtid": f"0-1-{n}",
        "time": 1_700_000_000.0 + n,
    }
    fields.update(changes)
    return DeadLetter(**fields)


# -- the contract, against both stores -----------------------------------------------------------


@pytest.fixture(params=["file", "redis", "memory"])
def make_dlq(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    """A factory of queue instances sharing one store (as the connector and the CLI do)."""
    opened: list[Stores] = []
    memory = Memory()
    if request.param == "redis":
        url = request.getfixturevalue("redis_url")

    def make() -> DeadLetterQueue:
        if request.param == "file":
            stores = open_files(tmp_path / "state", "orders")
        elif request.param == "memory":
            stores = memory_stores(memory)
        else:
            stores = open_redis(url, "cdc", "orders")
        opened.append(stores)
        return stores.letters

    yield make
    for stores in opened:
        stores.close()


def test_parked_letters_come_back_oldest_first_with_their_content(make_dlq: Any) -> None:
    dlq = make_dlq()
    assert dlq.size() == 0 and dlq.list() == []
    first = dlq.park([_letter(1), _letter(2, gtid=None, key={"a": "x", "b": "2024-01-01"})])
    second = dlq.park([_letter(3, op="delete", error="x" * 50)])
    ids = first + second
    assert len(set(ids)) == 3
    assert [parse_id(i) for i in ids] == sorted(parse_id(i) for i in ids)
    expected = [_letter(1), _letter(2, gtid=None, key={"a": "x", "b": "2024-01-01"})]
    expected.append(_letter(3, op="delete", error="x" * 50))
    assert dlq.list() == list(zip(ids, expected, strict=True))
    assert dlq.size() == 3
    assert dlq.get(ids[1]) == expected[1]
    assert dlq.get("1-0") is None
    # Another instance (the CLI while the connector runs) sees the same queue.
    assert make_dlq().list() == dlq.list()


def test_paging_with_after_visits_every_letter_once(make_dlq: Any) -> None:
    dlq = make_dlq()
    ids = [i for n in range(0, 25, 5) for i in dlq.park([_letter(n + k) for k in range(5)])]
    seen: list[str] = []
    after = None
    while page := dlq.list(limit=7, after=after):
        assert len(page) <= 7
        seen += [letter_id for letter_id, _ in page]
        after = page[-1][0]
    assert seen == ids
    # A cursor whose letter is gone still works.
    dlq.remove([ids[10]])
    assert [i for i, _ in dlq.list(limit=3, after=ids[10])] == ids[11:14]


def test_remove_counts_what_existed_and_is_idempotent(make_dlq: Any) -> None:
    dlq = make_dlq()
    ids = dlq.park([_letter(n) for n in range(4)])
    assert dlq.remove([ids[0], ids[2], "1-0"]) == 2
    assert dlq.remove([ids[0], ids[2]]) == 0
    assert dlq.remove([]) == 0
    assert [i for i, _ in dlq.list()] == [ids[1], ids[3]]


def test_update_moves_the_letter_to_the_end_and_never_revives_a_removed_one(
    make_dlq: Any,
) -> None:
    dlq = make_dlq()
    ids = dlq.park([_letter(n) for n in range(3)])
    changed = _letter(0, error="still rejected")
    new_id = dlq.update(ids[0], changed)
    assert new_id is not None and parse_id(new_id) > parse_id(ids[2])
    assert dlq.list() == [(ids[1], _letter(1)), (ids[2], _letter(2)), (new_id, changed)]
    assert dlq.get(ids[0]) is None
    dlq.remove([ids[1]])
    assert dlq.update(ids[1], _letter(1)) is None
    assert dlq.size() == 2


def test_purge_empties_the_queue_and_ids_are_not_issued_twice(make_dlq: Any) -> None:
    dlq = make_dlq()
    old = dlq.park([_letter(n) for n in range(3)])
    assert dlq.purge() == 3
    assert dlq.size() == 0 and dlq.list() == []
    assert dlq.purge() == 0
    (new,) = dlq.park([_letter(9)])
    assert parse_id(new) > max(parse_id(i) for i in old)
    assert dlq.list() == [(new, _letter(9))]


def test_a_malformed_id_is_refused_as_a_terminal_error(make_dlq: Any) -> None:
    dlq = make_dlq()
    call: Callable[[], object]
    for call in (
        lambda: dlq.get("abc"),
        lambda: dlq.list(after="12"),
        lambda: dlq.remove(["1-2-3"]),
        lambda: dlq.update("x", _letter(1)),
    ):
        with pytest.raises(CdcError, match="is not a dead-letter id") as err:
            call()
        assert not err.value.transient


def test_concurrent_parks_and_rewrites_lose_no_letter(make_dlq: Any) -> None:
    parked: list[str] = []
    removed: list[str] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def writer(base: int) -> None:
        dlq = make_dlq()
        try:
            for n in range(25):
                ids = dlq.park([_letter(base + n)])
                with lock:
                    parked.extend(ids)
        except BaseException as exc:
            errors.append(exc)

    def remover() -> None:
        dlq = make_dlq()
        try:
            for _ in range(40):
                page = dlq.list(limit=2)
                if page:
                    count = dlq.remove([page[0][0]])
                    with lock:
                        removed.extend([page[0][0]] * count)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(k * 100,)) for k in range(4)]
    threads.append(threading.Thread(target=remover))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(parked) == len(set(parked)) == 100
    left = [i for i, _ in make_dlq().list(limit=1000)]
    assert sorted(left + removed) == sorted(parked)


def test_an_unreachable_store_is_a_transient_error(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    backends = [
        open_files(blocker, "orders"),
        open_redis(f"redis://127.0.0.1:{free_port()}", "cdc", "orders", timeout=1),
    ]
    for stores in backends:
        with pytest.raises(CheckpointUnavailable):
            stores.letters.park([_letter(1)])
        with pytest.raises(CheckpointUnavailable):
            stores.letters.size()
        stores.close()


def test_a_parked_letter_survives_a_redis_crash(make_redis: Any) -> None:
    server: Redis = make_redis(appendonly=True)
    stores = open_redis(server.url, "cdc", "orders")
    ids = stores.letters.park([_letter(1), _letter(2)])
    server.kill()
    server.start()
    assert stores.letters.list() == [(ids[0], _letter(1)), (ids[1], _letter(2))]
    stores.close()


# -- the connector end to end ------------------------------------------------------------------

ITEMS_DDL = "CREATE TABLE items (id INT PRIMARY KEY, name VARCHAR(50) NOT NULL, price VARCHAR(20))"


def _cdc(*args: str, config: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run the `cdc` command line as a user would, without a terminal."""
    return subprocess.run(
        [sys.executable, "-m", "cdc", *args, "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
        check=False,
    )


def _run_until_caught_up(config: Path) -> subprocess.CompletedProcess[str]:
    return _cdc("run", "--until-caught-up", config=config)


def _gtid_now(mariadb: MariaDB) -> str:
    return str(mariadb.query("SELECT @@GLOBAL.gtid_binlog_pos")[0][0])


def _seq(gtid: str) -> int:
    return int(gtid.split("-")[-1])


def _items(mariadb: MariaDB, db: str) -> dict[str, dict[str, Any]]:
    rows = mariadb.query("SELECT id, name, price FROM items", db=db)
    return {str(r[0]): {"id": r[0], "name": r[1], "price": r[2]} for r in rows}


def _items_config(
    tmp_path: Path, mariadb: MariaDB, osmem: Osmem, db: str, index: str, redis_url: str | None
) -> Path:
    return write_config(
        tmp_path / "c.yaml",
        port=mariadb.port,
        es_url=osmem.url,
        redis_url=redis_url,
        tables=[
            {
                "table": f"{db}.items",
                "index": index,
                "index_mappings": {"properties": {"price": {"type": "integer"}}},
            }
        ],
    )


@pytest.mark.parametrize("store", ["redis", "file"])
def test_rejected_rows_are_parked_the_stream_goes_on_and_replay_after_the_fix_matches_mysql(
    store: str,
    mariadb: MariaDB,
    osmem: Osmem,
    fresh_db: str,
    es_index: str,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> None:
    redis_url = request.getfixturevalue("redis_url") if store == "redis" else None
    mariadb.sql(ITEMS_DDL, db=fresh_db)
    config = _items_config(tmp_path, mariadb, osmem, fresh_db, es_index, redis_url)
    first = _run_until_caught_up(config)
    assert first.returncode == 0, first.stderr

    def sql(statement: str) -> str:
        mariadb.sql(statement, db=fresh_db)
        return _gtid_now(mariadb)

    sql("INSERT INTO items VALUES (1, 'one', '10')")
    bad_gtid = sql("INSERT INTO items VALUES (2, 'two', 'abc')")  # not an integer
    sql("INSERT INTO items VALUES (3, 'three', '30')")
    sql("UPDATE items SET price = '11' WHERE id = 1")
    sql("INSERT INTO items VALUES (4, 'four', 'n/a')")
    sql("INSERT INTO items VALUES (5, 'five', 'bad')")
    sql("DELETE FROM items WHERE id = 5")  # gone before anyone replays it
    sql("INSERT INTO items VALUES (6, 'six', 'oops')")
    last_gtid = sql("UPDATE items SET price = '60' WHERE id = 6")  # fixed in MySQL

    streamed = _run_until_caught_up(config)
    assert streamed.returncode == 0, streamed.stderr
    assert "parked" in streamed.stderr

    # (a) Each rejected document is parked with its reason, table, key and transaction...
    cfg = load_config(config)
    stores = open_stores(cfg)
    dlq = stores.letters
    letters = [letter for _, letter in dlq.list()]
    assert [(d.doc_id, d.op, d.status) for d in letters] == [
        ("2", "index", 400),
        ("4", "index", 400),
        ("5", "index", 400),
        ("6", "index", 400),
    ]
    assert all("failed to parse field [price]" in d.error for d in letters)
    assert {d.table for d in letters} == {f"{fresh_db}.items"}
    assert {d.index for d in letters} == {es_index}
    assert letters[0].key == {"id": "2"}
    assert letters[0].gtid == bad_gtid
    # ...while the rows after them kept flowing and the checkpoint moved past them.
    assert osmem.all_docs(es_index) == {
        "1": {"id": 1, "name": "one", "price": "11"},
        "3": {"id": 3, "name": "three", "price": "30"},
        "6": {"id": 6, "name": "six", "price": "60"},
    }
    checkpoint = stored_checkpoint(config)
    assert checkpoint is not None and checkpoint.position.gtid == last_gtid

    # (d) `cdc dlq list`: one line per letter under a header, and JSON lines.
    listed = _cdc("dlq", "list", config=config)
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert lines[0].split() == ["ID", "PARKED", "(UTC)", "TABLE", "DOCUMENT", "OP", "ERROR"]
    ids = [i for i, _ in dlq.list()]
    for line, letter_id, doc_id in zip(lines[1:5], ids, "2456", strict=True):
        cells = line.split()
        assert cells[0] == letter_id
        assert cells[3:7] == [f"{fresh_db}.items", f"{es_index}/{doc_id}", "index", "400"]
        assert cells[7].startswith("mapper_parsing_exception:")
        assert len(line) < 250
    assert lines[5] == f"4 letters in {dlq.describe()}."
    as_json = _cdc("dlq", "list", "--json", "--limit", "2", config=config)
    decoded = [orjson.loads(line) for line in as_json.stdout.splitlines()]
    assert decoded == [{"id": i, **asdict(d)} for i, d in dlq.list(limit=2)]
    assert [(d["doc_id"], d["gtid"]) for d in decoded] == [("2", bad_gtid), ("4", letters[1].gtid)]

    # (b) Without a terminal, replay asks for --yes and changes nothing.
    refused = _cdc("dlq", "replay", config=config)
    assert refused.returncode == 1
    assert refused.stderr.strip() == (
        "error: not replaying without confirmation (stdin is not a terminal) — pass --yes"
    )
    assert dlq.size() == 4

    # Before the index is fixed: the deleted row and the row fixed in MySQL are replayed,
    # the others are rejected again and stay, with the new error.
    early = _cdc("dlq", "replay", "--yes", config=config)
    assert early.returncode == 1, early.stderr
    out = early.stdout.splitlines()
    assert out[-1] == "Replayed 2, still rejected 2, failed 0."
    assert [line.split()[0] for line in out[:-1]] == ["rejected:", "rejected:"]
    assert f"{es_index}/2: mapper_parsing_exception" in out[0]
    assert [d.doc_id for _, d in dlq.list()] == ["2", "4"]
    assert osmem.get_doc(es_index, "5") is None

    # The operator fixes the index: malformed prices are kept in _source, not indexed.
    osmem.request(
        "PUT",
        f"/{es_index}/_mapping",
        {"properties": {"price": {"type": "integer", "ignore_malformed": True}}},
    )
    fixed = _cdc("dlq", "replay", "--yes", config=config)
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr
    assert fixed.stdout.splitlines() == ["Replayed 2, still rejected 0, failed 0."]
    assert dlq.size() == 0
    assert osmem.all_docs(es_index) == _items(mariadb, fresh_db)
    # Replayed documents carry the version of the checkpoint's transaction with the highest
    # row slot: above everything the stream wrote so far, below anything it writes next.
    checkpoint = stored_checkpoint(config)
    assert checkpoint is not None
    assert osmem.versions(es_index)["2"] == version(checkpoint.counter, COPY_SLOT)

    # The stream goes on as before, over the replayed documents.
    mariadb.sql("UPDATE items SET price = '200' WHERE id = 2", db=fresh_db)
    assert _run_until_caught_up(config).returncode == 0
    assert osmem.all_docs(es_index) == _items(mariadb, fresh_db)
    nothing = _cdc("dlq", "replay", "--yes", config=config)
    assert nothing.returncode == 0
    assert nothing.stdout.startswith("Nothing to replay: the dead-letter queue is empty")
    stores.close()


def test_list_and_purge_output(
    mariadb: MariaDB, osmem: Osmem, fresh_db: str, es_index: str, redis_url: str, tmp_path: Path
) -> None:
    config = _items_config(tmp_path, mariadb, osmem, fresh_db, es_index, redis_url)
    cfg = load_config(config)
    stores = open_stores(cfg)
    dlq = stores.letters
    empty = _cdc("dlq", "list", config=config)
    assert empty.returncode == 0
    assert empty.stdout == f"The dead-letter queue is empty ({dlq.describe()}).\n"

    long_error = "mapper_parsing_exception: " + "very long reason\n " * 40
    dlq.park([_letter(n, error=long_error, time=1_718_000_000.0) for n in range(5)])
    limited = _cdc("dlq", "list", "--limit", "3", config=config)
    lines = limited.stdout.splitlines()
    assert len(lines) == 5
    assert "2024-06-10 06:13:20" in lines[1]
    assert lines[1].endswith("...") and "\n" not in lines[1] and len(lines[1]) < 200
    assert lines[4] == "Showing the oldest 3 of 5; use --limit to see more."

    refused = _cdc("dlq", "purge", config=config)
    assert refused.returncode == 1 and dlq.size() == 5
    purged = _cdc("dlq", "purge", "--yes", config=config)
    assert purged.returncode == 0
    assert purged.stdout == f"Purged 5 dead letters from {dlq.describe()}.\n"
    assert dlq.size() == 0
    again = _cdc("dlq", "purge", "--yes", config=config)
    assert again.stdout == f"The dead-letter queue is already empty ({dlq.describe()}).\n"

    bad_config = tmp_path / "bad.yaml"
    bad_config.write_text("name: x\n")
    broken = _cdc("dlq", "list", config=bad_config)
    assert broken.returncode == 2 and broken.stderr.startswith("error: ")
    unknown = _cdc("dlq", "replay", "--yes", "--id", "1-0", "--id", "nonsense", config=config)
    assert unknown.returncode == 1
    assert unknown.stderr.strip() == (
        "error: 'nonsense' is not a dead-letter id "
        "— ids look like 1718000000000-0; `cdc dlq list` shows them"
    )
    stores.close()


def test_on_rejected_fail_stops_the_connector_before_the_checkpoint_passes_the_row(
    mariadb: MariaDB, osmem: Osmem, fresh_db: str, es_index: str, redis_url: str, tmp_path: Path
) -> None:
    mariadb.sql(ITEMS_DDL, db=fresh_db)
    config = write_config(
        tmp_path / "c.yaml",
        port=mariadb.port,
        es_url=osmem.url,
        redis_url=redis_url,
        tables=[
            {
                "table": f"{fresh_db}.items",
                "index": es_index,
                "index_mappings": {"properties": {"price": {"type": "integer"}}},
            }
        ],
        sink={"on_rejected": "fail"},
    )
    assert _run_until_caught_up(config).returncode == 0
    before = stored_checkpoint(config)
    assert before is not None
    mariadb.sql("INSERT INTO items VALUES (1, 'one', '10')", db=fresh_db)
    mariadb.sql("INSERT INTO items VALUES (2, 'two', 'abc')", db=fresh_db)
    bad_gtid = _gtid_now(mariadb)
    mariadb.sql("INSERT INTO items VALUES (3, 'three', '30')", db=fresh_db)

    failed = _run_until_caught_up(config)
    assert failed.returncode == 1
    errors = [line for line in failed.stderr.splitlines() if " ERROR " in line]
    assert len(errors) == 1
    assert f"Elasticsearch rejected index of document '2' in index '{es_index}'" in errors[0]
    assert f"(from {fresh_db}.items): HTTP 400: mapper_parsing_exception" in errors[0]
    assert "Traceback" not in failed.stderr
    fix_line = failed.stderr.splitlines()[failed.stderr.splitlines().index(errors[0]) + 1]
    assert fix_line.startswith("Fix: fix the index mapping or the table mapping, then restart")
    after = stored_checkpoint(config)
    assert after is not None and _seq(after.position.gtid) < _seq(bad_gtid)
    assert open_stores(load_config(config)).letters.size() == 0

    # Once the index accepts it, a restart re-sends the row from the checkpoint.
    osmem.request(
        "PUT",
        f"/{es_index}/_mapping",
        {"properties": {"price": {"type": "integer", "ignore_malformed": True}}},
    )
    assert _run_until_caught_up(config).returncode == 0
    assert osmem.all_docs(es_index) == _items(mariadb, fresh_db)


def test_replay_gives_up_when_elasticsearch_does_not_answer_and_keeps_the_letters(
    mariadb: MariaDB, osmem: Osmem, fresh_db: str, es_index: str, tmp_path: Path
) -> None:
    mariadb.sql(ITEMS_DDL, db=fresh_db)
    mariadb.sql("INSERT INTO items VALUES (1, 'one', '10')", db=fresh_db)
    config = _items_config(tmp_path, mariadb, osmem, fresh_db, es_index, None)
    assert _run_until_caught_up(config).returncode == 0
    down = write_config(
        tmp_path / "down.yaml",
        port=mariadb.port,
        es_url=f"http://127.0.0.1:{free_port()}",
        tables=[{"table": f"{fresh_db}.items", "index": es_index}],
        sink={"request_timeout": 1, "max_backoff": 0.2},
    )
    stores = open_stores(load_config(down))
    stores.letters.park([_letter(1, table=f"{fresh_db}.items", index=es_index)])
    gave_up = _cdc("dlq", "replay", "--yes", "--timeout", "2", config=down)
    assert gave_up.returncode == 1
    lines = gave_up.stderr.splitlines()
    assert len(lines) == 2, gave_up.stderr
    assert lines[0].startswith("Elasticsearch is not accepting writes (Elasticsearch unreachable")
    assert lines[0].endswith("retrying for up to 2 s")
    assert lines[1] == "error: Elasticsearch did not accept the documents within 2 s"
    assert stores.letters.size() == 1
