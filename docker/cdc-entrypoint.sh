#!/bin/sh
# Entrypoint of the connector image.
#
# Secrets: for every variable NAME_FILE whose NAME starts with MYSQL_, ES_ or REDIS_, exports
# NAME with the content of that file (trailing newlines removed) and unsets NAME_FILE, so that
# `${NAME}` in the config works with Docker and Kubernetes secret files. Setting both NAME and
# NAME_FILE, or naming an unreadable file, is an error (exit 2).
#
# Command: arguments that start with `-`, or whose first word is not a program on PATH, are
# arguments of `cdc` (`run --until-caught-up`); anything else runs as given
# (`python /loadgen.py`). `cdc` reads its config from CDC_CONFIG unless --config is given.
set -eu

die() {
    echo "cdc-entrypoint: $*" >&2
    exit 2
}

# Names come from `env` rather than a fixed list so that any MYSQL_/ES_/REDIS_ secret a config
# refers to can be given as a file.
file_vars=$(env | sed -n -E 's/^((MYSQL|ES|REDIS)_[A-Za-z0-9_]*)_FILE=.*/\1/p')
for name in $file_vars; do
    # A line of a multi-line value can look like an assignment; only real variables count.
    eval "given=\${${name}_FILE+set}"
    [ -n "$given" ] || continue
    path=
    eval "path=\${${name}_FILE}"
    eval "already=\${${name}+set}"
    [ -z "$already" ] || die "both $name and ${name}_FILE are set; give only one"
    if [ ! -f "$path" ] || [ ! -r "$path" ]; then
        die "${name}_FILE: cannot read $path"
    fi
    value=$(cat "$path") || die "${name}_FILE: cannot read $path"
    export "$name=$value"
    unset "${name}_FILE"
done

if [ $# -eq 0 ]; then
    set -- run
fi
case $1 in
    -*) exec cdc "$@" ;;
esac
if command -v "$1" >/dev/null 2>&1; then
    exec "$@"
fi
exec cdc "$@"
