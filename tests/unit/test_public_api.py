"""The public API: ``sa_river.__all__`` is sorted, complete and resolvable."""

from __future__ import annotations

import importlib
import inspect
import types

import sa_river

# Adding or removing a public name is a deliberate act: update this set in the same change.
EXPECTED_PUBLIC_NAMES = {
    # values and errors
    "AttemptError",
    "ConfigError",
    "FieldError",
    "InsertManyParams",
    "InsertOpts",
    "InsertResult",
    "InvalidJobError",
    "Job",
    "JobArgs",
    "JobCancel",
    "JobDiscard",
    "JobFilters",
    "JobRetry",
    "JobRow",
    "JobRunningError",
    "JobSnooze",
    "JobState",
    "JobWaitTimeout",
    "LifespanError",
    "Middleware",
    "PeriodicJob",
    "RetryPolicy",
    "SaRiverError",
    "SchemaNotReadyError",
    "UniqueOpts",
    "UnknownJobKindError",
    "UnserializableArgsError",
    "Worker",
    "WorkerConfig",
    "Workers",
    "__version__",
    # hooks
    "Hook",
    "InsertingJob",
    "WorkOutcome",
    "add_hook",
    "hooks_installed",
    "remove_hook",
    # waiting for a job
    "wait_for",
    "wait_for_async",
    # enqueue
    "insert",
    "insert_async",
    "insert_many",
    "insert_many_async",
    "insert_many_fast",
    "insert_many_fast_async",
    # enqueue from the unit of work (sa_river/staging.py)
    "StagedJob",
    "enable_insert_on_flush",
    "insert_on_flush",
    # control
    "cancel_job",
    "cancel_job_async",
    "cancel_jobs",
    "cancel_jobs_async",
    "complete_in",
    "complete_in_async",
    "default_retry_policy",
    "delete_job",
    "delete_job_async",
    "delete_jobs",
    "delete_jobs_async",
    "get_job",
    "get_job_async",
    "list_jobs",
    "list_jobs_async",
    "pause_queue",
    "pause_queue_async",
    "resume_queue",
    "resume_queue_async",
    "retry_job",
    "retry_job_async",
    "retry_jobs",
    "retry_jobs_async",
}


def test_all_is_sorted() -> None:
    assert list(sa_river.__all__) == sorted(sa_river.__all__)


def test_all_has_no_duplicates() -> None:
    assert len(set(sa_river.__all__)) == len(sa_river.__all__)


def test_all_matches_the_expected_public_names() -> None:
    names = set(sa_river.__all__)
    assert not EXPECTED_PUBLIC_NAMES - names, "public names missing from __all__"
    assert not names - EXPECTED_PUBLIC_NAMES, "new public names: add them to this test"


def test_every_name_resolves() -> None:
    for name in sa_river.__all__:
        assert hasattr(sa_river, name), name
        assert getattr(sa_river, name) is not None, name


def test_star_import_gives_exactly_all() -> None:
    namespace: dict[str, object] = {}
    exec("from sa_river import *", namespace)
    namespace.pop("__builtins__", None)
    assert set(namespace) == set(sa_river.__all__)


def test_no_sa_river_object_at_top_level_is_left_out_of_all() -> None:
    # Every class or function sa_river defines and exposes at the top level is public.
    for name in dir(sa_river):
        if name.startswith("_"):
            continue
        value = getattr(sa_river, name)
        if getattr(value, "__name__", None) == f"sa_river.{name}":
            continue  # a submodule, imported as a side effect
        module = getattr(value, "__module__", None) or ""
        if module.startswith("sa_river"):
            assert name in sa_river.__all__, f"{name} from {module} is not in __all__"


def test_public_classes_and_functions_come_from_sa_river() -> None:
    for name in sa_river.__all__:
        value = getattr(sa_river, name)
        # Type aliases and __version__ are skipped; on Python 3.10 a parametrised
        # collections.abc alias (RetryPolicy) passes for a class.
        if isinstance(value, types.GenericAlias) or not (
            inspect.isclass(value) or inspect.isfunction(value)
        ):
            continue
        assert value.__module__.startswith("sa_river."), (name, value.__module__)
        assert getattr(importlib.import_module(value.__module__), name) is value


def test_the_errors_are_value_errors_naming_a_field() -> None:
    for error in (sa_river.InvalidJobError, sa_river.UnserializableArgsError):
        assert issubclass(error, ValueError)
        assert issubclass(error, sa_river.SaRiverError)
        assert error("priority", "bad").field == "priority"


def test_version_is_a_string() -> None:
    assert isinstance(sa_river.__version__, str)
    assert sa_river.__version__
