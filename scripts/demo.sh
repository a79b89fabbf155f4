#!/usr/bin/env bash
# The local demo: a throwaway MariaDB (binlog ROW/FULL/FULL), Redis and osmem-server (an
# in-memory OpenSearch-compatible server standing in for Elasticsearch), the `demo.products`
# table, and the connector streaming it into the `products` index while rows change.
#
# Ports: MariaDB 3307, Redis 6380, osmem 9201 (override with DEMO_MYSQL_PORT, DEMO_REDIS_PORT,
# DEMO_ES_PORT). Everything lives under $DEMO_DIR (default /tmp/cdc-demo) and is stopped at the
# end; DEMO_KEEP=1 keeps the servers and the connector running until Ctrl-C.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
bash scripts/setup.sh

dir=${DEMO_DIR:-/tmp/cdc-demo}
mysql_port=${DEMO_MYSQL_PORT:-3307}
redis_port=${DEMO_REDIS_PORT:-6380}
es_port=${DEMO_ES_PORT:-9201}
export CDC_MYSQL_PORT=$mysql_port
export CDC_REDIS_URL=redis://127.0.0.1:$redis_port/0
export CDC_ES_URL=http://127.0.0.1:$es_port
es=$CDC_ES_URL
pids=()

cleanup() {
    local pid
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    rm -rf "$dir"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
sql() { mariadb --no-defaults -uroot -h127.0.0.1 -P"$mysql_port" demo -e "$1"; }
show() {
    curl -s -XPOST "$es/products/_refresh" >/dev/null
    echo "\$ curl -s '$es/products/_search?sort=id'"
    curl -s "$es/products/_search?sort=id&size=20" | .venv/bin/python -c '
import json, sys
hits = json.load(sys.stdin)["hits"]["hits"]
for h in hits:
    doc_id, source = h["_id"], json.dumps(h["_source"], ensure_ascii=False)
    print(f"  {doc_id:>3}  {source}")
print(f"  ({len(hits)} documents)")'
}
wait_port() {
    local port=$1 what=$2
    for _ in $(seq 1 100); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then return 0; fi
        sleep 0.2
    done
    echo "demo: $what did not start on port $port; see $dir" >&2
    exit 1
}

for port in "$mysql_port" "$redis_port" "$es_port"; do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
        echo "demo: port $port is in use; set DEMO_MYSQL_PORT/DEMO_REDIS_PORT/DEMO_ES_PORT" >&2
        exit 1
    fi
done
rm -rf "$dir" && mkdir -p "$dir"

step "Starting MariaDB on port $mysql_port (binlog_format=ROW, binlog_row_image=FULL, binlog_row_metadata=FULL)"
mariadb-install-db --no-defaults --datadir="$dir/mysql" --auth-root-authentication-method=normal \
    --user="$(id -un)" >"$dir/mysql-install.log" 2>&1
mariadbd --no-defaults --datadir="$dir/mysql" --port="$mysql_port" --socket="$dir/mysql.sock" \
    --bind-address=127.0.0.1 --server-id=1 --log-bin=mysql-bin --binlog-format=ROW \
    --binlog-row-image=FULL --binlog-row-metadata=FULL --innodb-buffer-pool-size=64M \
    --user="$(id -un)" >"$dir/mysql.log" 2>&1 &
pids+=($!)
wait_port "$mysql_port" MariaDB
for _ in $(seq 1 50); do
    mariadb --no-defaults -uroot -h127.0.0.1 -P"$mysql_port" -e 'SELECT 1' >/dev/null 2>&1 && break
    sleep 0.2
done
mariadb --no-defaults -uroot -h127.0.0.1 -P"$mysql_port" <<'SQL'
DELETE FROM mysql.global_priv WHERE User = '';
FLUSH PRIVILEGES;
CREATE USER 'cdc'@'%' IDENTIFIED BY 'cdc';
GRANT REPLICATION SLAVE, REPLICATION CLIENT, SELECT ON *.* TO 'cdc'@'%';
CREATE DATABASE demo;
CREATE TABLE demo.products (
  id INT PRIMARY KEY,
  name VARCHAR(100) NOT NULL,
  price DECIMAL(10,2) NOT NULL,
  tags SET('new','sale','eco'),
  attrs JSON,
  updated_at DATETIME(6) NOT NULL DEFAULT NOW(6) ON UPDATE NOW(6)
);
SQL

step "Starting Redis on port $redis_port and osmem-server (Elasticsearch stand-in) on port $es_port"
redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no --dir "$dir" \
    >"$dir/redis.log" 2>&1 &
pids+=($!)
osmem=$(.venv/bin/python -c 'import osmem_server; print(osmem_server.resolve_binary())')
"$osmem" --addr "127.0.0.1:$es_port" --no-stdin-watch --no-ja >"$dir/osmem.log" 2>&1 &
pids+=($!)
wait_port "$redis_port" Redis
wait_port "$es_port" osmem-server

step "Starting the connector: cdc run --config configs/demo.yaml (log: $dir/cdc.log)"
.venv/bin/cdc run --config configs/demo.yaml >"$dir/cdc.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 100); do
    grep -q "starting at the server's current position\|resuming from checkpoint" "$dir/cdc.log" && break
    sleep 0.1
done
sleep 0.5
sed 's/^/  /' "$dir/cdc.log"

step "INSERT three products"
sql "INSERT INTO products (id, name, price, tags, attrs) VALUES
     (1, 'Kettle', 39.90, 'new', '{\"watts\": 2200}'),
     (2, 'Teapot', 24.50, 'sale,eco', '{\"material\": \"clay\"}'),
     (3, 'Mug', 7.00, '', NULL)"
sleep 1.5
show

step "UPDATE a price, INSERT two more in one transaction, DELETE the mug"
sql "BEGIN; UPDATE products SET price = 34.90, tags = 'sale' WHERE id = 1;
     INSERT INTO products (id, name, price) VALUES (4, 'Cup', 5.00), (5, 'Saucer', 3.50); COMMIT;
     DELETE FROM products WHERE id = 3"
sleep 1.5
show

step "Change the primary key of the cup (id 4 -> 40): the old document goes, the new one comes"
sql "UPDATE products SET id = 40 WHERE id = 4"
sleep 1.5
show

step "Stored checkpoint (Redis key cdc:demo:checkpoint)"
.venv/bin/python - <<PY
import redis, json
print("  " + json.dumps(json.loads(redis.Redis(port=$redis_port).get("cdc:demo:checkpoint")), indent=None))
PY

if [[ -n ${DEMO_KEEP:-} ]]; then
    step "Running until Ctrl-C: try  mariadb -uroot -h127.0.0.1 -P$mysql_port demo  and  curl '$es/products/_search'"
    wait "${pids[-1]}"
fi
step "Done: stopping the connector and the servers"
