"""Settings of the FastAPI example, read from the environment."""

from __future__ import annotations

import os

DATABASE_URL_ENV = "DATABASE_URL"


def database_url() -> str:
    """``$DATABASE_URL``, e.g. ``postgresql+psycopg://postgres@127.0.0.1:5432/app``.

    psycopg 3 serves both the sync and the async engine under that one URL.
    """
    url = os.environ.get(DATABASE_URL_ENV)
    if not url:
        raise RuntimeError(
            f"set {DATABASE_URL_ENV}, e.g. postgresql+psycopg://postgres@127.0.0.1:5432/app"
        )
    return url
