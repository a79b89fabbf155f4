"""Zero-downtime rebuild: a changed mapping is applied by filling a fresh index behind the
alias while writes continue, then swapping the alias atomically."""

from __future__ import annotations

import random
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from harness import CdcProcess, run_until_caught_up, wait_for, write_config
from rig import MariaDB, Osmem

ROWS = 3000


def _expected(mariadb: MariaDB, db: str) -> dict[str, dict[str, object]]:
    return {
        str(i): {"id": i, "title": name, "qty": qty}
        for i, name, qty in mariadb.query("SELECT id, name, qty FROM products", db=db)
    }


def test_rebuild_applies_a_renamed_field_without_failing_searches(
    mariadb: MariaDB, osmem: Osmem, fresh_db: str, es_index: str, redis_url: str, tmp_path: Path
) -> None:
    mariadb.sql(
        "CREATE TABLE products (id INT PRIMARY KEY, name VARCHAR(40) NOT NULL, qty INT NOT NULL)",
        db=fresh_db,
    )
    mariadb.sql(
        f"INSERT INTO products SELECT seq, CONCAT('p', seq), 0 FROM seq_1_to_{ROWS}", db=fresh_db
    )
    table = {"table": f"{fresh_db}.products", "index": es_index}
    common: dict[str, Any] = {
        "port": mariadb.port,
        "es_url": osmem.url,
        "redis_url": redis_url,
        "name": "rebuild",
    }
    old = write_config(
        tmp_path / "old.yaml", tables=[table], snapshot={"mode": "initial"}, **common
    )
    run_until_caught_up(old, timeout=120)
    assert osmem.count(es_index) == ROWS
    assert osmem.get_doc(es_index, "1")["_source"] == {"id": 1, "name": "p1", "qty": 0}  # type: ignore[index]

    new = write_config(
        tmp_path / "new.yaml", tables=[{**table, "rename": {"name": "title"}}], **common
    )
    failures: list[str] = []
    searches = 0
    stop = threading.Event()

    def search() -> None:
        nonlocal searches
        while not stop.is_set():
            try:
                with urllib.request.urlopen(f"{osmem.url}/{es_index}/_search?size=1", timeout=5):
                    searches += 1
            except (urllib.error.URLError, OSError) as exc:
                failures.append(str(exc))

    def write() -> None:
        rng = random.Random(3)
        conn = mariadb.connect(database=fresh_db)
        with conn.cursor() as cur:
            next_id = ROWS + 1
            while not stop.is_set():
                roll, target = rng.random(), rng.randint(1, ROWS)
                if roll < 0.7:
                    cur.execute("UPDATE products SET qty = qty + 1 WHERE id = %s", target)
                elif roll < 0.85:
                    cur.execute("DELETE FROM products WHERE id = %s", target)
                else:
                    cur.execute("INSERT INTO products VALUES (%s, 'fresh', 1)", next_id)
                    next_id += 1
                time.sleep(0.005)
        conn.close()

    threads = [threading.Thread(target=search), threading.Thread(target=write)]
    with CdcProcess(new) as proc:
        wait_for(lambda: "resuming from checkpoint" in proc.log(), what="the connector")
        for thread in threads:
            thread.start()
        result = subprocess.run(
            [sys.executable, "-m", "cdc", "snapshot", "--config", str(new), "--all", "--rebuild"],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        assert f"rebuilding {es_index}: {es_index}_v1 -> {es_index}_v2" in result.stdout
        wait_for(lambda: "now points at" in proc.log(), timeout=60, what="the alias to be swapped")
        time.sleep(1)
        stop.set()
        for thread in threads:
            thread.join()
        wait_for(
            lambda: osmem.all_docs(es_index) == _expected(mariadb, fresh_db),
            timeout=120,
            what="the rebuilt index to equal MySQL under the new mapping",
        )
        proc.terminate()
        assert proc.wait(timeout=10) == 0, proc.log()
    _, aliases = osmem.request("GET", f"/_alias/{es_index}")
    assert list(aliases) == [f"{es_index}_v2"]
    # The old index is left for the operator; it still answers searches by name.
    assert osmem.count(f"{es_index}_v1") > 0
    osmem.delete_index(f"{es_index}_v1")
    print(f"\nrebuild: {searches} searches through the alias during the rebuild, 0 failed")
    assert searches > 20
    assert failures == []
