#!/usr/bin/env bash
# Smoke test of the container image on a machine without a Docker engine (run as root).
#
# Builds docker/Dockerfile with buildah against a local Debian bookworm base made by
# debootstrap (cached in $CDC_SMOKE_CACHE, default /var/tmp/cdc-smoke, and in container
# storage as localhost/cdc-base:bookworm), then runs the image with `buildah run --isolation
# chroot`, which shares the host's network, against throwaway MariaDB, Redis and osmem-server
# processes on random ports of 127.0.0.1. Checks: the image's configuration and user, that it
# has no compiler but has the compiled row path, `cdc --help`, the entrypoint's *_FILE
# secrets, and `cdc run --until-caught-up` with the shipped docker/connector.yaml carrying
# inserts, updates, soft and hard deletes and docker/loadgen.py's changes into osmem, resuming
# from its Redis checkpoint each time.
#
# Prints PASS/FAIL and the time of every step; exits non-zero on the first failure, after
# showing the tail of that step's log. Servers and the working container are removed on exit;
# the base image, the built image and its layers stay cached. SMOKE_REBUILD_BASE=1 rebuilds the
# base; SMOKE_KEEP=1 keeps the working directory (logs, data) for a look afterwards.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
# Debian keeps mariadbd in /usr/sbin, which a non-login root shell may lack.
PATH=$PATH:/usr/sbin:/usr/local/sbin

cache=${CDC_SMOKE_CACHE:-/var/tmp/cdc-smoke}
mirror=${SMOKE_DEBIAN_MIRROR:-http://deb.debian.org/debian}
base_image=localhost/cdc-base:bookworm
image=localhost/cdc:smoke
ca_bundle=/etc/ssl/certs/ca-certificates.crt
venv_python=$root/.venv/bin/python
host=127.0.0.1

work=$(mktemp -d /tmp/cdc-smoke.XXXXXX)
logs=$work/logs
mkdir -p "$logs"
pids=()
ctr=
step_no=0
started_all=$SECONDS

cleanup() {
    local status=$?
    if [[ -n $current_step ]]; then
        printf 'FAIL %-28s %4ds\n' "$current_step" $((SECONDS - step_start)) >&3
        echo "--- last 40 lines of $current_log ---" >&3
        tail -n 40 "$current_log" >&3
    fi
    if [[ -n $ctr ]]; then
        buildah rm "$ctr" >/dev/null 2>&1 || true
    fi
    local pid
    for pid in "${pids[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${pids[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    if [[ -n ${SMOKE_KEEP:-} ]]; then
        echo "smoke: kept $work" >&3
    else
        rm -rf "$work"
    fi
    exit "$status"
}
# The original stdout, for messages printed while a step's output goes to its log.
exec 3>&1
current_step=
current_log=
step_start=0
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Runs one named step with its output in its own log and prints PASS with the time taken. The
# step runs as a plain command, not inside `if`, so that `set -e` still stops it at its first
# failing command; the EXIT trap then prints FAIL with the log's tail.
step() {
    current_step=$1
    shift
    step_no=$((step_no + 1))
    current_log=$logs/$(printf '%02d' "$step_no")-${current_step// /-}.log
    step_start=$SECONDS
    "$@" >"$current_log" 2>&1
    local line note
    line=$(printf 'PASS %-28s %4ds' "$current_step" $((SECONDS - step_start)))
    note=$(grep -h '^note: ' "$current_log" | tail -n 1 | cut -c7-) || true
    [[ -z $note ]] || line+="  ($note)"
    echo "$line"
    current_step=
}

note() {
    echo "note: $*"
}

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Polls a command until it succeeds, for up to $1 seconds.
wait_for() {
    local seconds=$1
    shift
    local deadline=$((SECONDS + seconds))
    until "$@" >/dev/null 2>&1; do
        if ((SECONDS >= deadline)); then
            echo "gave up after ${seconds}s waiting for: $*"
            return 1
        fi
        sleep 0.2
    done
}

# --- steps -----------------------------------------------------------------------------------

install_tools() {
    local missing=() tool
    for tool in buildah podman debootstrap curl; do
        command -v "$tool" >/dev/null || missing+=("$tool")
    done
    if ((${#missing[@]})); then
        DEBIAN_FRONTEND=noninteractive apt-get update -q
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}"
        note "installed ${missing[*]}"
    else
        note "present"
    fi
    for tool in mariadbd mariadb-install-db mariadb redis-server; do
        command -v "$tool" >/dev/null || {
            echo "$tool is missing: run scripts/setup.sh first"
            return 1
        }
    done
    [[ -x $venv_python ]] || {
        echo "$venv_python is missing: run scripts/setup.sh first"
        return 1
    }
}

make_base() {
    if [[ -n ${SMOKE_REBUILD_BASE:-} ]]; then
        podman rmi -f "$base_image" || true
        rm -rf "$cache/rootfs"
    fi
    if podman image exists "$base_image"; then
        note "cached image"
        return
    fi
    mkdir -p "$cache"
    if [[ ! -e $cache/rootfs/.complete ]]; then
        rm -rf "$cache/rootfs" "$cache/rootfs.partial"
        debootstrap --variant=minbase \
            --include=python3,python3-venv,python3-pip,ca-certificates \
            bookworm "$cache/rootfs.partial" "$mirror"
        # Downloaded packages and apt lists would only make the image bigger.
        rm -rf "$cache/rootfs.partial"/var/cache/apt/archives/*.deb \
            "$cache/rootfs.partial"/var/lib/apt/lists/*
        touch "$cache/rootfs.partial/.complete"
        mv "$cache/rootfs.partial" "$cache/rootfs"
        note "debootstrapped and imported"
    else
        note "cached rootfs, imported"
    fi
    # An imported tarball has no environment; PATH must be set for the build's RUN steps.
    tar -C "$cache/rootfs" --exclude=./.complete -c . |
        podman import \
            --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
            --change 'ENV LANG=C.UTF-8' \
            --change 'CMD ["python3"]' \
            - "$base_image"
}

build_image() {
    # The build context is a copy of what the image is built from, taken at once: others may
    # edit the tree during the build, and the image is compared with exactly what it was given.
    local context=$work/context
    mkdir -p "$context"
    cp -a pyproject.toml setup.py README.md .dockerignore cdc docker "$context"/
    # Docker's image format: the OCI format has no HEALTHCHECK and buildah would drop it.
    (cd "$context" && buildah bud --layers --isolation chroot --format docker \
        --build-arg BASE="$base_image" \
        --volume "$ca_bundle:$ca_bundle:ro" \
        -f docker/Dockerfile -t "$image" .)
    # A layer cache must never hand out older code than it was given.
    local probe
    probe=$(buildah from "$image")
    local installed
    installed=$(buildah run --isolation chroot "$probe" -- \
        sh -c 'cd /opt/cdc/lib/python3*/site-packages/cdc && find . -name "*.py" | sort | xargs md5sum') || true
    # The compiled row path is in the image and current (not the Python fallback).
    local native
    native=$(buildah run --isolation chroot "$probe" -- /opt/cdc/bin/python -c \
        'import cdc.native as n; print("compiled" if n.rownative and n.docnative else "missing")') || true
    buildah rm "$probe" >/dev/null
    if [[ $native != compiled ]]; then
        echo "the image lacks the compiled row path (cdc.native says: ${native:-nothing})"
        return 1
    fi
    diff <(echo "$installed") <(cd "$context/cdc" && find . -name "*.py" | sort | xargs md5sum) || {
        echo "the image's cdc package differs from the cdc/ it was built from (diff above)"
        return 1
    }
    note "$(buildah images --format '{{.Size}}' "$image" | head -n 1), code as given, compiled row path"
}

start_servers() {
    mysql_port=$(free_port)
    redis_port=$(free_port)
    osmem_port=$(free_port)
    mkdir -p "$work/mariadb/tmp" "$work/redis"

    mariadb-install-db --no-defaults --user=root --datadir="$work/mariadb/data" \
        --auth-root-authentication-method=normal --skip-test-db --skip-name-resolve
    # The connector's prerequisites: row binlog with full images and full metadata.
    mariadbd --no-defaults --user=root --datadir="$work/mariadb/data" \
        --port="$mysql_port" --bind-address=$host --socket="$work/mariadb/mysqld.sock" \
        --pid-file="$work/mariadb/mysqld.pid" --tmpdir="$work/mariadb/tmp" \
        --skip-name-resolve --server-id=1 --log-bin=mysql-bin --binlog-format=ROW \
        --binlog-row-image=FULL --binlog-row-metadata=FULL \
        --character-set-server=utf8mb4 --innodb-buffer-pool-size=64M \
        >"$work/mariadb/mariadbd.log" 2>&1 &
    pids+=($!)
    redis-server --port "$redis_port" --bind $host --save '' --appendonly no \
        --dir "$work/redis" >"$work/redis/redis.log" 2>&1 &
    pids+=($!)
    local osmem
    osmem=$("$venv_python" -c 'import osmem_server; print(osmem_server.resolve_binary())')
    "$osmem" --addr "$host:$osmem_port" --no-stdin-watch --no-ja >"$work/osmem.log" 2>&1 &
    pids+=($!)

    wait_for 60 sql -e 'SELECT 1' || {
        tail -n 20 "$work/mariadb/mariadbd.log"
        return 1
    }
    wait_for 20 redis-cli -p "$redis_port" ping
    wait_for 30 curl -fsS "http://$host:$osmem_port/"
    # The demo's own users, schema and seed rows, as compose.yaml gives them to MySQL. The
    # seed rows predate the connector's first position and are never copied: removing them
    # lets the table and the index be compared whole.
    sql <docker/mysql-init.sql
    sql -e 'DELETE FROM shop.customers'
    note "mariadb :$mysql_port, redis :$redis_port, osmem :$osmem_port"
}

sql() {
    mariadb --socket="$work/mariadb/mysqld.sock" -uroot --batch --skip-column-names "$@"
}

# Runs a command in the working container, as the image's user, on the host's network.
in_ctr() {
    buildah run --isolation chroot "${ctr_env[@]}" "$ctr" -- "$@"
}

# The image's configuration as `docker run` would use it.
check_image_config() {
    local config
    config=$(buildah inspect --type image "$image")
    python3 - "$config" <<'EOF'
import json, sys
config = json.loads(sys.argv[1])["Docker"]["config"]
print(json.dumps(config, indent=1))
expected = {
    "User": "10001:10001",
    "Entrypoint": ["/usr/local/bin/cdc-entrypoint"],
    "Cmd": ["run"],
    "StopSignal": "SIGTERM",
}
wrong = {k: (config.get(k), v) for k, v in expected.items() if config.get(k) != v}
assert not wrong, f"image config differs (got, expected): {wrong}"
health = (config.get("Healthcheck") or {}).get("Test")
assert health == ["CMD", "/usr/local/bin/cdc-entrypoint", "health"], health
assert "CDC_CONFIG=/etc/cdc/connector.yaml" in config["Env"], config["Env"]
assert config["Labels"].get("org.opencontainers.image.title") == "binlog-es-cdc", config["Labels"]
EOF
    note "user, entrypoint, cmd, healthcheck, stop signal, labels"
}

make_container() {
    ctr=$(buildah from "$image")
    buildah copy "$ctr" docker/connector.yaml /etc/cdc/connector.yaml
    buildah copy "$ctr" docker/loadgen.py /opt/loadgen.py
    printf 'cdc-demo-password\n' >"$work/mysql_password"
    buildah copy --chmod 0444 "$ctr" "$work/mysql_password" /etc/cdc/secrets/mysql_password
    ctr_env=(
        --env MYSQL_HOST="$host"
        --env MYSQL_PORT="$mysql_port"
        --env MYSQL_PASSWORD_FILE=/etc/cdc/secrets/mysql_password
        --env ES_URL="http://$host:$osmem_port"
        --env REDIS_URL="redis://$host:$redis_port/0"
        --env CDC_NAME=smoke
    )
    note "$ctr"
}

check_runtime() {
    local uid
    uid=$(in_ctr id -u)
    [[ $uid == 10001 ]] || {
        echo "runs as uid $uid, not 10001"
        return 1
    }
    local compiler
    if compiler=$(in_ctr sh -c 'command -v gcc || command -v cc || command -v g++'); then
        echo "the image has a compiler: $compiler"
        return 1
    fi
    # chroot isolation shares the host's network namespace: a host-only server is reachable.
    in_ctr python -c "import socket; socket.create_connection(('$host', $osmem_port), 3).close()"
    note "uid $uid, no compiler, host network reachable"
}

check_help() {
    local help
    help=$(in_ctr cdc --help)
    echo "$help"
    grep -q 'run' <<<"$help"
    help=$(in_ctr cdc-entrypoint --help)
    grep -q 'run' <<<"$help"
}

check_secret_files() {
    # Both the variable and its _FILE: the entrypoint must refuse.
    if in_ctr env MYSQL_PASSWORD=x cdc-entrypoint --help; then
        echo "the entrypoint accepted MYSQL_PASSWORD and MYSQL_PASSWORD_FILE together"
        return 1
    fi
    local seen
    # shellcheck disable=SC2016  # expanded by the shell inside the container
    seen=$(in_ctr cdc-entrypoint sh -c 'printf %s "$MYSQL_PASSWORD"')
    [[ $seen == cdc-demo-password ]] || {
        echo "MYSQL_PASSWORD from MYSQL_PASSWORD_FILE is '$seen'"
        return 1
    }
    note "MYSQL_PASSWORD_FILE read"
}

# One `cdc run --until-caught-up` through the entrypoint, as `docker run IMAGE ...` would do.
cdc_catch_up() {
    in_ctr cdc-entrypoint run --config /etc/cdc/connector.yaml --until-caught-up
}

osmem() {
    curl -fsS -H 'Content-Type: application/json' "$@"
}

# Documents of the `customers` index as "id tier balance", sorted by id.
index_state() {
    osmem -X POST "http://$host:$osmem_port/customers/_refresh" >/dev/null
    osmem -X POST "http://$host:$osmem_port/customers/_search" \
        -d '{"size": 10000, "sort": [{"_id": "asc"}]}' |
        python3 -c '
import json, sys
hits = json.load(sys.stdin)["hits"]["hits"]
for hit in sorted(hits, key=lambda h: int(h["_id"])):
    print(hit["_id"], hit["_source"]["tier"], hit["_source"]["balance"])
'
}

# Live rows of shop.customers in the same shape.
table_state() {
    sql -e 'SELECT id, tier, balance FROM shop.customers WHERE is_deleted = 0 ORDER BY id' |
        tr '\t' ' '
}

first_run() {
    cdc_catch_up
    local count
    count=$(osmem "http://$host:$osmem_port/customers/_count" | python3 -c \
        'import json, sys; print(json.load(sys.stdin)["count"])')
    # The first run starts at the server's position and copies no earlier row.
    [[ $count == 0 ]] || {
        echo "expected an empty index after the first run, found $count documents"
        return 1
    }
    redis-cli -p "$redis_port" --scan --pattern 'cdc*' | grep -q . || {
        echo "no checkpoint key in Redis"
        return 1
    }
    note "index created, checkpoint in Redis"
}

stream_changes() {
    sql shop <<'EOF'
INSERT INTO customers (email, name, tier, balance, attributes, internal_note) VALUES
    ('smoke1@example.com', 'Smoke One', 'free', 10.50, '{"country": "DE"}', 'secret'),
    ('smoke2@example.com', 'Smoke Two', 'pro', 20.25, '{"country": "FR"}', 'secret'),
    ('smoke3@example.com', 'Smoke Three', 'enterprise', 30.00, NULL, 'secret');
UPDATE customers SET tier = 'pro', balance = 99.99 WHERE email = 'smoke1@example.com';
UPDATE customers SET is_deleted = 1 WHERE email = 'smoke2@example.com';
DELETE FROM customers WHERE email = 'smoke3@example.com';
EOF
    cdc_catch_up
    local id
    id=$(sql -e "SELECT id FROM shop.customers WHERE email = 'smoke1@example.com'")
    local doc
    doc=$(osmem "http://$host:$osmem_port/customers/_doc/$id")
    echo "$doc"
    python3 - "$doc" <<'EOF'
import json, sys
source = json.loads(sys.argv[1])["_source"]
expected = {"full_name": "Smoke One", "tier": "pro", "balance": "99.99",
            "attributes": {"country": "DE"}, "is_deleted": 0}
wrong = {k: (source.get(k), v) for k, v in expected.items() if source.get(k) != v}
assert not wrong, f"document fields differ (got, expected): {wrong}"
assert "internal_note" not in source, "excluded column internal_note is in the document"
assert "name" not in source, "renamed column name is in the document under its old name"
EOF
    diff <(table_state) <(index_state)
    note "$(index_state | wc -l) document(s) match the table"
}

run_loadgen() {
    in_ctr cdc-entrypoint python /opt/loadgen.py --host $host --port "$mysql_port" \
        --rate 20 --duration 5 --seed 7
    cdc_catch_up
    diff <(table_state) <(index_state)
    note "$(index_state | wc -l) documents match the table after the load"
}

# Process ids below $1, children first-level and deeper.
descendants() {
    local child
    for child in $(pgrep -P "$1"); do
        echo "$child"
        descendants "$child"
    done
}

# `cdc run` without --until-caught-up, as the image's default command: a row inserted while it
# runs must reach the index, and SIGTERM (what `docker stop` sends) must stop it with exit 0.
# buildah kills its child on SIGTERM instead of passing the signal on, so the signal goes to the
# connector's own process (chroot isolation shares the host's process ids).
live_then_sigterm() {
    local out=$work/live.log
    # No --config: the image's CDC_CONFIG names it, as for its HEALTHCHECK.
    in_ctr cdc-entrypoint run >"$out" 2>&1 &
    local runner=$!
    # On a failure below, cleanup stops buildah, which kills the connector with it.
    pids+=("$runner")
    wait_for 30 grep -q 'resuming from checkpoint' "$out"
    # The image's HEALTHCHECK command, while the connector runs.
    wait_for 20 in_ctr cdc-entrypoint health
    local connector=
    local pid
    for pid in $(descendants "$runner"); do
        if tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q 'bin/cdc run'; then
            connector=$pid
        fi
    done
    [[ -n $connector ]] || {
        echo "no connector process below buildah ($runner)"
        return 1
    }
    sql shop -e "INSERT INTO customers (email, name) VALUES ('live@example.com', 'Live One')"
    local id
    id=$(sql -e "SELECT id FROM shop.customers WHERE email = 'live@example.com'")
    wait_for 20 osmem "http://$host:$osmem_port/customers/_doc/$id"
    local stop_start=$SECONDS
    kill -TERM "$connector"
    local status=0
    wait "$runner" || status=$?
    local kept=()
    for pid in "${pids[@]}"; do
        [[ $pid == "$runner" ]] || kept+=("$pid")
    done
    pids=("${kept[@]}")
    cat "$out"
    [[ $status == 0 ]] || {
        echo "exit status $status after SIGTERM"
        return 1
    }
    grep -q 'received SIGTERM' "$out"
    grep -q 'stopped: ' "$out"
    note "healthy while running; row streamed live; exit 0 $((SECONDS - stop_start))s after SIGTERM"
}

echo "container smoke test: $image from $base_image (work dir $work)"
step "tools" install_tools
step "base image" make_base
step "build image" build_image
step "image config" check_image_config
step "start servers" start_servers
step "container" make_container
step "runtime: user, compiler, net" check_runtime
step "cdc --help" check_help
step "secrets from *_FILE" check_secret_files
step "first run (position only)" first_run
step "changes reach the index" stream_changes
step "loadgen, then catch up" run_loadgen
step "live stream, SIGTERM" live_then_sigterm
echo "PASS all $step_no steps in $((SECONDS - started_all))s"
