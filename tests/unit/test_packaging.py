"""What pyproject.toml promises about dependencies stays what CI checks.

Every floor in ``pyproject.toml`` is a claim: "sa_river works with this release". CI makes the
claim true by running the tests in ``.venv-lowest`` with ``ci/constraints-lowest.txt``, which pins
each direct dependency to its floor. The two lists are written by hand, so they are compared here:
a floor raised (or a dependency added) in one place only fails this test, not a user's install.
"""

from __future__ import annotations

import re
import sys
from itertools import pairwise
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10 (pytest itself depends on tomli there)
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[2]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
CONSTRAINTS = ROOT / "ci" / "constraints-lowest.txt"


def _requirements() -> dict[str, list[Requirement]]:
    """The requirements of the core ("") and of each extra, without sa_river's own extras."""
    groups = {"": PROJECT["dependencies"], **PROJECT["optional-dependencies"]}
    return {
        group: [
            req
            for req in map(Requirement, lines)
            if canonicalize_name(req.name) != canonicalize_name(PROJECT["name"])
        ]
        for group, lines in groups.items()
    }


def _floor(req: Requirement) -> Version:
    floors = [Version(spec.version) for spec in req.specifier if spec.operator == ">="]
    assert len(floors) == 1, f"{req} must declare exactly one floor (>=)"
    return floors[0]


def _declared_floors() -> dict[str, Version]:
    floors: dict[str, Version] = {}
    for group, reqs in _requirements().items():
        for req in reqs:
            name = canonicalize_name(req.name)
            floor = _floor(req)
            assert floors.setdefault(name, floor) == floor, (
                f"{req.name} has two floors ({floors[name]} and {floor}, extra {group!r})"
            )
    return floors


def _pinned() -> dict[str, Version]:
    pins: dict[str, Version] = {}
    for number, raw in enumerate(CONSTRAINTS.read_text(encoding="utf-8").splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        match = re.fullmatch(r"([A-Za-z0-9._-]+)==([0-9][0-9A-Za-z.]*)", line)
        assert match, f"{CONSTRAINTS.name}:{number}: expected name==version, got {raw!r}"
        name = canonicalize_name(match[1])
        assert name not in pins, f"{CONSTRAINTS.name}:{number}: {match[1]} pinned twice"
        pins[name] = Version(match[2])
    return pins


def test_the_lowest_deps_constraints_pin_every_declared_floor_and_nothing_else() -> None:
    assert _pinned() == _declared_floors()


def test_the_core_depends_on_plain_psycopg_and_extras_choose_the_binary_driver() -> None:
    reqs = _requirements()
    core = {canonicalize_name(r.name): r for r in reqs[""]}
    assert core["psycopg"].extras == set(), "libraries depend on plain psycopg"
    (binary,) = reqs["binary"]
    assert (canonicalize_name(binary.name), binary.extras) == ("psycopg", {"binary"})
    assert _floor(binary) == _floor(core["psycopg"])
    # What installs sa_river to run something (the demo, the examples, the tests) gets a driver
    # that needs no libpq on the machine.
    for extra in ("embedded", "examples", "dev"):
        own = [
            Requirement(line)
            for line in PROJECT["optional-dependencies"][extra]
            if canonicalize_name(Requirement(line).name) == canonicalize_name(PROJECT["name"])
        ]
        assert any("binary" in req.extras for req in own), f"[{extra}] lacks sa_river[binary]"


def test_the_classifiers_name_the_python_versions_requires_python_allows() -> None:
    declared = [
        Version(c.rsplit(" :: ", 1)[1])
        for c in PROJECT["classifiers"]
        if re.fullmatch(r"Programming Language :: Python :: 3\.\d+", c)
    ]
    floor = Version(PROJECT["requires-python"].removeprefix(">="))
    assert declared == sorted(declared)
    assert declared[0] == floor, "the oldest classifier is the requires-python floor"
    assert all(b.minor == a.minor + 1 for a, b in pairwise(declared))
