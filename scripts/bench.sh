#!/usr/bin/env bash
# The benchmark of issue 6 in one command from a fresh clone: prepares the machine and the venv
# (scripts/setup.sh), then runs scripts/bench.py with the given options, e.g.
#   scripts/bench.sh                      # throughput, 300,000 row changes per table shape
#   scripts/bench.sh --mode lag           # commit-to-acknowledge lag at 5,000 rows/s
#   scripts/bench.sh --shape wide --profile
#   scripts/bench.sh --shape wide --es-rtt 100   # also with a 100 ms round trip to Elasticsearch
#   scripts/bench.sh --mode trees         # denormalized documents (scripts/bench_trees.py)
#   scripts/bench.sh --mode targets       # every figure of the performance targets, met or not
# See `scripts/bench.sh --help` for every option.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
bash scripts/setup.sh
for ((i = 1; i <= $#; i++)); do
    if [[ ${!i} == "--mode" ]]; then
        next=$((i + 1))
        if [[ ${!next:-} == "trees" || ${!next:-} == "targets" ]]; then
            args=("${@:1:i-1}" "${@:next+1}")
            exec .venv/bin/python "scripts/bench_${!next}.py" "${args[@]}"
        fi
    fi
done
exec .venv/bin/python scripts/bench.py "$@"
