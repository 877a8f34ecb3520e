"""The welcome-email job: its args, its handler and the ``workers`` registry.

Run the handlers with::

    python -m sa_river worker --app examples.fastapi_app.jobs:workers --queue mail=5 \\
        --database-url "$DATABASE_URL"

The worker runs ``async def`` handlers on one event loop of its own, so the handler's
``AsyncEngine`` is made lazily, from ``$DATABASE_URL``, the first time a job needs it.
"""

from __future__ import annotations

import asyncio
import functools
from datetime import datetime, timedelta, timezone

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, create_async_engine
from sqlalchemy.pool import NullPool

from examples.fastapi_app.models import User
from examples.fastapi_app.settings import database_url
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


workers = Workers()


@functools.cache
def handler_engine() -> AsyncEngine:
    """The handlers' engine: one per worker process.

    ``NullPool``: a pooled async connection belongs to the event loop it was opened on, and the
    worker gives handlers no hook to close a pool before its loop closes at shutdown; so each
    job opens and closes its own connection (a few milliseconds, fine for mail).
    """
    return create_async_engine(database_url(), poolclass=NullPool)


async def deliver_email(to: str, subject: str, body: str) -> None:
    """Stand-in for your mail provider's API call: prints the email."""
    await asyncio.sleep(0.01)
    print(f"mail to {to}: {subject} {body}", flush=True)


@workers.handler(SendWelcomeEmail, timeout=timedelta(seconds=30))
async def send_welcome_email(job: Job[SendWelcomeEmail]) -> None:
    """Send the email once, and record it on the user.

    The user's row is locked while sending, and the handler returns early when an earlier
    attempt already recorded the email, so a retry (say the worker died after the commit but
    before recording the job's completion) does not send a second one. Raising makes sa_river
    retry with backoff, up to 5 attempts.
    """
    async with AsyncSession(handler_engine()) as session, session.begin():
        user = await session.scalar(
            select(User).where(User.email == job.args.email).with_for_update()
        )
        if user is None:
            # Cannot happen for jobs enqueued by the app (they commit with the user), but the
            # user may have been deleted since: nothing to send, and no point retrying.
            raise JobCancel(f"no user with email {job.args.email!r}")
        if user.welcome_sent_at is not None:
            return
        await deliver_email(
            user.email, "Welcome!", f"Hello {job.args.name}, thanks for signing up."
        )
        user.welcome_sent_at = datetime.now(timezone.utc)
