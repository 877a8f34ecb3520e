"""A griffe extension for the docs build: sa_river's docstrings, rendered as Markdown.

The package's docstrings follow reStructuredText habits: Sphinx roles
(``:class:`~sa_river.errors.InvalidJobError```), ``::`` literal blocks, ``>>>`` doctest blocks
and ```text <url>`_`` links. mkdocstrings renders docstrings as Markdown, where these show up
as stray colons and backticks. This extension rewrites them in the loaded docstrings, for the
site only (the package's ``__doc__`` strings are untouched):

- a role whose target is public (in ``sa_river.__all__`` or ``sa_river.testing.__all__``, or a
  documented member of one of those classes) becomes an autorefs link to its reference entry;
  any other target (internal modules, the standard library) becomes plain code, so the strict
  build never meets a dangling cross-reference;
- ``text::`` plus an indented block becomes ``text:`` plus a fenced block (``python`` when the
  block parses as Python, ``text`` otherwise);
- a run of ``>>>`` lines becomes a ``pycon`` fenced block, without ``# doctest:`` directives;
- ```text <url>`_`` becomes ``[text](url)``.

Loaded by mkdocs.yml (``plugins.mkdocstrings.handlers.python.options.extensions``).
"""

from __future__ import annotations

import ast
import importlib
import re
import textwrap
from typing import Any

import griffe

_ROLE = re.compile(
    r":(?:py:)?(?:class|func|meth|attr|data|mod|exc|obj|const):`(~?)([^`<]+?)(?:\s*<([^`>]+)>)?`"
)
_RST_LINK = re.compile(r"`([^`<]+?)\s*<(https?://[^>`]+)>`__?")
_DOCTEST_DIRECTIVE = re.compile(r"\s*# doctest:.*$")

# The modules whose ``__all__`` the API reference renders, with the path they render under.
PUBLIC_MODULES = ("sa_river", "sa_river.testing")


class RstToMarkdown(griffe.Extension):
    """Rewrite every docstring of the ``sa_river`` package once it is loaded."""

    def on_package(self, *, pkg: griffe.Module, loader: griffe.GriffeLoader, **kwargs: Any) -> None:
        if pkg.path != "sa_river":
            return
        public = _public_paths(pkg)
        for obj in _walk(pkg):
            if obj.docstring is not None:
                obj.docstring.value = to_markdown(obj.docstring.value, obj, public)


def _walk(obj: griffe.Object) -> Any:
    yield obj
    for member in obj.members.values():
        if not member.is_alias:
            yield from _walk(member)  # type: ignore[arg-type]


def _public_paths(pkg: griffe.Module) -> dict[str, str]:
    """Canonical path (and public path) of every rendered object -> its id on the site."""
    paths: dict[str, str] = {}
    for module_path in PUBLIC_MODULES:
        module = importlib.import_module(module_path)
        griffe_module = pkg if module_path == pkg.path else pkg[module_path.split(".", 1)[1]]
        paths[module_path] = module_path
        for name in module.__all__:
            if name.startswith("_"):
                continue
            try:
                target = griffe_module[name]
                if target.is_alias:
                    target = target.final_target
            except (KeyError, griffe.AliasResolutionError, griffe.CyclicAliasError):
                continue
            public = f"{module_path}.{name}"
            paths[target.path] = public
            paths[public] = public
            if target.is_class:
                for member_name, member in target.members.items():
                    if member_name.startswith("_") or member.is_alias:
                        continue
                    if member.docstring is None or not member.docstring.value.strip():
                        continue
                    paths[f"{target.path}.{member_name}"] = f"{public}.{member_name}"
                    paths[f"{public}.{member_name}"] = f"{public}.{member_name}"
    return paths


def _resolve(target: str, obj: griffe.Object, public: dict[str, str]) -> str | None:
    if target in public:
        return public[target]
    scope: griffe.Object | None = obj
    while scope is not None:
        candidate = f"{scope.path}.{target}"
        if candidate in public:
            return public[candidate]
        scope = scope.parent
    return None


def _replace_role(match: re.Match[str], obj: griffe.Object, public: dict[str, str]) -> str:
    tilde, first, explicit_target = match.groups()
    target = (explicit_target or first).strip()
    if explicit_target:
        text = first.strip()
    elif tilde:
        text = target.rsplit(".", 1)[-1]
    else:
        text = target
    resolved = _resolve(target, obj, public)
    if resolved is None:
        return f"`{text}`"
    return f"[`{text}`][{resolved}]"


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def _fence(lines: list[str], language: str, indent: int) -> list[str]:
    pad = " " * indent
    return [
        "",
        f"{pad}```{language}",
        *(pad + line if line else "" for line in lines),
        f"{pad}```",
        "",
    ]


def _convert_blocks(lines: list[str]) -> list[str]:
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        stripped = line.strip()
        if stripped.startswith("```"):  # an existing fence: copy it through untouched
            out.append(line)
            i += 1
            while i < len(lines):
                out.append(lines[i])
                i += 1
                if lines[i - 1].strip().startswith("```"):
                    break
            continue
        if stripped.startswith(">>>"):
            indent = _indent(line)
            block = []
            while i < len(lines) and lines[i].strip() and _indent(lines[i]) >= indent:
                block.append(_DOCTEST_DIRECTIVE.sub("", lines[i][indent:]))
                i += 1
            out += _fence(block, "pycon", indent)
            continue
        if stripped.endswith("::"):
            indent = _indent(line)
            j = i + 1
            while j < len(lines) and not lines[j].strip():
                j += 1
            if j < len(lines) and _indent(lines[j]) > indent:
                block = []
                while j < len(lines) and (not lines[j].strip() or _indent(lines[j]) > indent):
                    block.append(lines[j])
                    j += 1
                code = textwrap.dedent("\n".join(block)).strip("\n")
                try:
                    ast.parse(code)
                    language = "python"
                except SyntaxError:
                    language = "text"
                head = line.rstrip()[:-2].rstrip()
                if head.strip():
                    out.append(head + ":")
                out += _fence(code.splitlines(), language, indent)
                i = j
                continue
        out.append(line)
        i += 1
    return out


def to_markdown(text: str, obj: griffe.Object, public: dict[str, str]) -> str:
    """``text`` (a docstring of ``obj``) with its reStructuredText constructs as Markdown."""
    lines = _convert_blocks(text.splitlines())
    result: list[str] = []
    in_fence = False
    for line in lines:
        if line.strip().startswith("```"):
            in_fence = not in_fence
        elif not in_fence:
            line = _ROLE.sub(lambda m: _replace_role(m, obj, public), line)
            line = _RST_LINK.sub(r"[\1](\2)", line)
        result.append(line)
    return "\n".join(result).strip("\n")
