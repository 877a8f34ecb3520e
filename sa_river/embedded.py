"""An embedded PostgreSQL for trying sa_river with nothing installed (internal).

``python -m sa_river worker``, ``demo`` and ``bench`` use it when no database URL is given
anywhere (no ``--database-url``, ``SA_RIVER_DATABASE_URL`` or ``DATABASE_URL``): a server from
the ``pgserver`` wheel (``pip install 'sa_river[embedded]'``), data under ``./.sa_river/``,
stopped when the process exits. It is private to that directory, so the command line warns
loudly whenever it is used: a worker on it sees none of the application's jobs.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

from sqlalchemy.engine import make_url

from sa_river.errors import ConfigError

__all__ = ["EMBEDDED_DATA_DIR_DEFAULT", "embedded_database_url"]

EMBEDDED_DATA_DIR_DEFAULT = Path(".sa_river") / "pgdata"


def embedded_database_url(data_dir: Path = EMBEDDED_DATA_DIR_DEFAULT) -> str:
    """Start (or reuse) the embedded server and return a psycopg URL for it."""
    try:
        with warnings.catch_warnings():
            # platformdirs warns at import time when XDG_RUNTIME_DIR is unset.
            warnings.simplefilter("ignore")
            import pgserver
    except ImportError:
        raise ConfigError(
            "database_url",
            "no database URL given and the embedded server is not installed: pass "
            "--database-url (or set SA_RIVER_DATABASE_URL or DATABASE_URL), or pip install "
            "'sa_river[embedded]' (pgserver publishes wheels for Python 3.10 to 3.12 only)",
        ) from None
    chatter = logging.getLogger("pgserver")  # each initdb/pg_ctl run, at INFO, many lines
    if chatter.level == logging.NOTSET:
        chatter.setLevel(logging.WARNING)
    data_dir.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        server = pgserver.get_server(  # type: ignore[attr-defined]
            data_dir.resolve(), cleanup_mode="stop"
        )
    url = make_url(server.get_uri()).set(drivername="postgresql+psycopg", password=None)
    return url.render_as_string(hide_password=False)
