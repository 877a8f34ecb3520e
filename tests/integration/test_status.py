"""``sa-river status`` against real PostgreSQL: the live workers, by name in its table and its
JSON, and the workers that stopped heartbeating left out."""

from __future__ import annotations

import io
import json

from sqlalchemy import Engine, text
from sqlalchemy.engine import URL

from sa_river import cli
from sa_river.queries.client import LiveClient, client_list_alive, client_register


def _status(url: URL, *flags: str) -> str:
    out, err = io.StringIO(), io.StringIO()
    argv = ["status", "--database-url", url.render_as_string(hide_password=False), *flags]
    assert cli.main(argv, stdout=out, stderr=err) == cli.EXIT_OK, err.getvalue()
    return out.getvalue()


def _register(engine: Engine) -> None:
    with engine.begin() as conn:
        client_register(conn, client_id="w-1", hostname="h1", pid=101, queues=["mail", "default"])
        client_register(conn, client_id="w-2", hostname="h2", pid=102, queues=["default"])
        conn.execute(
            text(
                "UPDATE sa_river_client SET heartbeat_at = now() - interval '1 hour' "
                "WHERE id = 'w-2'"
            )
        )


def test_client_list_alive_returns_typed_rows(engine: Engine) -> None:
    _register(engine)
    with engine.begin() as conn:
        (alive,) = client_list_alive(conn, 30.0)
    assert isinstance(alive, LiveClient)
    assert (alive.id, alive.hostname, alive.pid, alive.queues) == (
        "w-1",
        "h1",
        101,
        ("mail", "default"),
    )
    assert alive.heartbeat_at.tzinfo is not None


def test_status_lists_the_live_workers(db_url: URL, engine: Engine) -> None:
    _register(engine)
    lines = _status(db_url).splitlines()
    assert lines[0] == "leader: none"
    header = lines.index("worker  host  pid  queues        last heartbeat")
    assert lines[header + 2].startswith("w-1     h1    101  mail,default  ")
    assert "w-2" not in "\n".join(lines)


def test_status_json_names_each_worker_field(db_url: URL, engine: Engine) -> None:
    _register(engine)
    (worker,) = json.loads(_status(db_url, "--json"))["workers"]
    heartbeat_at = worker.pop("heartbeat_at")
    assert worker == {"id": "w-1", "hostname": "h1", "pid": 101, "queues": ["mail", "default"]}
    assert isinstance(heartbeat_at, str)
