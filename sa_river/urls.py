"""Database URLs shown to people: passwords hidden, even in URLs that do not parse (internal)."""

from __future__ import annotations

import re

import sqlalchemy.exc
from sqlalchemy.engine import make_url

__all__ = ["redact_url"]

_PASSWORD_IN_QUERY = re.compile(r"(?i)([?&]password=)[^&]*")


def redact_url(url: str) -> str:
    """``url`` with its password replaced by ``***``, even when the URL does not parse."""
    # SQLAlchemy ends the password at its first '@': with an unescaped '@' in the password, the
    # rest of it would be rendered as the host, so such a URL is only redacted as text.
    if url.count("@") <= 1:
        try:
            parsed = make_url(url)
        except (sqlalchemy.exc.ArgumentError, ValueError):
            pass
        else:
            if "@" not in (parsed.host or ""):
                return _PASSWORD_IN_QUERY.sub(r"\1***", parsed.render_as_string(hide_password=True))
    return _PASSWORD_IN_QUERY.sub(r"\1***", _redact_userinfo(url))


def _redact_userinfo(url: str) -> str:
    # A host never contains '@', so everything before the last one is user and password; past
    # the first ':' of it is the password (a user name cannot contain ':').
    head, at, rest = url.rpartition("@")
    if not at:
        return url
    scheme, separator, userinfo = head.partition("://") if "://" in head else ("", "", head)
    user, colon, _ = userinfo.partition(":")
    if not colon:
        return url
    return f"{scheme}{separator}{user}:***@{rest}"
