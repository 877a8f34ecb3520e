"""Sign-up with FastAPI: the user row and its welcome-email job commit together.

``app`` (the HTTP API), ``jobs`` (the job args and the ``workers`` registry the worker runs),
``models`` (the ``users`` table) and ``settings`` (the database URL). See README.md.
"""
