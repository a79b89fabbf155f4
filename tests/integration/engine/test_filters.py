"""`where:` in the stream and in the snapshot: rows entering and leaving the filter, compared
with the same condition in an independent SELECT, and a fresh snapshot agreeing with the
stream."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

from harness import run_until_caught_up, write_config
from rig import MariaDB, Osmem

WHERE = "qty > 0 and e in ('a', 'b') and name <> 'skip'"
SQL_WHERE = "qty > 0 AND e IN ('a', 'b') AND BINARY name <> 'skip'"


def _expected(mariadb: MariaDB, db: str) -> dict[str, Any]:
    rows = mariadb.query(f"SELECT id, qty, e, name FROM items WHERE {SQL_WHERE}", db=db)
    return {str(i): {"id": i, "qty": q, "e": e, "name": n} for i, q, e, n in rows}


def _config(mariadb: MariaDB, osmem: Osmem, db: str, index: str, path: Path) -> Path:
    return write_config(
        path,
        port=mariadb.port,
        es_url=osmem.url,
        tables=[{"table": f"{db}.items", "index": index, "where": WHERE}],
        name=index,
        snapshot={"mode": "initial", "chunk_size": 25},
    )


def _workload(mariadb: MariaDB, db: str, rng: random.Random, transactions: int) -> None:
    conn = mariadb.connect(database=db, autocommit=False)
    with conn.cursor() as cur:
        for _ in range(transactions):
            for _ in range(rng.randint(1, 4)):
                roll, target = rng.random(), rng.randint(1, 400)
                if roll < 0.35:
                    cur.execute(
                        "UPDATE items SET qty = %s WHERE id = %s", (rng.randint(-2, 3), target)
                    )
                elif roll < 0.55:
                    cur.execute(
                        "UPDATE items SET e = %s WHERE id = %s", (rng.choice("abc"), target)
                    )
                elif roll < 0.65:
                    name = rng.choice(["skip", "Skip", "keep"])
                    cur.execute("UPDATE items SET name = %s WHERE id = %s", (name, target))
                elif roll < 0.8:
                    cur.execute(
                        "INSERT IGNORE INTO items VALUES (%s, %s, %s, 'new')",
                        (target, rng.randint(-1, 2), rng.choice("abc")),
                    )
                elif roll < 0.9:
                    cur.execute("DELETE FROM items WHERE id = %s", (target,))
                else:
                    cur.execute(
                        "UPDATE IGNORE items SET id = %s WHERE id = %s",
                        (rng.randint(401, 800), target),
                    )
            conn.commit()
    conn.close()


def test_stream_and_snapshot_keep_exactly_the_rows_of_the_filter(
    mariadb: MariaDB, osmem: Osmem, fresh_db: str, es_index: str, tmp_path: Path
) -> None:
    db = fresh_db
    mariadb.sql(
        "CREATE TABLE items (id INT PRIMARY KEY, qty INT NULL, e ENUM('a','b','c') NOT NULL,"
        " name VARCHAR(20) NOT NULL)",
        db=db,
    )
    rng = random.Random(31)
    values = ", ".join(
        f"({i}, {rng.choice(['NULL', '-1', '0', '1', '2'])}, '{rng.choice('abc')}', "
        f"'{rng.choice(['keep', 'skip', 'Skip'])}')"
        for i in range(1, 301)
    )
    mariadb.sql(f"INSERT INTO items VALUES {values}", db=db)
    streamed = _config(mariadb, osmem, db, es_index, tmp_path / "a.yaml")

    run_until_caught_up(streamed)
    assert osmem.all_docs(es_index) == _expected(mariadb, db)
    assert 30 < len(_expected(mariadb, db)) < 270  # the filter keeps some rows, not all

    for round_ in range(3):
        _workload(mariadb, db, rng, 80)
        run_until_caught_up(streamed)
        assert osmem.all_docs(es_index) == _expected(mariadb, db), f"after round {round_}"

    copied_index = f"{es_index}_copy"
    copied = _config(mariadb, osmem, db, copied_index, tmp_path / "b.yaml")
    run_until_caught_up(copied)
    assert osmem.all_docs(copied_index) == osmem.all_docs(es_index) == _expected(mariadb, db)

    verify = subprocess.run(
        [sys.executable, "-m", "cdc", "verify", "--config", str(streamed)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert verify.returncode == 0, verify.stdout + verify.stderr
    # A document of a row outside the filter is extra to verify.
    outside = mariadb.query(f"SELECT id FROM items WHERE NOT ({SQL_WHERE}) LIMIT 1", db=db)[0][0]
    osmem.request("PUT", f"/{es_index}/_doc/{outside}", {"id": outside})
    osmem.refresh(es_index)
    found = subprocess.run(
        [sys.executable, "-m", "cdc", "verify", "--json", "--config", str(streamed)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert found.returncode == 1, found.stdout + found.stderr
    report = json.loads(found.stdout)["indices"][es_index]
    assert (report["extra"], report["missing"], report["different"]) == ([str(outside)], [], [])
