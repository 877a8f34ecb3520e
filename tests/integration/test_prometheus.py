"""``sa_river.contrib.prometheus`` and ``worker --metrics-port`` against real PostgreSQL.

In process: a real Worker with the metrics server on a free port and a fresh
``CollectorRegistry``, jobs that complete, fail and retry, are discarded and snooze, and
``/metrics`` scraped over HTTP with urllib. Through the CLI: ``python -m sa_river worker
--metrics-port`` (and ``--processes 2``) in a subprocess, scraped until its counters show the
jobs, then stopped with SIGTERM. Every wait is bounded; every process started here is killed
on the way out if still alive.
"""

from __future__ import annotations

import importlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from _worker_helpers import insert_job, process_alive, running_worker, wait_until
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import Engine, text
from sqlalchemy.engine import URL

import sa_river
from sa_river import InsertOpts, Job, JobSnooze, UniqueOpts, Workers
from sa_river.contrib.prometheus import (
    DURATION_BUCKETS,
    PrometheusMetrics,
    QueueDepthCollector,
    start_metrics_server,
)
from sa_river.hooks import installed_hooks

HERE = Path(__file__).parent

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(url: str) -> Samples:
    """Every sample served at ``url``: ``(name, sorted labels) -> value``."""
    with urllib.request.urlopen(url, timeout=5) as response:
        body = response.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): float(sample.value)
        for family in text_string_to_metric_families(body)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    """The sample ``name{labels}``; 0 when absent (a labelled counter never incremented)."""
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def no_retry_delay(attempt: int) -> timedelta:
    return timedelta(0)


# --- in process --------------------------------------------------------------------------------


def test_metrics_of_an_in_process_worker(db_url: URL, engine: Engine) -> None:
    release = threading.Event()
    workers = Workers()

    @workers.handler("ok")
    def ok(job: Job[dict[str, Any]]) -> None:
        return None

    @workers.handler("flaky", retry=no_retry_delay)
    def flaky(job: Job[dict[str, Any]]) -> None:
        if job.attempt == 1:
            raise ValueError("the first attempt fails")

    @workers.handler("doomed")
    def doomed(job: Job[dict[str, Any]]) -> None:
        raise ValueError("always fails")

    @workers.handler("sleepy")
    def sleepy(job: Job[dict[str, Any]]) -> None:
        raise JobSnooze(timedelta(hours=1))

    @workers.handler("blocker")
    def blocker(job: Job[dict[str, Any]]) -> None:
        release.wait(20)

    registry = CollectorRegistry()
    with running_worker(db_url, workers, {"default": 10}) as worker:
        server = start_metrics_server(
            0, "127.0.0.1", worker=worker, registry=registry, queue_depth_interval=0
        )
        try:
            assert server.port > 0
            assert server.url == f"http://127.0.0.1:{server.port}/metrics"
            assert server.hook in installed_hooks()
            url = server.url

            later = datetime.now(timezone.utc) + timedelta(hours=1)
            for i in range(3):
                insert_job(engine, "ok", {"i": i})
            unique = InsertOpts(unique=UniqueOpts(by_args=True))
            insert_job(engine, "ok", {"unique": True}, unique)
            duplicate = sa_river.insert(engine, ("ok", {"unique": True}), unique)
            assert duplicate.unique_skipped_as_duplicate
            insert_job(engine, "ok", {"later": True}, InsertOpts(scheduled_at=later))
            insert_job(engine, "ok", {"held": True}, InsertOpts(pending=True))
            insert_job(engine, "ok", {}, InsertOpts(queue="elsewhere"))  # no worker there
            insert_job(engine, "flaky")
            insert_job(engine, "doomed", opts=InsertOpts(max_attempts=1))
            insert_job(engine, "sleepy")

            expected_worked = {
                ("ok", "completed"): 4.0,
                ("flaky", "retried"): 1.0,
                ("flaky", "completed"): 1.0,
                ("doomed", "discarded"): 1.0,
                ("sleepy", "snoozed"): 1.0,
            }

            def worked() -> dict[tuple[str, str], float]:
                samples = scrape(url)
                return {
                    key: value(
                        samples,
                        "sa_river_jobs_worked_total",
                        kind=key[0],
                        queue="default",
                        result=key[1],
                    )
                    for key in expected_worked
                }

            wait_until(
                lambda: worked() == expected_worked,
                10,
                interval=0.1,
                message=lambda: f"the worked counters to reach {expected_worked}: {worked()}",
            )
            wait_until(worker.is_leader, 10, message="the worker to be elected leader")

            # One job held in its handler shows as running, in this process and in the table.
            insert_job(engine, "blocker")

            def blocker_running() -> Samples | None:
                s = scrape(url)
                running = (
                    value(s, "sa_river_jobs_running") == 1
                    and value(s, "sa_river_queue_jobs", queue="default", state="running") == 1
                )
                return s if running else None

            wait_until(blocker_running, 10, interval=0.1, message="the blocker job to run")
            release.set()

            def blocker_done() -> Samples | None:
                s = scrape(url)
                done = (
                    value(
                        s,
                        "sa_river_jobs_worked_total",
                        kind="blocker",
                        queue="default",
                        result="completed",
                    )
                    == 1
                    and value(s, "sa_river_queue_jobs", queue="default", state="running") == 0
                )
                return s if done else None

            s = wait_until(blocker_done, 10, interval=0.1, message="the blocker job to complete")
        finally:
            release.set()
            server.stop()

    # Attempts that failed, and those of them that will run again.
    assert value(s, "sa_river_jobs_failed_total", kind="flaky", queue="default") == 1
    assert value(s, "sa_river_jobs_failed_total", kind="doomed", queue="default") == 1
    assert value(s, "sa_river_jobs_failed_total", kind="sleepy", queue="default") == 0
    assert value(s, "sa_river_jobs_failed_total", kind="ok", queue="default") == 0
    assert value(s, "sa_river_jobs_retried_total", kind="flaky", queue="default") == 1
    assert value(s, "sa_river_jobs_retried_total", kind="doomed", queue="default") == 0

    # One duration per attempt, in buckets up to +Inf.
    duration = "sa_river_job_duration_seconds"
    assert value(s, f"{duration}_count", kind="ok", queue="default") == 4
    assert value(s, f"{duration}_count", kind="flaky", queue="default") == 2
    assert value(s, f"{duration}_count", kind="blocker", queue="default") == 1
    assert value(s, f"{duration}_bucket", kind="ok", queue="default", le="+Inf") == 4
    assert value(s, f"{duration}_bucket", kind="ok", queue="default", le="1.0") == 4
    assert value(s, f"{duration}_sum", kind="blocker", queue="default") > 0
    buckets = {
        dict(labels)["le"]
        for name, labels in s
        if name == f"{duration}_bucket" and dict(labels)["kind"] == "ok"
    }
    assert len(buckets) == len(DURATION_BUCKETS) + 1

    # Inserts: the unique duplicate is not counted.
    inserted = "sa_river_jobs_inserted_total"
    assert value(s, inserted, kind="ok", queue="default") == 6
    assert value(s, inserted, kind="ok", queue="elsewhere") == 1
    for kind in ("flaky", "doomed", "sleepy", "blocker"):
        assert value(s, inserted, kind=kind, queue="default") == 1, kind

    # Unfinished jobs per queue and state, zeros included.
    queue_jobs = {
        (dict(labels)["queue"], dict(labels)["state"]): n
        for (name, labels), n in s.items()
        if name == "sa_river_queue_jobs"
    }
    states = ("available", "pending", "retryable", "running", "scheduled")
    assert queue_jobs == {
        **{("default", state): 0.0 for state in states},
        ("default", "scheduled"): 2.0,  # the snoozed job and the one scheduled later
        ("default", "pending"): 1.0,
        **{("elsewhere", state): 0.0 for state in states},
        ("elsewhere", "available"): 1.0,
    }
    assert value(s, "sa_river_queue_jobs_query_failures_total") == 0
    assert value(s, "sa_river_leader") == 1
    assert value(s, "sa_river_jobs_running") == 0

    # Stopped: nothing served, the hook removed, the registry empty again.
    assert server.hook not in installed_hooks()
    with pytest.raises(urllib.error.URLError):
        scrape(url)
    assert list(registry.collect()) == []
    server.stop()  # idempotent


def test_the_queue_gauge_is_cached_and_bounded_by_its_timeout(db_url: URL, engine: Engine) -> None:
    insert_job(engine, "ok")
    cached = QueueDepthCollector(engine, interval=60, timeout=0.5)
    first = cached.counts()
    assert first is not None
    assert first["default"] == {sa_river.JobState.AVAILABLE: 1}
    insert_job(engine, "ok")
    assert cached.counts() == first  # within the interval: not counted again

    # A table locked by someone else: the count gives up after its statement timeout.
    bounded = QueueDepthCollector(engine, interval=60, timeout=0.5)
    with engine.connect() as locker:
        locker.execute(text("LOCK TABLE river_job IN ACCESS EXCLUSIVE MODE"))
        started = time.monotonic()
        families = list(bounded.collect())
        elapsed = time.monotonic() - started
        locker.rollback()
    assert elapsed < 3, elapsed
    assert [f.name for f in families] == ["sa_river_queue_jobs_query_failures"]
    assert families[0].samples[0].value == 1
    assert bounded.counts() is None  # the failure is remembered for the interval too


def test_a_second_hook_on_one_registry_is_refused_until_the_first_is_unregistered() -> None:
    registry = CollectorRegistry()
    first = PrometheusMetrics(registry)
    with pytest.raises(ValueError, match="Duplicated"):
        PrometheusMetrics(registry)
    first.unregister()
    PrometheusMetrics(registry).unregister()
    assert list(registry.collect()) == []


def test_a_port_in_use_raises_and_leaves_nothing_registered() -> None:
    registry = CollectorRegistry()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        hooks_before = installed_hooks()
        with pytest.raises(OSError, match="in use"):
            start_metrics_server(port, "127.0.0.1", registry=registry)
    assert installed_hooks() == hooks_before
    assert list(registry.collect()) == []


def test_without_prometheus_client_import_and_cli_say_which_extra(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from sa_river import cli

    monkeypatch.setitem(sys.modules, "prometheus_client", None)  # makes the import fail
    monkeypatch.delitem(sys.modules, "sa_river.contrib.prometheus")
    with pytest.raises(ImportError, match=r"pip install 'sa_river\[prometheus\]'"):
        importlib.import_module("sa_river.contrib.prometheus")

    import io

    out, err = io.StringIO(), io.StringIO()
    code = cli.main(
        ["worker", "--app", "nowhere:workers", "--metrics-port", "9100"], stdout=out, stderr=err
    )
    assert code == cli.EXIT_ERROR
    lines = err.getvalue().splitlines()
    assert len(lines) == 1, lines
    assert "--metrics-port" in lines[0]
    assert "pip install 'sa_river[prometheus]'" in lines[0]


def test_cli_metrics_addr_without_a_port_is_a_one_line_error() -> None:
    import io

    from sa_river import cli

    err = io.StringIO()
    argv = ["worker", "--app", "nowhere:workers", "--metrics-addr", "127.0.0.1"]
    assert cli.main(argv, stdout=io.StringIO(), stderr=err) == cli.EXIT_ERROR
    assert err.getvalue() == "sa-river: error: --metrics-addr needs --metrics-port\n"


# --- through the CLI ---------------------------------------------------------------------------


class CliProcess:
    """``python -m sa_river worker ...`` with its stdout collected line by line."""

    def __init__(self, argv: list[str], db_url: URL, log: Path) -> None:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(HERE), env.get("PYTHONPATH")]))
        env.pop("SA_RIVER_DATABASE_URL", None)
        self.log_path = log
        self._log = log.open("w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "sa_river", *argv],
            env=env,
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def output(self) -> str:
        self._log.flush()
        return "\n".join(self.lines) + "\n--- stderr:\n" + self.log_path.read_text()[-3000:]

    def metrics_urls(self, count: int, timeout: float = 30) -> list[str]:
        """The first ``count`` URLs announced as ``metrics on URL``."""

        def announced() -> list[str] | None:
            urls = [line.split()[-1] for line in self.lines if line.startswith("metrics on ")]
            return urls if len(urls) >= count else None

        return wait_until(
            announced, timeout, interval=0.05, message=lambda: f"metrics URLs: {self.output()}"
        )

    def stop(self, timeout: float = 20) -> int:
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"worker did not exit within {timeout:g}s after SIGTERM: {self.output()}"
            ) from None

    def cleanup(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self._reader.join(5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self._log.close()


@pytest.fixture
def cli_processes(engine: Engine) -> Iterator[list[CliProcess]]:
    started: list[CliProcess] = []
    yield started
    for process in started:
        process.cleanup()
    # Supervised children run in sessions of their own: make sure none outlives the test.
    with engine.connect() as conn:
        pids = [int(pid) for pid in conn.execute(text("SELECT pid FROM sa_river_client")).scalars()]
    for pid in pids:
        if pid != os.getpid() and process_alive(pid):
            os.kill(pid, signal.SIGKILL)


def _worker_argv(db_url: URL, *extra: str) -> list[str]:
    return [
        "worker",
        "--app",
        "_metrics_app:workers",
        "--database-url",
        db_url.render_as_string(hide_password=False),
        "--poll-interval",
        "0.2",
        "--shutdown-timeout",
        "5",
        "--metrics-addr",
        "127.0.0.1",
        *extra,
    ]


def _free_port_pair() -> int:
    """A port P such that P and P + 1 were both free a moment ago."""
    for _ in range(50):
        with socket.socket() as first:
            first.bind(("127.0.0.1", 0))
            port = first.getsockname()[1]
            if port >= 65535:
                continue
            with socket.socket() as second:
                try:
                    second.bind(("127.0.0.1", port + 1))
                except OSError:
                    continue
        return int(port)
    raise AssertionError("no two consecutive free ports found")


def test_cli_serves_metrics_while_the_worker_runs(
    db_url: URL, engine: Engine, tmp_path: Path, cli_processes: list[CliProcess]
) -> None:
    process = CliProcess(_worker_argv(db_url, "--metrics-port", "0"), db_url, tmp_path / "log")
    cli_processes.append(process)
    [url] = process.metrics_urls(1)
    assert url.startswith("http://127.0.0.1:")

    sa_river.insert_many(engine, [("noop", {"i": i}) for i in range(5)])
    insert_job(engine, "boom", opts=InsertOpts(max_attempts=1))

    def counted() -> Samples | None:
        s = scrape(url)
        done = (
            value(s, "sa_river_jobs_worked_total", kind="noop", queue="default", result="completed")
            == 5
            and value(
                s, "sa_river_jobs_worked_total", kind="boom", queue="default", result="discarded"
            )
            == 1
        )
        return s if done else None

    s = wait_until(counted, 20, interval=0.1, message=lambda: f"the counters: {process.output()}")
    assert value(s, "sa_river_jobs_failed_total", kind="boom", queue="default") == 1
    assert value(s, "sa_river_job_duration_seconds_count", kind="noop", queue="default") == 5
    assert ("sa_river_leader", ()) in s
    assert ("sa_river_jobs_running", ()) in s
    assert any(name == "sa_river_queue_jobs" for name, _ in s)
    assert any(name.startswith("python_") for name, _ in s)  # the default registry's own

    assert process.stop() == 0, process.output()
    with pytest.raises(urllib.error.URLError):
        scrape(url)


def test_cli_processes_serve_metrics_on_consecutive_ports(
    db_url: URL, engine: Engine, tmp_path: Path, cli_processes: list[CliProcess]
) -> None:
    base = _free_port_pair()
    argv = _worker_argv(db_url, "--processes", "2", "--metrics-port", str(base))
    process = CliProcess(argv, db_url, tmp_path / "log")
    cli_processes.append(process)
    urls = sorted(process.metrics_urls(2))
    assert urls == [f"http://127.0.0.1:{base}/metrics", f"http://127.0.0.1:{base + 1}/metrics"]

    total = 30
    sa_river.insert_many(engine, [("noop", {"i": i}) for i in range(total)])

    def all_worked() -> list[Samples] | None:
        scraped = [scrape(url) for url in urls]
        done = sum(
            value(s, "sa_river_jobs_worked_total", kind="noop", queue="default", result="completed")
            for s in scraped
        )
        return scraped if done == total else None

    wait_until(all_worked, 20, interval=0.1, message=lambda: f"{total} jobs: {process.output()}")
    leaders = wait_until(
        lambda: sum(value(scrape(url), "sa_river_leader") for url in urls) == 1,
        20,
        interval=0.1,
        message="exactly one leader among the two processes",
    )
    assert leaders

    assert process.stop(30) == 0, process.output()
    for url in urls:
        with pytest.raises(urllib.error.URLError):
            scrape(url)


def test_cli_port_in_use_is_a_one_line_error(
    db_url: URL, tmp_path: Path, cli_processes: list[CliProcess]
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        process = CliProcess(
            _worker_argv(db_url, "--metrics-port", str(port)), db_url, tmp_path / "log"
        )
        cli_processes.append(process)
        try:
            code = process.proc.wait(30)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"the worker kept running: {process.output()}") from None
    assert code == 1, process.output()
    stderr = process.log_path.read_text()
    assert "Traceback" not in stderr
    [error] = [line for line in stderr.splitlines() if line.startswith("sa-river: error:")]
    assert error.startswith(f"sa-river: error: cannot serve metrics on 127.0.0.1:{port}: ")


def test_cli_json_logs_are_one_object_per_line_with_the_documented_fields(
    db_url: URL, engine: Engine, tmp_path: Path, cli_processes: list[CliProcess]
) -> None:
    argv = _worker_argv(db_url, "--metrics-port", "0", "--log-format", "json")
    process = CliProcess(argv, db_url, tmp_path / "log")
    cli_processes.append(process)
    process.metrics_urls(1)
    # The job goes in once the start is logged: a runner may fetch before its main thread logs
    # "started", and the job's own (application) line would then come first.
    wait_until(
        lambda: '"event": "worker_started"' in process.log_path.read_text(),
        20,
        message=lambda: f"a worker_started line: {process.output()}",
    )
    job_id = insert_job(engine, "boom", opts=InsertOpts(max_attempts=1))

    def failure_logged() -> bool:
        return '"event": "job_failed"' in process.log_path.read_text()

    wait_until(failure_logged, 20, message=lambda: f"a job_failed line: {process.output()}")
    assert process.stop() == 0, process.output()
    entries = [json.loads(line) for line in process.log_path.read_text().splitlines() if line]
    events = [entry.get("event") for entry in entries]
    assert events[:2] == ["metrics_serving", "worker_started"], entries[:4]
    assert events[-1] == "worker_stopped", entries[-3:]
    [failed] = [entry for entry in entries if entry.get("event") == "job_failed"]
    assert failed["job_id"] == job_id
    assert failed["kind"] == "boom"
    assert failed["queue"] == "default"
    assert failed["attempt"] == 1
    assert failed["level"] == "INFO"
    # The application's own records come out too, in the same format.
    [own] = [entry for entry in entries if entry["logger"] == "metrics_app"]
    assert own["message"] == f"about to fail job {job_id}"
