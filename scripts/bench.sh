#!/usr/bin/env bash
# The benchmark of issue 6 in one command from a fresh clone: prepares the machine and the venv
# (scripts/setup.sh), then runs scripts/bench.py with the given options, e.g.
#   scripts/bench.sh                      # throughput, 300,000 row changes per table shape
#   scripts/bench.sh --mode lag           # commit-to-acknowledge lag at 5,000 rows/s
#   scripts/bench.sh --shape wide --profile
# See `scripts/bench.sh --help` for every option.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
bash scripts/setup.sh
exec .venv/bin/python scripts/bench.py "$@"
