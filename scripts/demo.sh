#!/usr/bin/env bash
# Install sa_river with an embedded PostgreSQL and run the demo:
#
#   bash scripts/demo.sh [demo args...]
#
# Creates .venv if missing (needs only python3 >= 3.10), installs the project editable with the
# `binary` extra (psycopg's driver with its own libpq) and the `embedded` extra (the pgserver
# wheel), then runs `python -m sa_river demo`.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

PYTHON="${PYTHON:-python3}"
VENV=".venv"

if [[ ! -x "$VENV/bin/python" ]]; then
    echo "==> creating $VENV with $("$PYTHON" --version 2>&1)"
    "$PYTHON" -m venv "$VENV" || {
        echo "error: '$PYTHON -m venv' failed; on Debian/Ubuntu install the python3-venv package" >&2
        exit 1
    }
fi

echo "==> installing sa_river[binary,embedded] (editable)"
"$VENV/bin/python" -m pip install -q --disable-pip-version-check -e '.[binary,embedded]'

exec "$VENV/bin/python" -m sa_river demo "$@"
