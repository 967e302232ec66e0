#!/usr/bin/env bash
# Set up everything the test suite needs, then run it: the README's second command.
# The shared-study test starts a throw-away PostgreSQL server, so the server binaries must be
# installed (Debian's package; needs root or sudo the first time).
set -euo pipefail
cd "$(dirname "$0")/.."
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
    echo "test: installing PostgreSQL (for tests/test_postgres_sweep.py)" >&2
    SUDO=$([[ $(id -u) == 0 ]] || echo sudo)
    $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq postgresql >/dev/null
fi
bash scripts/setup.sh
exec .venv/bin/python -m pytest -q "$@"
