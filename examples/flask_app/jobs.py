"""The app's jobs: their args, their handlers and ``workers``, the registry the worker runs::

    python -m sa_river worker --app examples.flask_app.jobs:workers \\
        --queue default=2 --queue mail=5 --database-url "$DATABASE_URL"

The registry carries all the worker needs besides its database: a lifespan that makes the Flask
app once per worker process (``job.context``), a middleware that runs every handler in an app
context of it, and the hourly sign-up report.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from typing import Any

from flask import Flask, current_app
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from examples.flask_app.models import User, db
from sa_river import InsertOpts, Job, JobArgs, JobCancel, PeriodicJob, Workers


class SendWelcomeEmail(
    JobArgs,
    kind="send_welcome_email",
    # Mail goes through a queue of its own, so a slow mail provider cannot hold up other jobs.
    insert_opts=InsertOpts(queue="mail", max_attempts=5),
):
    """Welcome a new user. Keyed by address: the job is enqueued before the user's INSERT."""

    email: str
    name: str


class SignupReport(JobArgs, kind="signup_report"):
    """Count the last day's sign-ups; enqueued every hour by the worker that leads."""


@contextmanager
def flask_app() -> Iterator[Flask]:
    """The registry's lifespan: the app, made from ``$DATABASE_URL`` as the worker starts (a
    missing setting stops the worker there, with its message), its engine disposed as it
    stops."""
    from examples.flask_app.app import create_app  # here: app.py imports this module

    app = create_app()
    try:
        yield app
    finally:
        with app.app_context():
            db.engine.dispose()


def in_app_context(job: Job[Any], call_next: Callable[[], Any]) -> Any:
    """Middleware: each handler runs in an app context of the lifespan's app, as a view runs
    in one (``current_app``, its config, extensions such as Flask-Mail); leaving it closes
    ``db.session``."""
    app: Flask = job.context
    with app.app_context():
        return call_next()


workers = Workers(
    lifespan=flask_app,
    middleware=[in_app_context],
    periodic_jobs=[PeriodicJob(timedelta(hours=1), SignupReport, run_on_start=True)],
)


def deliver_email(to: str, subject: str, body: str) -> str:
    """Stand-in for your mail provider (or Flask-Mail): prints the email, returns its id."""
    sender = current_app.config["MAIL_DEFAULT_SENDER"]
    print(f"mail to {to}: {subject} {body}", flush=True)
    return f"<{uuid.uuid4().hex}@{sender.partition('@')[2]}>"


@workers.handler(SendWelcomeEmail, timeout=timedelta(seconds=30))
def send_welcome_email(job: Job[SendWelcomeEmail], session: Session) -> None:
    """Send the email, record it on the user, and record the message id as the job's output.

    ``session`` is in a transaction that also completes the job: the update of the user and
    the job's completion commit together, or neither does; an attempt whose update committed
    never runs again. Raising rolls the update back and sa_river retries with backoff.
    """
    user = session.scalar(select(User).where(User.email == job.args.email))
    if user is None:
        raise JobCancel(f"no user with email {job.args.email!r}")
    message_id = deliver_email(
        user.email, "Welcome!", f"Hello {job.args.name}, thanks for signing up."
    )
    # now() is the transaction's start time: the job's finalized_at will be the same instant.
    user.welcome_sent_at = func.now()
    job.record_output({"message_id": message_id})
    # Do not commit: the worker completes the job in this transaction, then commits it.


@workers.handler(SignupReport)
def signup_report(job: Job[SignupReport]) -> dict[str, int]:
    """Reads only, so ``db.session`` (the app context's) serves as in a view."""
    since = datetime.now(timezone.utc) - timedelta(days=1)
    signups = db.session.scalar(select(func.count()).where(User.created_at >= since))
    welcomed = db.session.scalar(select(func.count()).where(User.welcome_sent_at >= since))
    return {"signups": signups or 0, "welcomed": welcomed or 0}
