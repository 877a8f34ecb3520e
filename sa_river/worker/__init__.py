"""The runner and its parts: :class:`Worker` (``runner.py``) fetches jobs with one
:class:`~sa_river.worker.producer.Producer` per queue, runs them in the
:class:`~sa_river.worker.executor.Executor`, writes their outcomes through the
:class:`~sa_river.worker.completer.BatchCompleter`, and keeps its registration alive with the
:class:`~sa_river.worker.heartbeat.Heartbeat`.
"""

from sa_river.worker.runner import Worker

__all__ = ["Worker"]
