"""The HTTP API: sign up (``POST /users``), look a user up (``GET /users/{id}``), and wait for
a job's result (``GET /jobs/{id}/result``).

Run it with ``uvicorn examples.fastapi_app.app:app`` (``$DATABASE_URL`` is read at startup), or
build one for a given database with :func:`create_app`.

Each request gets an ``AsyncSession`` (the ``get_session`` dependency) from the sessionmaker
that the app's lifespan makes at startup; the engine is disposed at shutdown.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Annotated, Any, TypedDict

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Query, Request, status
from pydantic import BaseModel, Field
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine

import sa_river
from examples.fastapi_app.jobs import SendWelcomeEmail
from examples.fastapi_app.models import User
from examples.fastapi_app.settings import database_url as database_url_from_env

__all__ = ["app", "create_app"]


class LifespanState(TypedDict):
    """What the lifespan hands every request, as ``request.state.<key>``."""

    sessionmaker: async_sessionmaker[AsyncSession]


async def get_session(request: Request) -> AsyncIterator[AsyncSession]:
    """One ``AsyncSession`` per request, closed (and rolled back if uncommitted) after it."""
    sessionmaker: async_sessionmaker[AsyncSession] = request.state.sessionmaker
    async with sessionmaker() as session:
        yield session


SessionDep = Annotated[AsyncSession, Depends(get_session)]


class SignUp(BaseModel):
    email: str = Field(pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$", max_length=254)
    name: str = Field(min_length=1, max_length=200)


class UserOut(BaseModel):
    id: int
    email: str
    name: str
    created_at: datetime
    welcome_email_sent: bool
    welcome_email_sent_at: datetime | None

    @classmethod
    def of(cls, user: User) -> UserOut:
        return cls(
            id=user.id,
            email=user.email,
            name=user.name,
            created_at=user.created_at,
            welcome_email_sent=user.welcome_sent_at is not None,
            welcome_email_sent_at=user.welcome_sent_at,
        )


class SignedUp(UserOut):
    welcome_job_id: int


router = APIRouter()


@router.post("/users", status_code=status.HTTP_201_CREATED)
async def sign_up(body: SignUp, session: SessionDep) -> SignedUp:
    """Create the user and enqueue the welcome email, in one transaction."""
    email = body.email.strip().lower()
    user = User(email=email, name=body.name)
    session.add(user)
    # The job joins the session's transaction. Nothing has been flushed yet, so the user's
    # INSERT runs at commit, after the job's: if the email is taken, the commit fails and the
    # rollback takes the job with it. No welcome email for a sign-up that did not happen.
    result = await sa_river.insert_async(session, SendWelcomeEmail(email=email, name=body.name))
    try:
        await session.commit()
    except IntegrityError:
        await session.rollback()
        raise HTTPException(status.HTTP_409_CONFLICT, "this email is already registered") from None
    return SignedUp(**UserOut.of(user).model_dump(), welcome_job_id=result.job.id)


@router.get("/users/{user_id}")
async def get_user(user_id: int, session: SessionDep) -> UserOut:
    """The user, and whether their welcome email was sent."""
    user = await session.get(User, user_id)
    if user is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no user {user_id}")
    return UserOut.of(user)


class JobResult(BaseModel):
    id: int
    kind: str
    state: str
    output: Any
    """What the handler returned or recorded (``metadata["output"]``), or ``None``."""
    errors: list[str]


@router.get("/jobs/{job_id}/result")
async def get_job_result(
    job_id: int, session: SessionDep, timeout: Annotated[float, Query(gt=0, le=30)] = 10
) -> JobResult:
    """Wait up to ``timeout`` seconds for the job to finish, then return its output.

    ``wait_for_async`` borrows a connection of the app's engine for the wait and wakes up on
    the worker's notification. In a real app, check that the caller may see this job.
    """
    try:
        row = await sa_river.wait_for_async(session, job_id, timeout=timeout)
    except sa_river.JobWaitTimeout as exc:
        raise HTTPException(
            status.HTTP_504_GATEWAY_TIMEOUT, f"job {job_id} is still {exc.state} after {timeout:g}s"
        ) from None
    except LookupError:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no job {job_id}") from None
    return JobResult(
        id=row.id,
        kind=row.kind,
        state=row.state.value,
        output=row.metadata.get("output"),
        errors=[e.error for e in row.errors],
    )


def create_app(database_url: str | None = None) -> FastAPI:
    """The app, on ``database_url`` (default: ``$DATABASE_URL``, read at startup)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[LifespanState]:
        # expire_on_commit=False: the response reads the user after the commit without
        # another round trip (lazy loads are not possible in async code).
        engine = create_async_engine(database_url or database_url_from_env(), pool_pre_ping=True)
        try:
            yield {"sessionmaker": async_sessionmaker(engine, expire_on_commit=False)}
        finally:
            await engine.dispose()

    app = FastAPI(title="sa_river FastAPI example", lifespan=lifespan)
    app.include_router(router)
    return app


app = create_app()
