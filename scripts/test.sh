#!/usr/bin/env bash
# Sets up what is missing, then runs the quality gates (ruff lint, ruff format, mypy on cdc/, tests/
# and scripts/) and then the test suite.
# Extra arguments go to pytest. Every gate runs even after one fails, so a single run shows
# everything to fix; the exit status is non-zero if any of them failed.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

# Installs what is missing first (idempotent and quiet), so this one command works on a fresh
# Debian machine.
bash scripts/setup.sh

failed=()

gate() {
    local name=$1
    shift
    echo "== $name" >&2
    if ! "$@"; then
        failed+=("$name")
    fi
}

gate "ruff check" .venv/bin/ruff check .
gate "ruff format" .venv/bin/ruff format --check .
gate "mypy" .venv/bin/mypy
# Two workers (pytest-xdist): most integration tests wait on servers, cuts and timeouts rather
# than compute, so two run side by side in about 60% of the time; each worker starts servers
# of its own. CDC_TEST_WORKERS=0 runs everything in this process.
gate "pytest" .venv/bin/pytest -q -n "${CDC_TEST_WORKERS:-2}" --dist worksteal "$@"

if [[ ${#failed[@]} -gt 0 ]]; then
    echo "test: FAILED: ${failed[*]}" >&2
    exit 1
fi
echo "test: all gates passed" >&2
