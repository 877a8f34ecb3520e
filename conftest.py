"""Repository-root conftest: its presence puts the repository root on ``sys.path`` (pytest's
default ``prepend`` import mode), so that tests can import the example applications in
``examples/`` however pytest is started (``pytest`` as well as ``python -m pytest``).

Fixtures live in ``tests/conftest.py``.
"""
