"""Alembic environment of the repository's example application, hosting sa_river (Door 1).

This is what an application's own env.py looks like with sa_river in it:

* online, ``sa_river.migrate.upgrade(connection)`` brings the queue's tables to the installed
  sa_river version first (its history in ``sa_river_alembic_version``; a no-op when current,
  and serialised by an advisory lock), then the application's revisions run as usual, so a plain
  ``alembic upgrade head`` sets up everything. The call runs on every online command (also
  ``current`` and ``check``), which keeps the library's tables at the installed version;
* ``include_name=sa_river.migrate.include_name`` keeps autogenerate and ``alembic check`` away
  from the river tables;
* a downgrade that leaves the application with no revision applied (``alembic downgrade base``)
  also removes sa_river's tables, enum and function, in the same transaction, after the
  application's revisions are gone (so app tables that reference river tables go first). It is
  noticed through Alembic's public ``on_version_apply`` hook: the last step of this command was a
  real downgrade (not a stamp) and left no head. ``alembic stamp base`` does not trigger it.
  Running ``downgrade base`` again when the app is already at base does nothing to sa_river;
  use ``python -m sa_river migrate down --target base`` then;
* offline (``--sql``) mode renders only the application's revisions: get sa_river's script from
  ``python -m sa_river migrate sql``.

The database URL is ``SA_RIVER_DATABASE_URL``, else ``sqlalchemy.url`` from alembic.ini, else the
local development server.
"""

from __future__ import annotations

import os
from collections.abc import Collection, Mapping
from logging.config import fileConfig
from typing import Any

import sqlalchemy as sa
from alembic import context
from alembic.runtime.migration import MigrationContext, MigrationInfo

import sa_river.migrate as river_migrate

config = context.config
if config.config_file_name is not None:
    fileConfig(config.config_file_name, disable_existing_loggers=False)

DEFAULT_DATABASE_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"

# The example application's models; a real application imports its own MetaData here.
target_metadata = sa.MetaData()
sa.Table(
    "example_app_note",
    target_metadata,
    sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
    sa.Column("body", sa.Text, nullable=False),
    sa.Column(
        "created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.text("now()")
    ),
)


def database_url() -> str:
    return (
        os.environ.get(river_migrate.DATABASE_URL_ENV)
        or config.get_main_option("sqlalchemy.url")
        or DEFAULT_DATABASE_URL
    )


class DowngradeToBase:
    """``on_version_apply`` hook: did this command's last step downgrade the app to base?"""

    def __init__(self) -> None:
        self.reached = False

    def __call__(  # Alembic passes these by keyword
        self,
        ctx: MigrationContext,
        step: MigrationInfo,
        heads: Collection[Any],
        run_args: Mapping[str, Any],
    ) -> None:
        self.reached = not step.is_upgrade and not step.is_stamp and not heads


def run_migrations_offline() -> None:
    context.configure(
        url=database_url(),
        target_metadata=target_metadata,
        literal_binds=True,
        include_name=river_migrate.include_name,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    engine = sa.create_engine(database_url(), poolclass=sa.pool.NullPool)
    to_base = DowngradeToBase()
    try:
        with engine.connect() as connection:
            river_migrate.upgrade(connection)  # the queue's tables first, own version table
            context.configure(
                connection=connection,
                target_metadata=target_metadata,
                include_name=river_migrate.include_name,
                on_version_apply=to_base,
            )
            with context.begin_transaction():
                context.run_migrations()
                if to_base.reached:
                    river_migrate.downgrade(connection, "base")
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
