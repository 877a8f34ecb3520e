"""The HTTP API: sign up (``POST /users``), look a user up (``GET /users/<id>``), and wait for
a job's result (``GET /jobs/<id>/result``).

Run it with ``flask --app examples.flask_app.app run`` (Flask finds the :func:`create_app`
factory, which reads ``$DATABASE_URL``); ``flask --app examples.flask_app.app create-tables``
creates the ``users`` table.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Flask, abort, jsonify, request
from flask.typing import ResponseReturnValue
from sqlalchemy.exc import IntegrityError
from werkzeug.exceptions import HTTPException

import sa_river
from examples.flask_app.jobs import SendWelcomeEmail
from examples.flask_app.models import User, db
from examples.flask_app.settings import database_url as database_url_from_env

__all__ = ["create_app"]

bp = Blueprint("users", __name__)


def user_json(user: User) -> dict[str, Any]:
    return {
        "id": user.id,
        "email": user.email,
        "name": user.name,
        "created_at": user.created_at.isoformat(),
        "welcome_email_sent": user.welcome_sent_at is not None,
        "welcome_email_sent_at": (
            None if user.welcome_sent_at is None else user.welcome_sent_at.isoformat()
        ),
    }


def _field(data: dict[str, Any], name: str, max_length: int) -> str:
    value = data.get(name)
    if not isinstance(value, str) or not value.strip() or len(value) > max_length:
        abort(400, description=f"{name}: a non-empty string of at most {max_length} characters")
    return value.strip()


@bp.post("/users")
def sign_up() -> ResponseReturnValue:
    """Create the user and enqueue the welcome email, in one transaction."""
    data = request.get_json(silent=True)
    if not isinstance(data, dict):
        abort(400, description="expected a JSON object")
    email = _field(data, "email", 254).lower()
    if "@" not in email:
        abort(400, description="email: not an email address")
    name = _field(data, "name", 200)
    user = User(email=email, name=name)
    db.session.add(user)
    # The job joins db.session's transaction. Nothing has been flushed yet, so the user's
    # INSERT runs at commit, after the job's: if the email is taken, the commit fails and the
    # rollback takes the job with it. No welcome email for a sign-up that did not happen.
    result = sa_river.insert(db.session, SendWelcomeEmail(email=email, name=name))
    try:
        db.session.commit()
    except IntegrityError:
        db.session.rollback()
        abort(409, description="this email is already registered")
    return {**user_json(user), "welcome_job_id": result.job.id}, 201


@bp.get("/users/<int:user_id>")
def get_user(user_id: int) -> ResponseReturnValue:
    """The user, and whether their welcome email was sent."""
    user = db.session.get(User, user_id)
    if user is None:
        abort(404, description=f"no user {user_id}")
    return user_json(user)


@bp.get("/jobs/<int:job_id>/result")
def get_job_result(job_id: int) -> ResponseReturnValue:
    """Wait up to ``?timeout=`` seconds (default 10, at most 30) for the job to finish, then
    return its output.

    ``wait_for`` borrows a connection of ``db.session``'s engine for the wait and wakes up on
    the worker's notification; the request's thread waits with it. In a real app, check that
    the caller may see this job.
    """
    timeout = request.args.get("timeout", 10.0, type=float)
    if timeout is None or not 0 < timeout <= 30:
        abort(400, description="timeout: a number of seconds, more than 0 and at most 30")
    try:
        row = sa_river.wait_for(db.session, job_id, timeout=timeout)
    except sa_river.JobWaitTimeout as exc:
        abort(504, description=f"job {job_id} is still {exc.state} after {timeout:g}s")
    except LookupError:
        abort(404, description=f"no job {job_id}")
    return {
        "id": row.id,
        "kind": row.kind,
        "state": row.state.value,
        "output": row.metadata.get("output"),
        "errors": [e.error for e in row.errors],
    }


def _json_error(error: HTTPException) -> ResponseReturnValue:
    return jsonify(error=error.name, detail=error.description), error.code or 500


def create_app(database_url: str | None = None) -> Flask:
    """The app, on ``database_url`` (default: ``$DATABASE_URL``)."""
    app = Flask(__name__)
    app.config["SQLALCHEMY_DATABASE_URI"] = database_url or database_url_from_env()
    app.config["SQLALCHEMY_ENGINE_OPTIONS"] = {"pool_pre_ping": True}
    app.config["MAIL_DEFAULT_SENDER"] = "welcome@example.com"
    db.init_app(app)
    app.register_blueprint(bp)
    for code in (400, 404, 409, 504):
        app.register_error_handler(code, _json_error)
    app.cli.command("create-tables")(create_tables)
    return app


def create_tables() -> None:
    """Create the application's tables (those missing)."""
    db.create_all()
    print(f"created {', '.join(db.metadata.tables)}")
