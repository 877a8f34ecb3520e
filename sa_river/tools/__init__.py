"""Developer tooling behind ``python -m sa_river bench`` and ``python -m sa_river demo``.

Kept apart from the runtime so that what runs in production stays small and its imports stay
clear: the runtime (worker, enqueue, elector, maintenance, queries) never imports this package;
only the command line does, and only when one of these commands is asked for.
"""
