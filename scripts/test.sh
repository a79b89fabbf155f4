#!/usr/bin/env bash
# Runs the quality gates (ruff lint, ruff format, mypy on cdc/) and then the test suite.
# Extra arguments go to pytest. Every gate runs even after one fails, so a single run shows
# everything to fix; the exit status is non-zero if any of them failed.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

[[ -x .venv/bin/pytest ]] || {
    echo "test: .venv is missing or incomplete; run: bash scripts/setup.sh" >&2
    exit 1
}

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
gate "mypy" .venv/bin/mypy cdc
gate "pytest" .venv/bin/pytest -q "$@"

if [[ ${#failed[@]} -gt 0 ]]; then
    echo "test: FAILED: ${failed[*]}" >&2
    exit 1
fi
echo "test: all gates passed" >&2
