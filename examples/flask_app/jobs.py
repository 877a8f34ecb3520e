"""The welcome-email job: its args, its handler and the ``workers`` registry.

Handlers use ``db.session``, so they run inside an application context of the app they belong
to. :func:`create_workers` binds a registry to an app; ``workers``, the registry that
``python -m sa_river worker`` loads, binds it to the app made by ``create_app()`` from
``$DATABASE_URL`` when the first job runs::

    python -m sa_river worker --app examples.flask_app.jobs:workers --queue mail=5 \\
        --database-url "$DATABASE_URL"

An app that runs its jobs in-process passes itself instead:
``sa_river.Worker(url, create_workers(lambda: app), {"mail": 5})``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from datetime import datetime, timedelta, timezone

from flask import Flask
from sqlalchemy import select

import sa_river
from examples.flask_app.models import User, db
from sa_river import InsertOpts, Job, JobArgs, JobCancel, Workers


class SendWelcomeEmail(
    JobArgs,
    kind="send_welcome_email",
    # Mail goes through a queue of its own, so a slow mail provider cannot hold up other jobs.
    insert_opts=InsertOpts(queue="mail", max_attempts=5),
):
    """Welcome a new user. Keyed by address: the job is enqueued before the user's INSERT."""

    email: str
    name: str


def deliver_email(to: str, subject: str, body: str) -> None:
    """Stand-in for your mail provider's API call: prints the email."""
    print(f"mail to {to}: {subject} {body}", flush=True)


def create_workers(get_app: Callable[[], Flask]) -> Workers:
    """A registry whose handlers work in an app context of ``get_app()``."""
    workers = Workers()

    @workers.handler(SendWelcomeEmail, timeout=timedelta(seconds=30))
    def send_welcome_email(job: Job[SendWelcomeEmail]) -> None:
        """Send the email once, record it on the user and complete the job, all in one
        transaction: either the user is marked and the job is completed, or neither.

        The user's row is locked while sending, and an attempt that finds the email already
        sent only completes the job. Raising makes sa_river retry with backoff.
        """
        with get_app().app_context():  # the context's end closes db.session
            user = db.session.scalar(
                select(User).where(User.email == job.args.email).with_for_update()
            )
            if user is None:
                raise JobCancel(f"no user with email {job.args.email!r}")
            if user.welcome_sent_at is None:
                deliver_email(
                    user.email, "Welcome!", f"Hello {job.args.name}, thanks for signing up."
                )
                user.welcome_sent_at = datetime.now(timezone.utc)
            # False if the job is no longer running (cancelled meanwhile): the email went out
            # all the same, so record it either way.
            sa_river.complete_in(db.session, job)
            db.session.commit()

    return workers


@functools.cache
def _app_from_environment() -> Flask:
    from examples.flask_app.app import create_app

    return create_app()


workers = create_workers(_app_from_environment)
"""The registry for ``python -m sa_river worker --app examples.flask_app.jobs:workers``."""
