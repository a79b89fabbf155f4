#!/usr/bin/env bash
# Prepares a Debian 12 machine to develop and test the connector:
#   1. installs the system packages the tests need (promtool comes with `prometheus`), if any
#      is missing (as root, or via sudo),
#      without starting their services: the tests run throwaway servers of their own;
#   2. creates .venv in the repository root, if missing;
#   3. installs the project with its test extras into .venv, when pyproject.toml, setup.py or
#      the C sources of the compiled row path (cdc/**/*.c) changed; the install compiles them.
# Safe to run again. Quiet unless something fails; VERBOSE=1 shows every step.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

packages=(mariadb-server mariadb-client redis-server redis-sentinel python3-venv python3-dev build-essential curl prometheus)
venv=.venv
stamp=$venv/.installed-build-inputs.sha256

die() {
    echo "setup: error: $*" >&2
    exit 1
}

say() {
    if [[ -n ${VERBOSE:-} ]]; then echo "setup: $*" >&2; fi
}

# Runs a command with its output kept in a file, shown only if the command fails.
quietly() {
    local out
    out=$(mktemp)
    if ! "$@" >"$out" 2>&1; then
        echo "setup: error: command failed: $*" >&2
        tail -n 40 "$out" >&2
        rm -f "$out"
        exit 1
    fi
    if [[ -n ${VERBOSE:-} ]]; then cat "$out" >&2; fi
    rm -f "$out"
}

as_root() {
    if [[ $EUID -eq 0 ]]; then
        "$@"
    elif command -v sudo >/dev/null; then
        sudo "$@"
    else
        die "need root to run '$*'; run this script as root or install sudo"
    fi
}

install_packages() {
    if ! command -v dpkg-query >/dev/null || ! command -v apt-get >/dev/null; then
        echo "setup: warning: not a Debian system; install these yourself: ${packages[*]}" >&2
        return
    fi
    local missing=() pkg
    for pkg in "${packages[@]}"; do
        if [[ $(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null) != "install ok installed" ]]; then
            missing+=("$pkg")
        fi
    done
    if [[ ${#missing[@]} -eq 0 ]]; then
        say "system packages present"
        return
    fi
    say "installing ${missing[*]}"
    # Debian starts a daemon when its package is installed unless policy-rc.d says no; the
    # system MariaDB and Redis are not needed, so keep them stopped (and leave an existing
    # policy alone).
    local policy=/usr/sbin/policy-rc.d
    if [[ ! -e $policy ]]; then
        as_root sh -c "printf '#!/bin/sh\nexit 101\n' > $policy && chmod 755 $policy"
        # shellcheck disable=SC2064  # the path is fixed now, on purpose
        trap "as_root rm -f $policy" EXIT
        trap 'exit 130' INT
        trap 'exit 143' TERM
    fi
    # A fresh machine often runs unattended upgrades at boot: wait for their dpkg lock.
    local apt=(env DEBIAN_FRONTEND=noninteractive apt-get -q -o DPkg::Lock::Timeout=600)
    quietly as_root "${apt[@]}" update
    quietly as_root "${apt[@]}" install -y --no-install-recommends "${missing[@]}"
}

make_venv() {
    if [[ -x $venv/bin/python ]]; then
        "$venv/bin/python" -c 'import sys' 2>/dev/null ||
            die "$root/$venv is broken (its python does not run); remove it and run again"
        say "$venv present"
        return
    fi
    command -v python3 >/dev/null || die "python3 is not installed"
    python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' ||
        die "python3 is $(python3 -V 2>&1 | cut -d' ' -f2); the project needs 3.11 or newer"
    say "creating $venv"
    quietly python3 -m venv "$venv"
}

install_project() {
    local want
    # Everything the install reads to build: the metadata, the extension's build script and
    # its C sources (an editable install compiles them in place, so a changed .c needs a rerun).
    want=$(find pyproject.toml setup.py cdc -name pyproject.toml -o -name setup.py -o -name '*.c' |
        LC_ALL=C sort | xargs sha256sum | sha256sum | cut -d' ' -f1)
    if [[ -f $stamp && $(cat "$stamp") == "$want" ]] && "$venv/bin/python" -c 'import cdc' 2>/dev/null; then
        say "project already installed for these build inputs"
        return
    fi
    say "installing the project with its test extras"
    quietly "$venv/bin/python" -m pip install --disable-pip-version-check -q -e '.[test]'
    echo "$want" >"$stamp"
}

install_packages
make_venv
install_project
say "done"
