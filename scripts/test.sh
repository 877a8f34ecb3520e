#!/usr/bin/env bash
# The test command: lint, format check, strict typing, the docs build, then the test suite.
#
#   bash scripts/test.sh [pytest args...]
#
# Works on a fresh machine with only python3 (>= 3.10): creates .venv if missing and installs
# the project editable with its `dev` extra. Tests use SA_RIVER_TEST_DATABASE_URL when set, else a
# PostgreSQL server on 127.0.0.1:5432, else an embedded server from the pgserver wheel.
# Every step runs; the script fails if any step fails.
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
PY="$VENV/bin/python"

echo "==> installing sa_river[dev] (editable)"
"$PY" -m pip install -q --disable-pip-version-check -e '.[dev]'

failed=()

step() {
    local name="$1"
    shift
    echo "==> $name"
    if ! "$@"; then
        failed+=("$name")
    fi
}

step "ruff check" "$PY" -m ruff check .
step "ruff format --check" "$PY" -m ruff format --check .
step "mypy --strict sa_river examples" "$PY" -m mypy --strict sa_river examples
SITE_DIR="$(mktemp -d)"
trap 'rm -rf "$SITE_DIR"' EXIT
step "mkdocs build --strict" env NO_MKDOCS_2_WARNING=1 \
    "$PY" -m mkdocs build --strict --quiet --site-dir "$SITE_DIR"

# The slow fault-injection tests (tests/faults, marker slow_fault) run in CI only.
PYTEST_ARGS=()
if [[ "${CI:-}" == "true" ]]; then
    PYTEST_ARGS+=(--run-slow-faults)
fi

echo "==> pytest ${PYTEST_ARGS[*]:-} $*"
set +e
"$PY" -m pytest ${PYTEST_ARGS[@]+"${PYTEST_ARGS[@]}"} "$@"
status=$?
set -e
if [[ $status -eq 5 ]]; then
    echo "error: pytest collected no tests" >&2
    failed+=("pytest (no tests collected)")
elif [[ $status -ne 0 ]]; then
    failed+=("pytest (exit $status)")
fi

if [[ ${#failed[@]} -gt 0 ]]; then
    printf 'FAILED: %s\n' "${failed[@]}" >&2
    exit 1
fi
echo "OK: ruff, mypy, mkdocs and pytest passed"
