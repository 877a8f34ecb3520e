"""The application's own table, ``users``.

A real application would create it with its Alembic revisions; here
``python -m examples.fastapi_app.models`` creates it in ``$DATABASE_URL``.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import DateTime, String, create_engine, func
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from examples.fastapi_app.settings import database_url


class Base(DeclarativeBase):
    """The application's declarative base (sa_river's tables have their own metadata)."""


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(254), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    welcome_sent_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


def main() -> None:
    """Create the application's tables in ``$DATABASE_URL`` (those missing)."""
    engine = create_engine(database_url())
    try:
        with engine.begin() as conn:
            Base.metadata.create_all(conn)
    finally:
        engine.dispose()
    print(f"created {', '.join(Base.metadata.tables)}")


if __name__ == "__main__":
    main()
