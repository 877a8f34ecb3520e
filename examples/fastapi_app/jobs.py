"""The welcome-email job: its args, its handler and ``workers``, the registry the worker runs::

    python -m sa_river worker --app examples.fastapi_app.jobs:workers --queue mail=5 \\
        --database-url "$DATABASE_URL"

The registry's lifespan opens the mail client once per worker process; the handler reaches it
as ``job.context``. The handler takes an ``AsyncSession``: its update of the user and the job's
completion commit in one transaction.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from examples.fastapi_app.models import User
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


class Mailer:
    """Stand-in for your mail provider's client (its SDK, an ``httpx.AsyncClient``...): it
    prints the email and returns a message id."""

    def __init__(self, sender: str) -> None:
        self.sender = sender

    async def send(self, to: str, subject: str, body: str) -> str:
        await asyncio.sleep(0.01)
        print(f"mail to {to}: {subject} {body}", flush=True)
        return f"<{uuid.uuid4().hex}@{self.sender.partition('@')[2]}>"

    async def aclose(self) -> None:
        """Where a real client closes its connections."""


@asynccontextmanager
async def lifespan() -> AsyncIterator[Mailer]:
    """Entered once as the worker starts, on the event loop its async handlers run on, and left
    as it stops; what it yields is every job's ``job.context``."""
    mailer = Mailer(sender="welcome@example.com")
    try:
        yield mailer
    finally:
        await mailer.aclose()


workers = Workers(lifespan=lifespan)


@workers.handler(SendWelcomeEmail, timeout=timedelta(seconds=30))
async def send_welcome_email(job: Job[SendWelcomeEmail], session: AsyncSession) -> dict[str, str]:
    """Send the email and record it on the user; the returned dict is the job's output.

    ``session`` is in a transaction that also completes the job: the update of the user and
    the job's completion commit together, or neither does. So no "already sent?" check is
    needed: an attempt whose update committed also completed its job, which never runs again.
    Raising rolls the update back and sa_river retries with backoff, up to 5 attempts.
    """
    user = await session.scalar(select(User).where(User.email == job.args.email))
    if user is None:
        # Cannot happen for jobs enqueued by the app (they commit with the user), but the
        # user may have been deleted since: nothing to send, and no point retrying.
        raise JobCancel(f"no user with email {job.args.email!r}")
    mailer: Mailer = job.context
    message_id = await mailer.send(
        user.email, "Welcome!", f"Hello {job.args.name}, thanks for signing up."
    )
    # now() is the transaction's start time: the job's finalized_at will be the same instant.
    user.welcome_sent_at = func.now()
    # Do not commit: the worker completes the job in this transaction, then commits it.
    return {"message_id": message_id}
