"""Repository-root conftest: its presence puts the repository root on ``sys.path`` (pytest's
default ``prepend`` import mode), so that tests can import the example applications in
``examples/`` however pytest is started (``pytest`` as well as ``python -m pytest``).

Fixtures live in ``tests/conftest.py``.
"""

from __future__ import annotations

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    """``--run-slow-faults``: also run the tests marked ``slow_fault`` (tests/faults/conftest.py
    deselects them otherwise, unless ``CI=true``). Options must be added by an initial conftest,
    hence here rather than in tests/faults/."""
    parser.addoption(
        "--run-slow-faults",
        action="store_true",
        default=False,
        help="also run the slow fault-injection tests (always run when CI=true)",
    )
