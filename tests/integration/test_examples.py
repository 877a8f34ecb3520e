"""The example applications in ``examples/``, end to end against real PostgreSQL.

Each test creates the app's ``users`` table in a fresh migrated database, signs up two users
through the app's HTTP API (and fails a third sign-up with a taken email), asks the app's
``GET /jobs/<id>/result`` for a welcome job no worker runs yet (a 504 naming its state, after
the requested timeout), then runs a real worker and waits for each welcome job through that
endpoint, which returns the message id the handler recorded:

- FastAPI: the ``python -m sa_river worker --app examples.fastapi_app.jobs:workers`` command
  in a subprocess (started from the repository root, as the example's README says), stopped
  with SIGTERM, which must exit 0;
- Flask: the same command for ``examples.flask_app.jobs:workers``, and (in process) an
  embedded ``sa_river.Worker`` running that same registry. Its lifespan makes the Flask app,
  its periodic sign-up report runs once as the worker becomes leader, and its output (two
  sign-ups) is read through the endpoint too. Without ``$DATABASE_URL`` its lifespan fails,
  and the worker command exits 1 with the lifespan's message.

The handlers take the worker's Session (AsyncSession for FastAPI) and set
``users.welcome_sent_at = now()`` in it: that the timestamp equals the job's ``finalized_at``
shows the write and the job's completion committed in one transaction.

The FastAPI app is driven with httpx over ASGI, its lifespan run as a server would (startup
makes its engine, shutdown disposes of it); the Flask app with its test client.
Both workers must send each email exactly once and complete each job on its first attempt.

The failed sign-up checks the point of enqueueing in the request's transaction: its job was
inserted (it used up a job id, which sequences never give back) and rolled back with the user,
so no job is left behind. Every wait is bounded and every process is killed on the way out.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import anyio.from_thread
import httpx
import pytest
from _worker_helpers import running_worker, wait_until
from sqlalchemy import create_engine, select
from sqlalchemy.engine import URL, Engine
from sqlalchemy.pool import NullPool
from sqlalchemy.sql import FromClause
from starlette.types import ASGIApp, Message, Receive, Scope, Send

import sa_river
from examples.fastapi_app import app as fastapi_app
from examples.fastapi_app import models as fastapi_models
from examples.flask_app import app as flask_app
from examples.flask_app import models as flask_models
from examples.flask_app.jobs import workers as flask_workers

REPO_ROOT = Path(__file__).resolve().parents[2]

WORK_TIMEOUT = 20.0
"""Bound of the wait for the welcome emails, worker start-up included (about 1 s)."""

EXIT_TIMEOUT = 20.0

Call = Callable[[str, str, dict[str, Any] | None], tuple[int, Any]]
"""``call(method, path, json_body) -> (status, json)``: one HTTP request to the app."""


@dataclass(frozen=True)
class SignUps:
    """What :func:`sign_up_users` did: the users signed up and their welcome jobs."""

    user_ids: list[int]
    job_ids: list[int]


def sign_up_users(call: Call) -> SignUps:
    """Sign up Ada and Grace, and fail to sign up Ada's email again, through the HTTP API."""
    status, ada = call("POST", "/users", {"email": "Ada@Example.com", "name": "Ada"})
    assert status == 201, ada
    assert ada["email"] == "ada@example.com"
    assert ada["welcome_email_sent"] is False

    status, taken = call("POST", "/users", {"email": "ada@example.com", "name": "Not Ada"})
    assert status == 409, taken

    status, grace = call("POST", "/users", {"email": "grace@example.com", "name": "Grace"})
    assert status == 201, grace
    # The failed sign-up inserted its job (and used up the id in between) before its commit
    # failed: the job was rolled back with the user, not skipped.
    assert grace["welcome_job_id"] == ada["welcome_job_id"] + 2

    status, missing = call("GET", "/users/999999", None)
    assert status == 404, missing
    status, shown = call("GET", f"/users/{ada['id']}", None)
    assert status == 200, shown
    assert shown["name"] == "Ada"
    assert shown["welcome_email_sent"] is False
    return SignUps(
        user_ids=[ada["id"], grace["id"]], job_ids=[ada["welcome_job_id"], grace["welcome_job_id"]]
    )


def assert_jobs_waiting(engine: Engine, signups: SignUps) -> None:
    """Exactly the two sign-ups' jobs exist, waiting in the mail queue; nothing of the failed
    sign-up was left behind."""
    jobs = sa_river.list_jobs(engine)
    assert [j.id for j in jobs] == signups.job_ids
    assert [(j.kind, j.queue, j.state.value) for j in jobs] == [
        ("send_welcome_email", "mail", "available")
    ] * 2
    assert [j.args for j in jobs] == [
        {"email": "ada@example.com", "name": "Ada"},
        {"email": "grace@example.com", "name": "Grace"},
    ]


MESSAGE_ID = re.compile(r"<[0-9a-f]{32}@example\.com>")


def assert_result_not_ready(call: Call, signups: SignUps) -> None:
    """With no worker running, the result endpoint gives up after its timeout, naming the
    job's state; an unknown job is a 404."""
    status, body = call("GET", f"/jobs/{signups.job_ids[0]}/result?timeout=0.3", None)
    assert status == 504, body
    assert "is still available after 0.3s" in body["detail"], body
    status, body = call("GET", "/jobs/999999/result?timeout=1", None)
    assert status == 404, body


def wait_for_welcome_emails(call: Call, signups: SignUps, describe: Callable[[], str]) -> None:
    """Wait for each welcome job through ``GET /jobs/<id>/result`` (the app waits with
    ``wait_for``), which returns the message id the handler recorded; then each user shows
    the email as sent."""
    for job_id in signups.job_ids:
        status, result = call("GET", f"/jobs/{job_id}/result?timeout={WORK_TIMEOUT:g}", None)
        assert status == 200, f"{result}; {describe()}"
        assert (result["id"], result["kind"], result["state"]) == (
            job_id,
            "send_welcome_email",
            "completed",
        ), result
        assert result["errors"] == [], result
        assert MESSAGE_ID.fullmatch(result["output"]["message_id"]), result
    for user_id in signups.user_ids:
        status, user = call("GET", f"/users/{user_id}", None)
        assert status == 200, user
        assert user["welcome_email_sent"] is True, user


def assert_jobs_completed(engine: Engine, signups: SignUps, users_table: FromClause) -> None:
    """Both jobs completed on their first attempt with their output, and each user's
    ``welcome_sent_at`` (``now()`` in the handler's session) is its job's ``finalized_at``:
    the handler's write and the job's completion were one transaction."""
    finalized_at = []
    for job_id in signups.job_ids:
        row = sa_river.get_job(engine, job_id)
        assert row is not None
        assert (row.state.value, row.attempt, row.errors) == ("completed", 1, [])
        assert MESSAGE_ID.fullmatch(row.metadata["output"]["message_id"])
        finalized_at.append(row.finalized_at)
    assert len(sa_river.list_jobs(engine, kinds=["send_welcome_email"])) == 2
    with engine.connect() as conn:
        rows = conn.execute(
            select(users_table.c.email, users_table.c.welcome_sent_at).order_by(users_table.c.id)
        ).all()
    assert rows == [("ada@example.com", finalized_at[0]), ("grace@example.com", finalized_at[1])]


@contextmanager
def assertion_engine(db_url: URL) -> Iterator[Engine]:
    """A small engine on the test's database for the assertions, disposed afterwards."""
    engine = create_engine(db_url, poolclass=NullPool)
    try:
        yield engine
    finally:
        engine.dispose()


class CliWorker:
    """``python -m sa_river worker --app APP`` in a subprocess run from the repository root,
    as a user runs it; its output goes to ``log``."""

    def __init__(
        self, app: str, db_url: URL, log: Path, queues: list[str], env: dict[str, str]
    ) -> None:
        url = db_url.render_as_string(hide_password=False)
        self.log = log
        self._log_file = log.open("w")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "sa_river",
                "worker",
                "--app",
                app,
                "--database-url",
                url,
                *(arg for queue in queues for arg in ("--queue", queue)),
                "--poll-interval",
                "0.2",
                "--shutdown-timeout",
                "5",
            ],
            cwd=REPO_ROOT,
            env=env,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
        )

    def output(self) -> str:
        self._log_file.flush()
        return self.log.read_text()[-4000:]

    def describe(self) -> str:
        state = "running" if self.proc.poll() is None else f"exited {self.proc.returncode}"
        return f"the welcome emails; the worker is {state}, its output:\n{self.output()}"

    def terminate(self) -> int:
        """SIGTERM, then the exit code (bounded)."""
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(EXIT_TIMEOUT)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"the worker did not exit within {EXIT_TIMEOUT:g}s of SIGTERM:\n{self.output()}"
            ) from None

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self._log_file.close()


def app_environment(db_url: URL) -> dict[str, str]:
    """The environment of the READMEs: the app reads its database from $DATABASE_URL."""
    return {**os.environ, "DATABASE_URL": db_url.render_as_string(hide_password=False)}


@contextmanager
def cli_worker(
    app: str, db_url: URL, log: Path, queues: list[str], env: dict[str, str] | None = None
) -> Iterator[CliWorker]:
    worker = CliWorker(app, db_url, log, queues, app_environment(db_url) if env is None else env)
    try:
        yield worker
    finally:
        worker.close()


def run_cli_worker_until_sent(
    app: str,
    db_url: URL,
    log: Path,
    call: Call,
    signups: SignUps,
    queues: list[str],
    also: Callable[[], None] = lambda: None,
) -> str:
    """Run the worker command until the welcome emails are sent (and ``also()`` returned),
    then stop it with SIGTERM; its output."""
    with cli_worker(app, db_url, log, queues) as worker:
        wait_for_welcome_emails(call, signups, worker.describe)
        also()
        code = worker.terminate()
        assert code == 0, worker.output()
        output = worker.output()
    assert "Traceback" not in output, output
    for email in ("ada@example.com", "grace@example.com"):
        assert output.count(f"mail to {email}: Welcome!") == 1, output
    return output


# --- FastAPI ---------------------------------------------------------------------------------


@asynccontextmanager
async def asgi_lifespan(app: ASGIApp) -> AsyncIterator[dict[str, Any]]:
    """Run ``app``'s ASGI lifespan as a server does: startup on entry, shutdown on exit.

    Yields the lifespan state (what the app's lifespan yielded), which a server hands every
    request as ``scope["state"]``; httpx's ASGITransport has no lifespan support of its own.
    """
    state: dict[str, Any] = {}
    to_app: asyncio.Queue[Message] = asyncio.Queue()
    from_app: asyncio.Queue[Message] = asyncio.Queue()

    async def send(message: Message) -> None:
        await from_app.put(message)

    scope: Scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": state}
    task = asyncio.ensure_future(app(scope, to_app.get, send))
    try:
        await to_app.put({"type": "lifespan.startup"})
        started = await from_app.get()
        assert started["type"] == "lifespan.startup.complete", started
        yield state
        await to_app.put({"type": "lifespan.shutdown"})
        stopped = await from_app.get()
        assert stopped["type"] == "lifespan.shutdown.complete", stopped
    finally:
        if not task.done():
            task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def with_lifespan_state(app: ASGIApp, state: dict[str, Any]) -> ASGIApp:
    """``app`` with a copy of the lifespan state in each request's scope, as servers do."""

    async def app_with_state(scope: Scope, receive: Receive, send: Send) -> None:
        await app({**scope, "state": dict(state)}, receive, send)

    return app_with_state


@contextmanager
def asgi_client(app: ASGIApp) -> Iterator[Call]:
    """A synchronous ``call`` that sends real HTTP requests to ``app`` in process (httpx over
    ASGI), with the app's lifespan run around it on an event loop of its own."""
    with (
        anyio.from_thread.start_blocking_portal() as portal,
        portal.wrap_async_context_manager(asgi_lifespan(app)) as state,
    ):
        transport = httpx.ASGITransport(app=with_lifespan_state(app, state))
        client = httpx.AsyncClient(transport=transport, base_url="http://example.test")

        def call(method: str, path: str, body: dict[str, Any] | None) -> tuple[int, Any]:
            response = portal.call(partial(client.request, method, path, json=body))
            return response.status_code, response.json()

        try:
            yield call
        finally:
            portal.call(client.aclose)


def test_fastapi_example_with_the_worker_command(
    db_url: URL, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = db_url.render_as_string(hide_password=False)
    monkeypatch.setenv("DATABASE_URL", url)
    fastapi_models.main()  # python -m examples.fastapi_app.models: creates the users table
    with assertion_engine(db_url) as engine:
        app = fastapi_app.create_app(url)
        # The lifespan makes the app's engine at startup and disposes of it at shutdown.
        with asgi_client(app) as call:
            signups = sign_up_users(call)
            assert_jobs_waiting(engine, signups)
            assert_result_not_ready(call, signups)
            output = run_cli_worker_until_sent(
                "examples.fastapi_app.jobs:workers",
                db_url,
                tmp_path / "worker.log",
                call,
                signups,
                ["mail=2"],
            )
            assert "running ['send_welcome_email']" in output, output
            status, ada = call("GET", f"/users/{signups.user_ids[0]}", None)
            assert status == 200
            assert ada["welcome_email_sent_at"] is not None
        assert_jobs_completed(engine, signups, fastapi_models.User.__table__)


# --- Flask ------------------------------------------------------------------------------------


def wait_for_signup_report(engine: Engine, call: Call) -> None:
    """The registry's periodic report, enqueued as the worker became leader, counted the two
    sign-ups; its output is read through the app's result endpoint."""

    def report_id() -> int | None:
        reports = sa_river.list_jobs(engine, kinds=["signup_report"])
        return reports[0].id if reports else None

    job_id = wait_until(report_id, WORK_TIMEOUT, interval=0.1, message="the sign-up report")
    status, result = call("GET", f"/jobs/{job_id}/result?timeout={WORK_TIMEOUT:g}", None)
    assert status == 200, result
    assert result["state"] == "completed", result
    assert result["output"]["signups"] == 2, result


@pytest.mark.parametrize("worker_kind", ["command", "embedded"])
def test_flask_example(
    db_url: URL,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    worker_kind: str,
) -> None:
    url = db_url.render_as_string(hide_password=False)
    monkeypatch.setenv("DATABASE_URL", url)  # read by the registry's lifespan (embedded)
    app = flask_app.create_app(url)
    try:
        created = app.test_cli_runner().invoke(args=["create-tables"])
        assert created.exit_code == 0, created.output
        assert created.output == "created users\n"
        client = app.test_client()

        def call(method: str, path: str, body: dict[str, Any] | None) -> tuple[int, Any]:
            response = client.open(path, method=method, json=body)
            return response.status_code, response.get_json()

        with assertion_engine(db_url) as engine:
            signups = sign_up_users(call)
            assert_jobs_waiting(engine, signups)
            assert_result_not_ready(call, signups)
            status, body = call("GET", f"/jobs/{signups.job_ids[0]}/result?timeout=60", None)
            assert status == 400, body
            if worker_kind == "command":
                output = run_cli_worker_until_sent(
                    "examples.flask_app.jobs:workers",
                    db_url,
                    tmp_path / "worker.log",
                    call,
                    signups,
                    ["default=2", "mail=2"],
                    also=lambda: wait_for_signup_report(engine, call),
                )
                assert "running ['send_welcome_email', 'signup_report']" in output, output
            else:
                with running_worker(db_url, flask_workers, {"default": 2, "mail": 2}):
                    wait_for_welcome_emails(call, signups, lambda: "the welcome emails")
                    wait_for_signup_report(engine, call)
                printed = capsys.readouterr().out
                for email in ("ada@example.com", "grace@example.com"):
                    assert printed.count(f"mail to {email}: Welcome!") == 1, printed
            assert_jobs_completed(engine, signups, flask_models.User.__table__)
    finally:
        with app.app_context():
            flask_models.db.engine.dispose()


def test_flask_worker_without_its_settings_stops_at_its_lifespan(
    db_url: URL, tmp_path: Path
) -> None:
    """The registry's lifespan makes the Flask app from $DATABASE_URL; without it the lifespan
    raises as the worker starts, and the command exits 1 with the lifespan's message."""
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    app = "examples.flask_app.jobs:workers"
    with cli_worker(app, db_url, tmp_path / "worker.log", ["mail=1"], env) as worker:
        try:
            code = worker.proc.wait(EXIT_TIMEOUT)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"the worker did not stop:\n{worker.output()}") from None
        output = worker.output()
    assert code == 1, output
    assert "the lifespan flask_app failed as the worker started" in output, output
    assert "RuntimeError: set DATABASE_URL" in output, output
    assert "Traceback" not in output, output
