"""Sign-up with Flask and Flask-SQLAlchemy: the user row and its welcome-email job commit
together in ``db.session``.

``app`` (the ``create_app`` factory and the views), ``jobs`` (the job args, the
``create_workers`` factory and the ``workers`` registry the worker command runs), ``models``
(``db`` and the ``users`` table) and ``settings`` (the database URL). See README.md.
"""
