#!/usr/bin/env bash
# The test command: lint, format check, strict typing, the docs build, then the test suite.
#
#   bash scripts/test.sh [pytest args...]
#
# Works on a fresh machine with only python3 (>= 3.10): creates .venv if missing and installs
# the project editable with its `dev` extra. Tests use SA_RIVER_TEST_DATABASE_URL when set, else a
# PostgreSQL server on 127.0.0.1:5432, else an embedded server from the pgserver wheel.
# Every step runs; the script fails if any step fails. With CI=true it also runs the slow
# fault-injection tests and, side by side, the tests on every other Python version the project
# declares (SA_RIVER_ALL_PYTHONS=1 does the latter locally) and with every dependency at the
# lowest version pyproject.toml allows (SA_RIVER_LOWEST_DEPS=1 does that locally).
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

# The other Python versions the project declares (pyproject classifiers), in CI or when
# SA_RIVER_ALL_PYTHONS=1: unit and integration tests, without the slow ones, each in a venv of
# its own (.venv-3.X). They run side by side (the suite mostly waits on the database), after
# the main run, so the timing-sensitive fault tests above ran alone; so does the lowest-versions
# run below.
declared_pythons() {
    sed -n 's/.*"Programming Language :: Python :: \(3\.[0-9]*\)".*/\1/p' pyproject.toml
}

other_pythons() {
    local main_version version
    main_version="$("$PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
    for version in $(declared_pythons); do
        [[ "$version" == "$main_version" ]] || echo "$version"
    done
}

find_python() {
    local version="$1" candidate
    for candidate in "python$version" "$HOME"/.pyenv/versions/"$version".*/bin/python; do
        if command -v "$candidate" >/dev/null 2>&1 &&
            [[ "$("$candidate" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null)" == "$version" ]]; then
            command -v "$candidate"
            return 0
        fi
    done
    return 1
}

pids=()
runs=()
lowest_run=""
if [[ "${CI:-}" == "true" || "${SA_RIVER_LOWEST_DEPS:-}" == "1" ]]; then
    lowest_run=1
fi

if [[ "${CI:-}" == "true" || "${SA_RIVER_ALL_PYTHONS:-}" == "1" ]]; then
    for version in $(other_pythons); do
        if [[ -n "$lowest_run" && "$version" == "$(declared_pythons | head -n 1)" ]]; then
            # The lowest-versions run below is on this Python: a second run of the same suite
            # beside it would only add a fourth process to a two-core machine.
            echo "==> Python $version: tested by the lowest-versions run"
            continue
        fi
        if ! interpreter="$(find_python "$version")"; then
            echo "error: Python $version (declared in pyproject.toml) is not installed" >&2
            failed+=("python $version (not installed)")
            continue
        fi
        echo "==> Python $version ($interpreter): venv .venv-$version, unit and integration tests"
        (
            if [[ ! -x ".venv-$version/bin/python" ]]; then
                "$interpreter" -m venv ".venv-$version"
            fi
            ".venv-$version/bin/python" -m pip install -q --disable-pip-version-check -e '.[dev]' &&
                ".venv-$version/bin/python" -m pytest -q -p no:cacheprovider -m "not slow" \
                    tests/unit tests/integration
        ) >".venv-$version.log" 2>&1 &
        pids+=("$!")
        runs+=("$version")
    done
fi

# The lowest versions, in CI or when SA_RIVER_LOWEST_DEPS=1: every direct dependency (and each
# extra's) pinned to the floor pyproject.toml declares (ci/constraints-lowest.txt, kept equal to
# the floors by tests/unit/test_packaging.py), on the oldest declared Python, in .venv-lowest,
# side by side with the runs above; their own dependencies resolve to the newest allowed.
if [[ -n "$lowest_run" ]]; then
    oldest="$(declared_pythons | head -n 1)"
    if ! interpreter="$(find_python "$oldest")"; then
        echo "error: Python $oldest (the oldest in pyproject.toml) is not installed" >&2
        failed+=("lowest versions (Python $oldest not installed)")
    else
        echo "==> lowest versions on Python $oldest ($interpreter): venv .venv-lowest," \
            "ci/constraints-lowest.txt, unit and integration tests"
        (
            if [[ ! -x ".venv-lowest/bin/python" ]]; then
                "$interpreter" -m venv ".venv-lowest"
            fi
            .venv-lowest/bin/python -m pip install -q --disable-pip-version-check -e '.[dev]' \
                -c ci/constraints-lowest.txt &&
                .venv-lowest/bin/python -m pytest -q -p no:cacheprovider -m "not slow" \
                    tests/unit tests/integration
        ) >".venv-lowest.log" 2>&1 &
        pids+=("$!")
        runs+=("lowest")
    fi
fi

for i in "${!pids[@]}"; do
    run="${runs[$i]}"
    label="Python $run"
    [[ "$run" != "lowest" ]] || label="lowest versions"
    if wait "${pids[$i]}"; then
        echo "==> $label: $(tail -n 1 ".venv-$run.log")"
    else
        echo "==> $label failed; the end of .venv-$run.log:" >&2
        tail -n 60 ".venv-$run.log" >&2
        failed+=("pytest with $label")
    fi
done

if [[ ${#failed[@]} -gt 0 ]]; then
    printf 'FAILED: %s\n' "${failed[@]}" >&2
    exit 1
fi
echo "OK: ruff, mypy, mkdocs and pytest passed"
