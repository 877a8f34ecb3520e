"""What a bench run was asked for and what it found: options, result rows, the report.

Kept apart from the workloads so the command line (which validates ``--workloads`` against
:data:`WORKLOADS`) and the renderers need none of the machinery that runs them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.engine import URL

import sa_river

__all__ = ["TARGETS", "WORKLOADS", "BenchOptions", "BenchReport", "Result", "render_table"]

WORKLOADS = (
    "enqueue-single",
    "enqueue-batch",
    "enqueue-unique",
    "enqueue-copy",
    "burn-down",
    "continuous",
    "latency",
)
"""Every workload, in the order they run and are reported."""

TARGETS: dict[str, tuple[str, float]] = {
    "enqueue-single": (">=", 0.75),
    "enqueue-batch": (">=", 0.80),
    "enqueue-unique": (">=", 0.80),
    "enqueue-copy": (">=", 0.70),
    "burn-down": (">=", 0.60),
    "latency p50": ("<=", 1.5),
    "latency p99": ("<=", 2.0),
}
"""The ratio each row should reach: throughput at least, latency at most. A row that misses is
flagged in the table (and ``meets_target`` in the JSON); the run still succeeds, because a shared
machine can miss a target by noise alone."""


@dataclass(frozen=True)
class BenchOptions:
    """What ``python -m sa_river bench`` was asked for."""

    server_url: URL
    n: int = 20000
    processes: int = 1
    concurrency: int = 100
    duration: float = 10.0
    retained: int = 0
    rounds: int = 1
    workloads: tuple[str, ...] = WORKLOADS


@dataclass
class Result:
    """One row of the table: sa_river's figure, the ceiling's, and their ratio."""

    workload: str
    unit: str  # "jobs/s" or "ms"
    sa_river: float
    ceiling: float
    jobs: int = 0
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ratio(self) -> float:
        return self.sa_river / self.ceiling if self.ceiling else float("nan")

    @property
    def target(self) -> tuple[str, float] | None:
        return TARGETS.get(self.workload)

    @property
    def meets_target(self) -> bool | None:
        target = self.target
        if target is None:
            return None
        op, value = target
        return self.ratio >= value if op == ">=" else self.ratio <= value

    def to_json(self) -> dict[str, Any]:
        target = self.target
        return {
            "workload": self.workload,
            "unit": self.unit,
            "jobs": self.jobs,
            "sa_river": round(self.sa_river, 3),
            "ceiling": round(self.ceiling, 3),
            "ratio": round(self.ratio, 3),
            "better": "lower" if self.unit == "ms" else "higher",
            "target": None if target is None else f"{target[0]}{target[1]}",
            "meets_target": self.meets_target,
            "note": self.note,
            **self.extra,
        }


@dataclass
class BenchReport:
    """A whole run: its options, its rows and the fetch plan, for the table or ``--json``."""

    options: BenchOptions
    results: list[Result]
    fetch_plan: list[str]
    fetch_index: str | None
    retained: int
    seconds: float

    def to_json(self) -> dict[str, Any]:
        o = self.options
        return {
            "sa_river_version": sa_river.__version__,
            "n": o.n,
            "processes": o.processes,
            "concurrency": o.concurrency,
            "duration_s": o.duration,
            "rounds": o.rounds,
            "retained": self.retained,
            "fetch_index": self.fetch_index,
            "fetch_plan": self.fetch_plan,
            "seconds": round(self.seconds, 1),
            "results": [r.to_json() for r in self.results],
        }


def render_table(report: BenchReport) -> str:
    """The human-readable table."""
    o = report.options
    lines = [
        f"sa_river {sa_river.__version__} bench: n={o.n}, processes={o.processes}, "
        f"concurrency={o.concurrency}, duration={o.duration:g}s, rounds={o.rounds} (median), "
        f"retained={report.retained:,}; {report.seconds:.0f}s",
    ]
    header = (
        f"{'workload':<16}{'sa_river':>12}{'ceiling':>12}{'unit':>8}{'ratio':>8}{'target':>9}  note"
    )
    lines += [header, "-" * len(header)]
    for r in report.results:
        target = r.target
        target_text = "" if target is None else f"{target[0]}{target[1]:.2f}"
        flag = "" if r.meets_target in (None, True) else "MISSED "
        value_format = "{:>12,.1f}" if r.unit == "ms" else "{:>12,.0f}"
        lines.append(
            f"{r.workload:<16}{value_format.format(r.sa_river)}{value_format.format(r.ceiling)}"
            f"{r.unit:>8}{r.ratio:>8.2f}{target_text:>9}  {flag}{r.note}".rstrip()
        )
    if report.fetch_plan:
        index = report.fetch_index or "none (sequential scan)"
        lines.append(
            f"fetch plan with {report.retained:,} retained finalised rows and "
            f"{o.n:,} available jobs: index {index}"
        )
        lines += [f"  {line}" for line in report.fetch_plan]
    return "\n".join(lines)
