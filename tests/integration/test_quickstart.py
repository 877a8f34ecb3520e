"""docs/quickstart.md, followed as a reader follows it: block by block, in an empty folder.

The page is a path of files and shell commands, and this test takes it in order:

- a python block with a title (```` ```python title="myapp/models.py" ````) is a file: it is
  written to that path in the project folder;
- a shell block runs in ``bash -e``, in one shell session: its exports and ``cd`` carry over to
  the next block, as in the reader's terminal. ``python`` and ``alembic`` are this checkout's
  virtual environment's, as after the page's ``. .venv/bin/activate``;
- ``python -m sa_river worker`` does not return: it is started in the background (the reader
  leaves it running), and stopped at the end with SIGINT (the reader's Ctrl-C), which must end
  it with exit code 0;
- a ``text`` block right after a shell block is that command's output (stdout and stderr, as a
  terminal shows them), where a line ``...`` stands for any lines and a ``...`` in a line for
  any text. While the worker
  runs, a command whose output does not match yet is run again, until a deadline;
- a block with a ``docs-test: skip (...)`` marker is not run (here: creating the virtual
  environment and installing sa_river into it); tests/integration/test_docs_examples.py honours
  the same markers and leaves this page to this test (its ``PROJECT_PAGES``).

The page's database URL, ``postgresql+psycopg://postgres@127.0.0.1:5432/app``, is replaced by a
new empty database's, as a reader puts their own. The environment starts without any
``SA_RIVER_*`` or ``DATABASE_URL`` variable, so the page must set what it needs.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from sqlalchemy.engine import URL
from test_docs_examples import (
    _SHELL,
    PROJECT_PAGES,
    ROOT,
    Block,
    _sa_river_commands,
    parse_blocks,
)

PAGE = ROOT / "docs" / "quickstart.md"
PAGE_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/app"
COMMAND_TIMEOUT = 60.0  # one command (alembic, a script): seconds, far above a healthy run
OUTPUT_DEADLINE = 30.0  # how long output may take to match while the worker runs
STOP_TIMEOUT = 40.0  # the worker's graceful stop: its 30 s shutdown timeout, and some


def _where(block: Block) -> str:
    return f"{block.page}:{block.line}"


def _matches(want: str, got: str) -> bool:
    """Does ``got`` read as ``want``? A line ``...`` stands for any number of lines, a ``...``
    within a line for any text; trailing spaces are ignored."""
    pattern = []
    for line in want.strip("\n").splitlines():
        if line.strip() == "...":
            pattern.append(r"(?:.*\n)*?")
        else:
            parts = line.rstrip().split("...")
            pattern.append(".*?".join(re.escape(part) for part in parts) + r"\n")
    lines = "".join(line.rstrip() + "\n" for line in got.splitlines())
    return re.fullmatch("".join(pattern), lines) is not None


@dataclass
class Terminal:
    """One shell session in ``folder``: environment and working directory carry over."""

    folder: Path
    state: Path  # where each block leaves its environment, outside the project folder
    env: dict[str, str]
    cwd: Path = field(init=False)
    background: list[tuple[Block, subprocess.Popen[bytes], Path]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.cwd = self.folder

    def _script(self, code: str) -> str:
        return (
            f"{code}\n"
            f'env -0 > "{self.state}/env"\n'  # what the block exported, for the next block
            f'pwd > "{self.state}/pwd"\n'
        )

    def run(self, block: Block, code: str) -> str:
        """Run a shell block to its end; its output, or a failure naming the block."""
        try:
            done = subprocess.run(
                ["bash", "-e", "-c", self._script(code)],
                cwd=self.cwd,
                env=self.env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                timeout=COMMAND_TIMEOUT,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            pytest.fail(f"{_where(block)}: still running after {exc.timeout:g}s", pytrace=False)
        output = done.stdout.decode(errors="replace")
        if done.returncode != 0:
            pytest.fail(
                f"{_where(block)}: exit code {done.returncode}\n{code}\n--- output ---\n{output}",
                pytrace=False,
            )
        env = (self.state / "env").read_bytes().split(b"\0")
        self.env = dict(e.decode().split("=", 1) for e in env if b"=" in e)
        self.cwd = Path((self.state / "pwd").read_text().strip())
        return output

    def start(self, block: Block, code: str) -> Path:
        """Start a command that runs until stopped (the worker); the file its output goes to."""
        log = self.state / f"background-{block.line}.log"
        # A terminal's stdout is line-buffered; a file's is not: let prints through at once.
        env = {**self.env, "PYTHONUNBUFFERED": "1"}
        with log.open("wb") as out:
            process = subprocess.Popen(
                ["bash", "-e", "-c", f"exec {code}"],
                cwd=self.cwd,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group, as a terminal's foreground job
            )
        self.background.append((block, process, log))
        return log

    def stop_background(self) -> None:
        """Ctrl-C each background command; each must exit 0 within ``STOP_TIMEOUT``."""
        for block, process, log in self.background:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGINT)
            try:
                code = process.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)
                pytest.fail(f"{_where(block)}: did not stop on Ctrl-C\n{log.read_text()}")
            assert code == 0, f"{_where(block)}: exit code {code} after Ctrl-C\n{log.read_text()}"
        self.background.clear()

    def kill_background(self) -> None:
        for _, process, _ in self.background:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)

    def running(self) -> bool:
        return any(process.poll() is None for _, process, _ in self.background)


def _runs_forever(code: str) -> bool:
    return any(args[:1] == ["worker"] for args in _sa_river_commands(code))


def _clean_environment() -> dict[str, str]:
    """This process's environment as a fresh terminal with the virtual environment active."""
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("SA_RIVER_", "PYTEST_", "PYTHON")) and name != "DATABASE_URL"
    }
    venv_bin = str(Path(sys.executable).parent)
    env["PATH"] = os.pathsep.join([venv_bin, env.get("PATH", "")])
    env["VIRTUAL_ENV"] = str(Path(sys.executable).parent.parent)
    return env


def test_the_page_is_files_and_commands() -> None:
    """Every block of the page is one this test knows how to follow, and the page is left to
    this test by test_docs_examples.py: a reader never meets a block that nothing checks."""
    assert PROJECT_PAGES["docs/quickstart.md"] == "tests/integration/test_quickstart.py"
    blocks = parse_blocks(PAGE)
    previous: Block | None = None
    for block in blocks:
        if block.skip is None:
            kind_ok = (
                (block.language == "python" and block.file is not None)
                or block.language in _SHELL
                or (
                    block.language == "text"
                    and previous is not None
                    and previous.language in _SHELL
                )
            )
            assert kind_ok, (
                f"{_where(block)}: a quickstart block is a file (python title=...), a shell "
                "block, or the text output right after a shell block"
            )
        previous = block
    assert sum(b.skip is not None for b in blocks) <= 1, "only the install step may be skipped"
    assert any(PAGE_URL in b.code for b in blocks if b.skip is None), f"no {PAGE_URL} to replace"


def test_env_py_highlights_the_sa_river_lines() -> None:
    """The lines the page highlights in alembic/env.py are the ones that call sa_river."""
    (block,) = [b for b in parse_blocks(PAGE) if b.file == "alembic/env.py"]
    highlighted = re.search(r'hl_lines="([\d ]+)"', block.attrs)
    assert highlighted, f"{_where(block)}: no hl_lines"
    lines = block.code.splitlines()
    shown = [lines[int(n) - 1].strip() for n in highlighted.group(1).split()]
    assert len(shown) == 2, shown  # the page calls them "the two highlighted lines"
    assert shown[0].startswith("sa_river.migrate.upgrade(connection)"), shown
    assert shown[1].startswith("include_name=sa_river.migrate.include_name"), shown


@dataclass
class Ran:
    """The last shell block run: its code (URL replaced), and its output or its log file."""

    block: Block
    code: str
    output: str = ""
    log: Path | None = None  # a background command's output file


@pytest.mark.timeout(240)
def test_the_quickstart_runs(empty_db_url: URL, tmp_path: Path) -> None:
    """Follow the page in an empty folder: the job it enqueues is worked by the worker command,
    and every output the page shows is what the commands print."""
    url = empty_db_url.render_as_string(hide_password=False)
    folder = tmp_path / "project"
    state = tmp_path / "shell"
    folder.mkdir()
    state.mkdir()
    terminal = Terminal(folder, state, _clean_environment())
    last: Ran | None = None
    try:
        for block in parse_blocks(PAGE):
            if block.skip is not None:
                continue
            code = block.code.replace(PAGE_URL, url)
            if block.language == "python":
                assert block.file is not None
                path = terminal.cwd / block.file
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(code)
            elif block.language in _SHELL and _runs_forever(code):
                last = Ran(block, code, log=terminal.start(block, code))
            elif block.language in _SHELL:
                last = Ran(block, code, output=terminal.run(block, code))
            elif block.language == "text":
                assert last is not None
                _check_output(terminal, block, last)
        terminal.stop_background()
    finally:
        terminal.kill_background()
    # What the page says of autogenerate: a revision for the users table, none of the queue's.
    (revision,) = (folder / "alembic" / "versions").glob("*_users.py")
    source = revision.read_text()
    assert "create_table('users'" in source or 'create_table("users"' in source, source
    assert "river" not in source, source


def _check_output(terminal: Terminal, want: Block, ran: Ran) -> None:
    """The text block ``want`` is the output of the shell block before it."""
    deadline = time.monotonic() + OUTPUT_DEADLINE
    while True:
        got = ran.output if ran.log is None else ran.log.read_text(errors="replace")
        if _matches(want.code, got):
            return
        if not terminal.running() or time.monotonic() > deadline:
            pytest.fail(
                f"{_where(want)}: the output of {_where(ran.block)} does not match\n"
                f"--- the page shows ---\n{want.code}--- the command printed ---\n{got}",
                pytrace=False,
            )
        time.sleep(0.2)
        if ran.log is None:  # run it again, as a reader would while the worker works
            ran.output = terminal.run(ran.block, ran.code)
