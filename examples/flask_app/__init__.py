"""Sign-up with Flask and Flask-SQLAlchemy: the user row and its welcome-email job commit
together in ``db.session``.

``app`` (the ``create_app`` factory and the views), ``jobs`` (the job args, their handlers and
``workers``, the registry the worker command runs: its lifespan makes the app), ``models``
(``db`` and the ``users`` table) and ``settings`` (the database URL). See README.md.
"""
