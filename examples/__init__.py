"""Example applications that enqueue sa_river jobs in their own transactions.

- ``examples.fastapi_app``: FastAPI with an ``AsyncSession`` and ``sa_river.insert_async``;
- ``examples.flask_app``: Flask with Flask-SQLAlchemy's ``db.session`` and ``sa_river.insert``.

Run them from the repository root (so that ``examples`` is importable); each directory has a
README. ``tests/integration/test_examples.py`` drives both end to end against PostgreSQL.
"""
