"""Every code example in the documentation runs, against a real, freshly migrated database.

The convention (also in CONTRIBUTING.md, "Writing documentation"):

- Every fenced ```python block of README.md and docs/**/*.md is executed. The blocks of one page
  run in order, in one namespace (a module of their own), like a doctest session: a later block
  may use what an earlier one defined. Each page gets a new database with the river tables.
- The page's database URL is in the environment variable ``DATABASE_URL`` (a
  ``postgresql+psycopg://`` URL), so examples write
  ``engine = create_engine(os.environ["DATABASE_URL"])``. Nothing else is pre-bound.
- A python block made of ``>>>`` prompts runs as a doctest: its output must match.
- ```sql blocks run on the page's database, each in a transaction that is rolled back.
- A block that cannot run on its own (a fragment of a file, a file that another test runs) is
  preceded by ``<!-- docs-test: skip (REASON) -->`` on the line before its fence, where REASON
  names what runs it instead. Use it sparingly: the rule is that every example runs.
- A python block with a title (```` ```python title="myapp/jobs.py" ````, which the site shows
  as the file's name) is a file the reader writes, not code they run: it is written to that
  path, relative to the page's working directory, which is first on ``sys.path``. A later block
  of the page imports it (``from myapp.jobs import SendWelcome``), as the reader's own code
  would, and must: a file block nothing imports fails the page.
- A page that is a whole project, files and shell commands run in order
  (``PROJECT_PAGES``: docs/quickstart.md), is run by the test named there instead, in a
  temporary folder and subprocesses. Both tests honour the same skip markers.
- A ``--8<-- "path"`` line inside a block (pymdownx.snippets) is replaced by that file, as the
  site shows it.
- Examples must clean up after themselves: a ``sa_river.Worker`` they start must be stopped
  (the test fails otherwise), and an ``AsyncEngine`` should be disposed in its own event loop.
  The (sync) engines a page creates are disposed after it.
- Shell blocks (bash, sh, console, shell) that run ``python -m sa_river ...`` or ``sa-river ...``
  must parse with the real command line parser, and every inline code span that names such a
  command must name real (sub)commands and options: the CLI docs cannot drift from cli.py.

Failures name the page and the line of the block's opening fence.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import doctest
import gc
import importlib
import io
import re
import shlex
import sys
import textwrap
import traceback
import types
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncEngine

import sa_river
from sa_river.cli import build_parser

ROOT = Path(__file__).resolve().parents[2]
PAGES = sorted(
    [ROOT / "README.md", *(ROOT / "docs").rglob("*.md")],
    key=lambda p: p.relative_to(ROOT).as_posix(),
)

_FENCE = re.compile(
    r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})[ \t]*(?P<info>[^`\s]*)(?P<attrs>[^`]*)$"
)
_TITLE = re.compile(r'\btitle="(?P<title>[^"]+)"')
_MARKER = re.compile(r"^\s*<!--\s*docs-test:\s*(?P<what>.*?)\s*-->\s*$")
_SKIP = re.compile(r"^skip \((?P<reason>.+)\)$")
_SNIPPET = re.compile(r"""^\s*-{1,}8<-{1,}\s+["']([^"']+)["']\s*$""")
_INLINE_COMMAND = re.compile(r"`((?:python3? -m sa_river|sa-river)(?:\s[^`]*)?)`")
_SHELL = {"bash", "sh", "shell", "console"}
_PROGRAMS = ({"python", "python3"}, "sa-river")
_SHELL_OPERATORS = {"|", "||", "&", "&&", ";", ">", ">>", "<", "2>", "2>&1", ")", "("}


@dataclass
class Block:
    page: str
    line: int  # of the opening fence, 1-based
    language: str
    code: str
    skip: str | None  # the reason given by a docs-test: skip marker
    attrs: str = ""  # the rest of the fence line: title="...", hl_lines="..."

    @property
    def file(self) -> str | None:
        """The path of a file block (```python title="myapp/jobs.py"```), else ``None``."""
        title = _TITLE.search(self.attrs)
        return title.group("title") if title else None


def page_id(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def parse_blocks(path: Path) -> list[Block]:
    """The fenced blocks of a Markdown file, with their docs-test markers."""
    return parse_markdown(path.read_text(), page_id(path))


def parse_markdown(text: str, page: str) -> list[Block]:
    """The fenced blocks of Markdown ``text`` (named ``page`` in errors)."""
    lines = text.splitlines()
    blocks: list[Block] = []
    pending: tuple[int, str] | None = None  # (line, marker text) waiting for its fence
    i = 0
    while i < len(lines):
        line = lines[i]
        marker = _MARKER.match(line)
        if marker:
            pending = (i + 1, marker.group("what"))
            i += 1
            continue
        opening = _FENCE.match(line)
        if not opening:
            if line.strip() and pending is not None:
                raise AssertionError(
                    f"{page}:{pending[0]}: a docs-test marker must be on the line "
                    "right before a fence"
                )
            i += 1
            continue
        indent, fence = opening.group("indent"), opening.group("fence")
        language = opening.group("info").lower().lstrip("{.").rstrip("}")
        body: list[str] = []
        j = i + 1
        while j < len(lines) and not (
            lines[j].strip().startswith(fence) and lines[j].strip().strip(fence[0]) == ""
        ):
            body.append(lines[j][len(indent) :] if lines[j].startswith(indent) else lines[j])
            j += 1
        skip = None
        if pending is not None:
            skipped = _SKIP.match(pending[1])
            if not skipped:
                raise AssertionError(
                    f"{page}:{pending[0]}: unknown docs-test marker {pending[1]!r}; "
                    "the only one is 'docs-test: skip (what runs it instead)'"
                )
            skip = skipped.group("reason")
            pending = None
        code = "\n".join(body) + "\n"
        blocks.append(Block(page, i + 1, language, code, skip, opening.group("attrs").strip()))
        i = j + 1
    if pending is not None:
        raise AssertionError(f"{page}:{pending[0]}: a docs-test marker with no fence")
    return blocks


def expand_snippets(code: str) -> str:
    """Replace ``--8<-- "path"`` lines with the file, as pymdownx.snippets does."""
    out = []
    for line in code.splitlines(keepends=True):
        included = _SNIPPET.match(line)
        out.append((ROOT / included.group(1)).read_text() if included else line)
    return "".join(out)


def pages_with(languages: set[str]) -> list[Path]:
    return [p for p in PAGES if any(b.language in languages for b in parse_blocks(p))]


PROJECT_PAGES = {"docs/quickstart.md": "tests/integration/test_quickstart.py"}
"""Pages followed as a whole project (files written, shell commands run in a temporary
folder), by the test named here, rather than run block by block in this process."""


# --- python and sql examples -----------------------------------------------------------------


def _fail(block: Block, what: str, detail: str) -> None:
    pytest.fail(f"{block.page}:{block.line}: {what}\n{detail}", pytrace=False)


def _run_python(block: Block, module: types.ModuleType) -> None:
    code = expand_snippets(block.code)
    if code.lstrip().startswith(">>>"):
        _run_doctest(block, code, module)
        return
    # Blank lines in front make tracebacks point at the right line of the Markdown file.
    source = "\n" * block.line + code
    try:
        compiled = compile(source, block.page, "exec")
        exec(compiled, module.__dict__)
    except Exception:
        _fail(block, "the python block raised:", traceback.format_exc())


def _run_doctest(block: Block, code: str, module: types.ModuleType) -> None:
    test = doctest.DocTestParser().get_doctest(
        code, module.__dict__, f"{block.page}:{block.line}", block.page, block.line
    )
    out = io.StringIO()
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    runner.run(test, out=out.write, clear_globs=False)
    module.__dict__.update(test.globs)
    if runner.failures:
        _fail(block, "the doctest block failed:", out.getvalue())


def _run_sql(block: Block, engine: Engine) -> None:
    with engine.connect() as conn:
        transaction = conn.begin()
        try:
            conn.exec_driver_sql(block.code)
        except Exception:
            _fail(block, "the sql block failed:", traceback.format_exc(limit=0))
        finally:
            transaction.rollback()


def _clean_up(page: str, module: types.ModuleType, engines: list[Engine]) -> None:
    """Stop what a page left running (and fail for a started Worker or a registered hook),
    dispose its engines."""
    left_running = []
    for name, value in list(module.__dict__.items()):
        if isinstance(value, sa_river.Worker) and not value.stopped.is_set():
            if value._started:
                left_running.append(name)
            value.stop(timeout=1)
        elif isinstance(value, AsyncEngine):
            asyncio.run(value.dispose())
    for engine in engines:
        if not engine.dialect.is_async:  # an AsyncEngine is disposed in its own event loop
            engine.dispose()
    gc.collect()  # a connection left open warns now, in this page's test, not in a later one
    left_hooks = sa_river.hooks.installed_hooks()
    for hook in left_hooks:  # a hook left registered would see every later test's jobs
        sa_river.remove_hook(hook)
    if left_running:
        pytest.fail(f"{page}: Worker {', '.join(left_running)} was started and not stopped")
    if left_hooks:
        pytest.fail(f"{page}: hooks {left_hooks} were added and not removed")


@contextlib.contextmanager
def engines_created() -> Iterator[list[Engine]]:
    """Every Engine that connects inside the block, kept alive until the caller disposes it
    (an example may rebind ``engine``; its pool must not be garbage collected while open)."""
    engines: list[Engine] = []

    def remember(connection: Connection) -> None:
        if not any(e is connection.engine for e in engines):
            engines.append(connection.engine)

    event.listen(Engine, "engine_connect", remember)
    try:
        yield engines
    finally:
        event.remove(Engine, "engine_connect", remember)


def _write_file(block: Block, root: Path) -> Path:
    """Write a file block where its title says, under ``root``."""
    assert block.file is not None
    relative = Path(block.file)
    if relative.is_absolute() or ".." in relative.parts:
        pytest.fail(f"{block.page}:{block.line}: a file block's title is a relative path")
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(expand_snippets(block.code))
    importlib.invalidate_caches()
    return path


def _forget_modules_under(root: Path) -> list[str]:
    """Remove from ``sys.modules`` what was imported from files under ``root``; their names."""
    forgotten = []
    for name, module in list(sys.modules.items()):
        places = [getattr(module, "__file__", None), *(getattr(module, "__path__", None) or [])]
        if any(place and Path(place).is_relative_to(root) for place in places):
            del sys.modules[name]
            forgotten.append(name)
    return forgotten


def _imported(path: Path) -> bool:
    return any(getattr(m, "__file__", None) == str(path) for m in list(sys.modules.values()))


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    "path",
    [p for p in pages_with({"python", "sql"}) if page_id(p) not in PROJECT_PAGES],
    ids=page_id,
)
def test_examples_run(
    path: Path, db_url: URL, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The page's python (and sql) blocks run in order, in one namespace, without raising."""
    page = page_id(path)
    url = db_url.render_as_string(hide_password=False)
    monkeypatch.setenv("DATABASE_URL", url)
    monkeypatch.chdir(tmp_path)  # an example that writes a file writes it here
    monkeypatch.syspath_prepend(str(tmp_path))  # file blocks are written here and imported
    name = "docs_example_" + re.sub(r"\W", "_", page.removesuffix(".md"))
    module = types.ModuleType(name)
    module.__file__ = str(path)
    monkeypatch.setitem(sys.modules, name, module)
    sql_engine = create_engine(url, pool_size=1)
    files: dict[Path, Block] = {}
    with engines_created() as engines:
        try:
            for block in parse_blocks(path):
                if block.skip is not None:
                    continue
                if block.language == "python" and block.file is not None:
                    files[_write_file(block, tmp_path)] = block
                elif block.language == "python":
                    _run_python(block, module)
                elif block.language == "sql":
                    _run_sql(block, sql_engine)
            unused = [b for p, b in files.items() if p.suffix == ".py" and not _imported(p)]
        finally:
            sql_engine.dispose()
            _clean_up(page, module, engines)
            _forget_modules_under(tmp_path)  # the next page may write a myapp of its own
    for block in unused:
        _fail(block, f"no block of the page imports {block.file}:", "import it, or drop it")


def test_adopting_a_river_database(
    empty_db_url: URL, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """docs/migrations.md's adoption example, on a database as River's own migrator leaves it:
    River's tables at version 7 and ``river_migration``, none of sa_river's tables."""
    from sa_river import migrate

    url = empty_db_url.render_as_string(hide_password=False)
    migrate.command_upgrade(url, "sa_river_0008")
    engine = create_engine(url, pool_size=1)
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql("DROP TABLE sa_river_alembic_version")
        (block,) = [
            b
            for b in parse_blocks(ROOT / "docs" / "migrations.md")
            if b.language == "python" and "alembic.command.stamp" in b.code
        ]
        monkeypatch.setenv("DATABASE_URL", url)
        monkeypatch.chdir(tmp_path)
        module = types.ModuleType("docs_example_adopting")
        with engines_created() as engines:
            try:
                _run_python(block, module)
            finally:
                _clean_up(block.page, module, engines)
        with engine.begin() as conn:
            assert migrate.current(conn) == migrate.head_revisions()
            versions = conn.exec_driver_sql("SELECT version FROM river_migration ORDER BY 1")
            assert [v for (v,) in versions] == [1, 2, 3, 4, 5, 6, 7]
            assert conn.exec_driver_sql("SELECT to_regclass('sa_river_client')").scalar()
    finally:
        engine.dispose()


def test_the_api_reference_lists_every_public_name() -> None:
    """Each name of ``sa_river.__all__`` has a ``::: sa_river.NAME`` entry in docs/reference,
    and each name of ``sa_river.testing.__all__`` is a member of its ``::: sa_river.testing``."""
    import sa_river.testing

    reference = "\n".join(p.read_text() for p in (ROOT / "docs" / "reference").glob("*.md"))
    entries = set(re.findall(r"^::: (sa_river(?:\.\w+)+)\s*$", reference, re.MULTILINE))
    missing = [
        name
        for name in sa_river.__all__
        if name != "__version__" and f"sa_river.{name}" not in entries
    ]
    assert missing == [], f"add '::: sa_river.NAME' entries to a page of docs/reference: {missing}"
    testing_page = (ROOT / "docs" / "reference" / "testing.md").read_text()
    members = set(re.findall(r"^\s+- (\w+)\s*$", testing_page, re.MULTILINE))
    assert "sa_river.testing" in entries
    assert set(sa_river.testing.__all__) <= members, set(sa_river.testing.__all__) - members


def test_skips_are_few_and_explained() -> None:
    """Skipped blocks say what runs them instead; most examples run."""
    blocks = [b for p in PAGES for b in parse_blocks(p) if b.language == "python"]
    skipped = [b for b in blocks if b.skip is not None]
    for block in skipped:
        assert len(block.skip or "") >= 15, f"{block.page}:{block.line}: say what runs it instead"
    assert len(skipped) * 3 < len(blocks), [f"{b.page}:{b.line}" for b in skipped]


# --- command lines ----------------------------------------------------------------------------


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _options(parser: argparse.ArgumentParser) -> set[str]:
    return {option for action in parser._actions for option in action.option_strings}


def _sa_river_commands(shell: str) -> list[list[str]]:
    """The argument lists of every ``python -m sa_river`` / ``sa-river`` command in a script."""
    commands = []
    for line in shell.replace("\\\n", " ").splitlines():
        lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        lexer.commenters = "#"
        words = list(lexer)
        for i, word in enumerate(words):
            program = word.rsplit("/", 1)[-1].strip("\"'")
            if program in _PROGRAMS[0] and words[i + 1 : i + 3] == ["-m", "sa_river"]:
                start = i + 3
            elif program == _PROGRAMS[1] and (i == 0 or words[i - 1] in _SHELL_OPERATORS):
                start = i + 1
            else:
                continue
            args = []
            for arg in words[start:]:
                if arg in _SHELL_OPERATORS:
                    break
                args.append(arg)
            commands.append(args)
    return commands


def _check_full_command(where: str, args: list[str]) -> None:
    parser = build_parser()
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            parser.parse_args(args)
    except SystemExit as exc:  # --help, --version
        if exc.code != 0:
            pytest.fail(f"{where}: sa_river {shlex.join(args)} exits {exc.code}", pytrace=False)
    except Exception as exc:  # CliParser raises on a usage error
        pytest.fail(f"{where}: sa_river {shlex.join(args)}: {exc}", pytrace=False)


def _check_command_names(where: str, args: list[str]) -> None:
    """Subcommands and options named in a prose fragment exist (arguments may be missing)."""
    parser: argparse.ArgumentParser = build_parser()
    words = iter(args)
    for word in words:
        subcommands = _subcommands(parser)
        if word in subcommands:
            parser = subcommands[word]
            continue
        if word.startswith("-"):
            option = word.split("=", 1)[0]
            assert option in _options(parser), (
                f"{where}: {parser.prog} has no option {option} (in `{shlex.join(args)}`)"
            )
        elif subcommands and not word.startswith(("-", ".", "<")) and word.isidentifier():
            pytest.fail(f"{where}: {parser.prog} has no command {word!r}", pytrace=False)


@pytest.mark.parametrize("path", PAGES, ids=page_id)
def test_cli_examples_name_real_commands(path: Path) -> None:
    """Shell examples parse with the real parser; inline mentions name real commands."""
    page = page_id(path)
    for block in parse_blocks(path):
        if block.language in _SHELL and block.skip is None:
            for args in _sa_river_commands(block.code):
                _check_full_command(f"{page}:{block.line}", args)
    text = path.read_text()
    for number, line in enumerate(text.splitlines(), start=1):
        for match in _INLINE_COMMAND.finditer(line):
            words = shlex.split(match.group(1))
            args = words[3:] if words[0].startswith("python") else words[1:]
            _check_command_names(f"{page}:{number}", args)


def test_the_helpers_see_what_they_should() -> None:
    """The parsers above find the blocks and commands they are meant to find."""
    markdown = textwrap.dedent(
        """\
        Text.

        <!-- docs-test: skip (run by some other test) -->
        ```python
        raise SystemExit
        ```

        ```python title="myapp/jobs.py" hl_lines="1"
        workers = None
        ```

        1. A list item:
           ```bash
           python -m sa_river migrate up --database-url postgresql+psycopg://u@h/db \\
               --target heads  # a comment
           sa-river status --json | jq .leader
           ```
        """
    )
    blocks = parse_markdown(markdown, "check.md")
    assert [(b.language, b.line, b.skip, b.file) for b in blocks] == [
        ("python", 4, "run by some other test", None),
        ("python", 8, None, "myapp/jobs.py"),
        ("bash", 13, None, None),
    ]
    assert blocks[1].attrs == 'title="myapp/jobs.py" hl_lines="1"'
    assert _sa_river_commands(blocks[2].code) == [
        ["migrate", "up", "--database-url", "postgresql+psycopg://u@h/db", "--target", "heads"],
        ["status", "--json"],
    ]
