"""Alembic environment of sa_river's shipped revisions (Door 2: standalone).

Run by ``alembic.command.*`` on :func:`sa_river.migrate.alembic_config`, which is what
``python -m sa_river migrate ...`` does. Where the database comes from, first match wins:

1. ``config.attributes["connection"]``: a SQLAlchemy ``Connection`` (Alembic's "Sharing a
   Connection" recipe). If it is in a transaction, everything runs inside it and the caller
   commits; otherwise each revision gets its own transaction;
2. the ``sqlalchemy.url`` main option;
3. the ``SA_RIVER_DATABASE_URL`` environment variable.

History goes to ``sa_river_alembic_version``. Every online run holds sa_river's migration
advisory lock, like :func:`sa_river.migrate.upgrade` (Door 1), so the doors never race.

Offline (``--sql``) mode needs no database: it renders PostgreSQL SQL, each revision in its own
``BEGIN``/``COMMIT`` (``transaction_per_migration``).

Why one transaction per revision when we own the connection: the ``river_job_state`` enum may
gain its ``pending`` value by ``ALTER TYPE ... ADD VALUE`` (a database whose earlier versions came
from River itself), and PostgreSQL refuses to use such a value before it is committed.
"""

from __future__ import annotations

import os

from alembic import context
from sqlalchemy import Connection, create_engine
from sqlalchemy.pool import NullPool

from sa_river.migrate import DATABASE_URL_ENV, VERSION_TABLE, migration_lock

config = context.config


def run_migrations_offline() -> None:
    url = config.get_main_option("sqlalchemy.url")
    context.configure(
        # The URL only chooses the dialect here; without one, PostgreSQL.
        url=url or None,
        dialect_name=None if url else "postgresql",
        literal_binds=True,
        version_table=VERSION_TABLE,
        transaction_per_migration=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_on(connection: Connection) -> None:
    with migration_lock(connection):
        context.configure(
            connection=connection,
            version_table=VERSION_TABLE,
            transaction_per_migration=True,
        )
        with context.begin_transaction():
            context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        run_migrations_on(connection)
        return
    url = config.get_main_option("sqlalchemy.url") or os.environ.get(DATABASE_URL_ENV)
    if not url:
        raise RuntimeError(
            "sa_river migrations need a database: pass a connection in "
            f"config.attributes['connection'], set sqlalchemy.url, or set {DATABASE_URL_ENV}"
        )
    engine = create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            run_migrations_on(conn)
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
