"""`cdc verify` against a running connector while a writer keeps changing rows: documents
corrupted behind the connector's back are reported exactly, by kind, run after run; nothing
else is; `--repair` makes the index equal MySQL, which an independent query confirms."""

from __future__ import annotations

import re
import subprocess
import sys
import urllib.request
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
from harness import (
    CdcProcess,
    RandomWriter,
    run_until_caught_up,
    stored_checkpoint,
    wait_for,
    write_config,
)
from prometheus_client.parser import text_string_to_metric_families
from rig import MariaDB, Osmem, free_port

from cdc.config import load_config
from cdc.engine.snapshotter import request
from cdc.model.lag import reached
from cdc.model.position import Position
from cdc.state.backends import open_stores

STATIC = range(100_001, 100_301)
"""Rows the writer never touches (it works on ids below 100,000 and above 500,000)."""


def _verify(config: Path, *args: str) -> tuple[int, dict[str, Any], str]:
    proc = subprocess.run(
        [sys.executable, "-m", "cdc", "verify", "--config", str(config), *args],
        capture_output=True,
        text=True,
        timeout=300,
    )
    report = orjson.loads(proc.stdout) if "--json" in args and proc.stdout.strip() else {}
    return proc.returncode, report, proc.stdout + proc.stderr


def _setup(mariadb: MariaDB, osmem: Osmem, db: str, tmp_path: Path) -> Path:
    mariadb.sql(
        "CREATE TABLE items (id INT PRIMARY KEY, name VARCHAR(40), qty INT, price DECIMAL(10,2))",
        db=db,
    )
    values = ", ".join(f"({i}, 'static {i}', {i % 7}, {i % 100}.25)" for i in STATIC)
    mariadb.sql(f"INSERT INTO items VALUES {values}", db=db)
    return write_config(
        tmp_path / "c.yaml",
        port=mariadb.port,
        es_url=osmem.url,
        tables=[{"table": f"{db}.items", "index": f"{db}_items"}],
        name=db,
        snapshot={"mode": "initial", "chunk_size": 100},
    )


def _caught_up(mariadb: MariaDB, config: Path) -> bool:
    checkpoint = stored_checkpoint(config)
    if checkpoint is None:
        return False
    gtid = mariadb.query("SELECT @@GLOBAL.gtid_binlog_pos")[0][0]
    return reached(checkpoint.position, Position("mariadb", gtid))


def _index_equals_mysql(mariadb: MariaDB, osmem: Osmem, db: str) -> None:
    """The whole index against a plain SELECT, not the connector's mapping code."""
    rows = mariadb.query("SELECT id, name, qty, price FROM items", db=db)
    expected = {
        str(i): {"id": i, "name": n, "qty": q, "price": float(p) if p is not None else None}
        for i, n, q, p in rows
    }
    docs = osmem.all_docs(f"{db}_items")
    actual = {
        doc_id: {**doc, "price": float(Decimal(str(doc["price"])))} for doc_id, doc in docs.items()
    }
    assert actual == expected


def _corrupt(osmem: Osmem, db: str) -> dict[str, Any]:
    """Corrupt the index behind the connector's back; returns what `verify` must report."""
    index = f"{db}_items"
    missing = [str(i) for i in range(100_001, 100_006)]
    for doc_id in missing:
        osmem.request("DELETE", f"/{index}/_doc/{doc_id}")
    different = []
    for i in range(100_010, 100_014):
        doc = osmem.get_doc(index, str(i))
        assert doc is not None
        osmem.request("PUT", f"/{index}/_doc/{i}", {**doc["_source"], "name": "corrupted"})
        different.append({"id": str(i), "fields": ["name"]})
    # Documents written under an older mapping: `name` was renamed `title`, `legacy` added.
    for i in range(100_020, 100_023):
        doc = osmem.get_doc(index, str(i))
        assert doc is not None
        source = dict(doc["_source"])
        source["title"] = source.pop("name")
        osmem.request("PUT", f"/{index}/_doc/{i}", {**source, "legacy": True})
        different.append({"id": str(i), "fields": ["legacy", "name", "title"]})
    # No row at all; not a value of the key column; a row's key written differently.
    extra = ["900001", "900002", "not-a-number", "0100050"]
    for doc_id in extra:
        osmem.request("PUT", f"/{index}/_doc/{doc_id}", {"id": 0, "name": "ghost"})
    osmem.refresh(index)
    return {
        "missing": missing,
        "different": different,
        "extra": sorted(extra),
        "changing": [],
        "unverified": [],
    }


def _differences(report: dict[str, Any], index: str, rows: int = len(STATIC)) -> dict[str, Any]:
    found = dict(report["indices"][index])
    assert found.pop("checked") >= rows
    return found


def test_verify_reports_exactly_the_corrupted_documents_under_writes_and_repair_fixes_them(
    mariadb: MariaDB, osmem: Osmem, fresh_db: str, tmp_path: Path
) -> None:
    db = fresh_db
    index = f"{db}_items"
    config = _setup(mariadb, osmem, db, tmp_path)
    writer = RandomWriter(mariadb, db, seed=12, pause=0.005)
    with CdcProcess(config) as connector:
        wait_for(lambda: osmem.count(index) >= len(STATIC), 60, "the initial snapshot")
        wait_for(lambda: _caught_up(mariadb, config), 60, "the connector to catch up")

        # A quiet database first, then the same under writes.
        clean_code, clean, _ = _verify(config, "--json")
        assert clean_code == 0, clean
        expected = _corrupt(osmem, db)
        quiet_code, quiet, quiet_out = _verify(config, "--json")
        writer.start()
        wait_for(lambda: writer.transactions > 50, 30, "the writer")
        busy = [_verify(config, "--json") for _ in range(2)]

        assert quiet_code == 1, quiet_out
        assert _differences(quiet, index) == expected
        for code, report, out in busy:
            assert code == 1, out
            assert _differences(report, index) == expected, out

        code, repaired, out = _verify(config, "--json", "--repair")
        assert code == 0, out
        assert _differences(repaired, index) == expected
        assert sorted(repaired["after_repair"]["indices"][index]["repaired"]) == sorted(
            expected["missing"] + [d["id"] for d in expected["different"]] + expected["extra"]
        )
        again_code, again, again_out = _verify(config, "--json")
        assert again_code == 0, again_out
        assert _differences(again, index) == {
            "missing": [],
            "different": [],
            "extra": [],
            "changing": [],
            "unverified": [],
        }

        assert writer.finish() > 50
        wait_for(lambda: _caught_up(mariadb, config), 60, "the connector to catch up")
        _index_equals_mysql(mariadb, osmem, db)
        connector.terminate()
        assert connector.wait() == 0, connector.log()


def _scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def _continuous(
    mariadb: MariaDB, osmem: Osmem, db: str, tmp_path: Path, repair: bool
) -> tuple[Path, int]:
    mariadb.sql("CREATE TABLE items (id INT PRIMARY KEY, name VARCHAR(40))", db=db)
    mariadb.sql(
        "INSERT INTO items VALUES " + ", ".join(f"({i}, 'n{i}')" for i in range(1, 101)), db=db
    )
    port = free_port()
    config = write_config(
        tmp_path / "c.yaml",
        port=mariadb.port,
        es_url=osmem.url,
        tables=[{"table": f"{db}.items", "index": f"{db}_items"}],
        name=db,
        snapshot={"mode": "initial"},
        metrics={"host": "127.0.0.1", "port": port},
        verify={"interval": 10, "max_rows_per_second": 0, "repair": repair},
    )
    return config, port


def _break_three(osmem: Osmem, index: str) -> None:
    osmem.request("DELETE", f"/{index}/_doc/7")
    osmem.request("PUT", f"/{index}/_doc/8", {"id": 8, "name": "wrong"})
    osmem.request("PUT", f"/{index}/_doc/555", {"id": 555, "name": "no row"})


def _status(config: Path) -> str:
    proc = subprocess.run(
        [sys.executable, "-m", "cdc", "status", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    return proc.stdout


def test_a_running_connector_verifies_in_the_background_and_reports_what_it_found(
    mariadb: MariaDB, osmem: Osmem, fresh_db: str, tmp_path: Path
) -> None:
    db = fresh_db
    index = f"{db}_items"
    config, port = _continuous(mariadb, osmem, db, tmp_path, repair=False)
    with CdcProcess(config) as connector:
        wait_for(lambda: osmem.count(index) == 100, 60, "the initial snapshot")
        _break_three(osmem, index)

        def mismatches() -> list[float]:
            metrics = _scrape(port)
            return [
                metrics.get(("cdc_verify_mismatches", (("index", index), ("kind", kind))), -1)
                for kind in ("missing", "different", "extra", "changing")
            ]

        # A pass that started before the corruption was complete finds part of it; the next
        # one (10 s later) finds all of it.
        wait_for(lambda: mismatches() == [1, 1, 1, 0], 60, "a pass finding the corruption")
        wait_for(lambda: "1 extra" in _status(config), 30, "the heartbeat with that pass")
        metrics = _scrape(port)
        status = _status(config)
        connector.terminate()
        assert connector.wait() == 0, connector.log()

    assert metrics[("cdc_verify_rows_total", ())] >= 100
    assert metrics[("cdc_verify_repaired_total", ())] == 0
    line = next(line for line in status.splitlines() if line.startswith("  verify"))
    assert line.startswith("  verify       last pass ")
    assert re.search(rf": 100 rows in \d+ s, {index} 1 missing, 1 different, 1 extra$", line), line
    assert "1 missing, 1 different, 1 extra (cdc verify lists the documents)" in connector.log()
    # Only reported: the index is as broken as before.
    assert osmem.get_doc(index, "7") is None


def test_a_running_connector_with_verify_repair_repairs_what_it_finds(
    mariadb: MariaDB, osmem: Osmem, fresh_db: str, tmp_path: Path
) -> None:
    db = fresh_db
    index = f"{db}_items"
    config, port = _continuous(mariadb, osmem, db, tmp_path, repair=True)
    with CdcProcess(config) as connector:
        wait_for(lambda: osmem.count(index) == 100, 60, "the initial snapshot")
        _break_three(osmem, index)
        wait_for(
            lambda: _scrape(port).get(("cdc_verify_repaired_total", ())) == 3,
            60,
            "passes repairing the three documents",
        )
        wait_for(lambda: "3 repaired" in _status(config), 30, "the heartbeat with that pass")
        metrics = _scrape(port)
        status = _status(config)
        connector.terminate()
        assert connector.wait() == 0, connector.log()

    assert metrics[("cdc_verify_repaired_total", ())] == 3
    kinds = ("missing", "different", "extra", "changing")
    assert [metrics[("cdc_verify_mismatches", (("index", index), ("kind", k)))] for k in kinds] == [
        0,
        0,
        0,
        0,
    ]
    assert "every index equals MySQL; 3 repaired" in status
    rows = mariadb.query("SELECT id, name FROM items", db=db)
    assert osmem.all_docs(index) == {str(i): {"id": i, "name": n} for i, n in rows}


def _small(mariadb: MariaDB, osmem: Osmem, db: str, tmp_path: Path) -> Path:
    mariadb.sql("CREATE TABLE items (id INT PRIMARY KEY, name VARCHAR(40))", db=db)
    mariadb.sql("INSERT INTO items VALUES (1, 'a'), (2, 'b'), (3, 'c')", db=db)
    return write_config(
        tmp_path / "c.yaml",
        port=mariadb.port,
        es_url=osmem.url,
        tables=[{"table": f"{db}.items", "index": f"{db}_items"}],
        name=db,
        snapshot={"mode": "initial"},
    )


def test_bad_arguments_and_configs_exit_2_with_the_reason(
    mariadb: MariaDB, osmem: Osmem, fresh_db: str, tmp_path: Path
) -> None:
    db = fresh_db
    config = _small(mariadb, osmem, db, tmp_path)
    broken = tmp_path / "broken.yaml"
    broken.write_text("name: [unclosed\n")

    unknown = _verify(config, "--table", f"{db}.nope")
    bad = _verify(broken)

    assert unknown[0] == 2
    assert f"error: no mapped table matches {db}.nope; mapped tables: {db}.items" in unknown[2]
    assert bad[0] == 2 and "error: " in bad[2] and "Traceback" not in bad[2]


def test_an_index_never_written_a_snapshot_under_way_and_a_stopped_connector(
    mariadb: MariaDB, osmem: Osmem, fresh_db: str, tmp_path: Path
) -> None:
    db = fresh_db
    index = f"{db}_items"
    config = _small(mariadb, osmem, db, tmp_path)

    # Before any connector ran: the index does not exist, every document is missing.
    code, report, out = _verify(config, "--json")
    assert code == 1, out
    assert _differences(report, index, rows=3) == {
        "missing": ["1", "2", "3"],
        "different": [],
        "extra": [],
        "changing": [],
        "unverified": [],
    }

    # A snapshot requested but not done: refused, since documents are still being copied.
    cfg = load_config(config)
    with open_stores(cfg) as stores:
        request(stores.snapshots, [f"{db}.items"])
    code, _, out = _verify(config)
    assert code == 1
    assert f"error: a snapshot of {db}.items is under way" in out

    run_until_caught_up(config)
    code, _, out = _verify(config)
    assert code == 0, out
    assert out.startswith(f"{index}: 3 rows checked; equal\n")

    # The connector is stopped and a row changes: the difference cannot be confirmed.
    mariadb.sql("UPDATE items SET name = 'changed' WHERE id = 2", db=db)
    code, report, out = _verify(config, "--json", "--timeout", "2")
    assert code == 1, out
    assert _differences(report, index, rows=3) == {
        "missing": [],
        "different": [],
        "extra": [],
        "changing": ["2"],
        "unverified": [],
    }
    assert "the connector's checkpoint" in out and "has not reached" in out


def test_composite_keys_with_times_are_verified_and_repaired(
    mariadb: MariaDB, osmem: Osmem, fresh_db: str, tmp_path: Path
) -> None:
    # The document id joins `created` and `id` with `:`, which the time holds as well.
    db = fresh_db
    index = f"{db}_events"
    mariadb.sql(
        "CREATE TABLE events (created DATETIME(3), id INT, name VARCHAR(40),"
        " PRIMARY KEY (created, id))",
        db=db,
    )
    mariadb.sql(
        "INSERT INTO events SELECT '2024-01-05 10:00:00.125' + INTERVAL seq MINUTE, seq,"
        " CONCAT('event ', seq) FROM seq_1_to_30",
        db=db,
    )
    config = write_config(
        tmp_path / "c.yaml",
        port=mariadb.port,
        es_url=osmem.url,
        tables=[{"table": f"{db}.events", "index": index}],
        name=db,
        snapshot={"mode": "initial"},
    )
    run_until_caught_up(config)
    ids = sorted(osmem.all_docs(index))
    assert len(ids) == 30 and ids[0].count(":") == 3, ids[0]
    osmem.request("DELETE", f"/{index}/_doc/{ids[0]}")
    osmem.request("PUT", f"/{index}/_doc/{ids[1]}", {"name": "wrong"})
    ghost = ids[2].rsplit(":", 1)[0] + ":999"
    osmem.request("PUT", f"/{index}/_doc/{ghost}", {"name": "no row"})

    code, report, out = _verify(config, "--json")
    repaired_code, _, repaired_out = _verify(config, "--repair")
    again_code, _, again_out = _verify(config, "--json")

    assert code == 1, out
    assert _differences(report, index, rows=30) == {
        "missing": [ids[0]],
        "different": [{"id": ids[1], "fields": ["created", "id", "name"]}],
        "extra": [ghost],
        "changing": [],
        "unverified": [],
    }
    assert repaired_code == 0, repaired_out
    assert f"{index}: repaired 3 documents\n{index}: after repair: equal" in repaired_out
    assert again_code == 0, again_out
    names = {name for (name,) in mariadb.query("SELECT name FROM events", db=db)}
    assert {doc["name"] for doc in osmem.all_docs(index).values()} == names
    assert len(osmem.all_docs(index)) == 30
