"""``db`` (the Flask-SQLAlchemy extension) and the application's own table, ``users``.

A real application would create the table with its Alembic (Flask-Migrate) revisions; here
``flask --app examples.flask_app.app create-tables`` creates it in ``$DATABASE_URL``.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import DateTime, String, func
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    """The application's declarative base (sa_river's tables have their own metadata)."""


db = SQLAlchemy(model_class=Base)

if TYPE_CHECKING:
    # db.Model is made at runtime from Base; type checkers only know it as an opaque type.
    Model = Base
else:
    Model = db.Model


class User(Model):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(254), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    welcome_sent_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
