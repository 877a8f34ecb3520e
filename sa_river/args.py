"""Typed job args: a ``JobArgs`` subclass is a dataclass with a ``kind``.

>>> class SendWelcome(JobArgs, kind="send_welcome"):
...     user_id: int
...     locale: str = "en"
>>> SendWelcome(user_id=7).encode()
'{"user_id":7,"locale":"en"}'
>>> SendWelcome.decode({"user_id": 7})
SendWelcome(user_id=7, locale='en')

Args encode to compact JSON the way Go's ``encoding/json`` does (no spaces, UTF-8 kept, ``<``,
``>``, ``&``, U+2028 and U+2029 escaped), so unique keys computed over them match River's Go
client byte for byte. Values that JSON cannot hold, text PostgreSQL cannot store (U+0000, a
lone surrogate) and values nested too deeply to encode are rejected with
:class:`~sa_river.errors.UnserializableArgsError` naming the field, before anything is written.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import json
import re
import types
import typing
import uuid
from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Any, ClassVar, TypeAlias, Union

from typing_extensions import Self, dataclass_transform

from sa_river.errors import InvalidJobError, UnserializableArgsError
from sa_river.options import InsertOpts, validate_kind
from sa_river.types import parse_timestamp

__all__ = ["ArgsLike", "JobArgs", "decode_json", "encode_json", "kind_and_encoded_args"]

_GO_ESCAPES = str.maketrans(
    {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}
)


def _json_default(value: Any) -> Any:
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, uuid.UUID | Decimal):
        return str(value)
    if isinstance(value, enum.Enum):
        return value.value
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def encode_json(value: Any, *, field: str = "args") -> str:
    """Compact, Go-compatible JSON for ``value``; raises naming ``field`` when impossible."""
    try:
        text = _ENCODER.encode(value)
    except RecursionError:
        raise UnserializableArgsError(
            field, "nested too deeply to be encoded as JSON (Python's recursion limit)"
        ) from None
    except (TypeError, ValueError) as exc:
        path = _find_unserialisable(value, field)
        raise UnserializableArgsError(path, f"cannot be encoded as JSON: {exc}") from exc
    if "\\u0000" in text and _NUL_ESCAPE.search(text):
        # Valid JSON, but jsonb cannot store U+0000: the insert would fail in the database and
        # abort the caller's transaction, so refuse it here.
        raise UnserializableArgsError(
            _nul_path(value, field) or field,
            "contains a NUL character (U+0000), which PostgreSQL's jsonb cannot store",
        )
    # The text is UTF-8 encoded only by the driver, mid-insert; a lone surrogate (what
    # os.fsdecode makes of undecodable bytes) would fail there as a bare UnicodeEncodeError.
    # isascii() reads a flag CPython keeps on every str, so ASCII text costs nothing here.
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise _lone_surrogate_error(value, field) from None
    # Most args need no escaping; a scan is far cheaper than a translate.
    return text.translate(_GO_ESCAPES) if _GO_ESCAPED.search(text) else text


_ENCODER = json.JSONEncoder(
    separators=(",", ":"), ensure_ascii=False, allow_nan=False, default=_json_default
)
_GO_ESCAPED = re.compile("[<>&\u2028\u2029]")

# A JSON \u0000 escape: preceded by an even number of backslashes (escaped backslashes).
_NUL_ESCAPE = re.compile(r"(?:^|[^\\])(?:\\\\)*\\u0000")


def _nul_path(value: Any, path: str) -> str | None:
    """The dotted path of the first string (or key) under ``value`` holding U+0000."""
    found = _first_string(value, path, lambda s: "\x00" in s)
    return found[0] if found else None


def _lone_surrogate_error(value: Any, field: str) -> UnserializableArgsError:
    """The error for ``value``, whose JSON holds a lone surrogate: naming the string's path,
    the character and its position in that string."""
    try:
        found = _first_string(value, field, lambda s: _surrogate_at(s) is not None)
    except RecursionError:
        found = None
    if found is None:  # too deep to walk, or made by a default hook: name the field alone
        return UnserializableArgsError(
            field, "contains a lone surrogate, which UTF-8 (and so PostgreSQL) cannot store"
        )
    path, string = found
    position = _surrogate_at(string) or 0
    # A key may hold the surrogate itself: the path is escaped so the error prints anywhere.
    return UnserializableArgsError(
        path.encode("utf-8", "backslashreplace").decode("utf-8"),
        f"contains a lone surrogate {string[position]!r} at position {position}, which UTF-8 "
        "(and so PostgreSQL) cannot store; decode the bytes it came from properly, or escape "
        "it (errors='backslashreplace')",
    )


def _surrogate_at(text: str) -> int | None:
    """The index of the first character of ``text`` UTF-8 cannot encode, if any."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        return exc.start
    return None


def _first_string(value: Any, path: str, matches: Callable[[str], bool]) -> tuple[str, str] | None:
    """``(dotted path, string)`` of the first string (or key) under ``value`` that
    ``matches``; only called once encoding found one, so it may take its time."""
    if isinstance(value, str):
        return (path, value) if matches(value) else None
    if isinstance(value, enum.Enum):
        return _first_string(value.value, path, matches)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        for key, item in value.items():
            item_path = f"{path}.{key}"
            if isinstance(key, str) and matches(key):
                return item_path, key
            found = _first_string(item, item_path, matches)
            if found:
                return found
    elif isinstance(value, list | tuple | set | frozenset):
        for index, item in enumerate(value):
            found = _first_string(item, f"{path}[{index}]", matches)
            if found:
                return found
    return None


def decode_json(text: str | bytes) -> Any:
    """Decode JSON text (the inverse of :func:`encode_json`)."""
    return json.loads(text)


def _find_unserialisable(value: Any, path: str) -> str:
    """The dotted path of the first value under ``value`` that JSON cannot hold."""
    return _first_bad_path(value, path) or path


def _first_bad_path(value: Any, path: str) -> str | None:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        items: Any = ((f"{path}.{key}", item) for key, item in value.items())
    elif isinstance(value, list | tuple | set | frozenset):
        items = ((f"{path}[{index}]", item) for index, item in enumerate(value))
    else:
        return None if _is_plain_json(value) else path
    for item_path, item in items:
        found = _first_bad_path(item, item_path)
        if found:
            return found
    return None


def _is_plain_json(value: Any) -> bool:
    try:
        json.dumps(value, allow_nan=False, default=_json_default)
    except (TypeError, ValueError):
        return False
    return True


@dataclass_transform(kw_only_default=False, frozen_default=False)
class JobArgs:
    """Base class of typed job args; every subclass is a dataclass with a ``kind``.

    Class keywords: ``kind`` (required, 1..127 characters), ``insert_opts``
    (:class:`~sa_river.options.InsertOpts` defaults that every call's options override field by
    field) and ``frozen`` (an immutable dataclass). Override :meth:`insert_opts` for defaults
    that depend on the instance.
    """

    kind: ClassVar[str]
    _default_insert_opts: ClassVar[InsertOpts | None] = None

    def __init_subclass__(
        cls,
        *,
        kind: str | None = None,
        insert_opts: InsertOpts | None = None,
        frozen: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init_subclass__(**kwargs)
        if kind is not None:
            cls.kind = validate_kind(kind)
        elif "kind" not in cls.__dict__ and not hasattr(cls, "kind"):
            raise InvalidJobError(
                "kind", f"{cls.__name__} needs a kind: class {cls.__name__}(JobArgs, kind=...)"
            )
        if insert_opts is not None:
            cls._default_insert_opts = insert_opts
        # Made a dataclass here, so don't decorate subclasses with @dataclass yourself:
        # pass ``frozen=True`` as a class keyword instead.
        dataclasses.dataclass(cls, frozen=frozen)

    def insert_opts(self) -> InsertOpts | None:
        """Default insert options for this job (the class's ``insert_opts=`` keyword)."""
        return self._default_insert_opts

    def to_dict(self) -> dict[str, Any]:
        """The args as a JSON-ready dict (dataclass fields in declaration order)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}  # type: ignore[arg-type]

    def encode(self) -> str:
        """The args as compact JSON text, as stored in ``river_job.args``."""
        return encode_json(self.to_dict())

    @classmethod
    def decode(cls, data: Mapping[str, Any]) -> Self:
        """Build the args from a decoded JSON object, converting typed fields.

        Unknown keys are ignored (a newer producer may have added a field); missing keys fall
        back to the dataclass defaults.
        """
        hints = _type_hints(cls)
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):  # type: ignore[arg-type]
            if f.name in data and f.init:
                values[f.name] = _convert(data[f.name], hints.get(f.name, Any))
        try:
            return cls(**values)
        except TypeError as exc:
            raise InvalidJobError("args", f"cannot build {cls.__name__}: {exc}") from exc


_hint_cache: dict[type, dict[str, Any]] = {}


def _type_hints(cls: type) -> dict[str, Any]:
    hints = _hint_cache.get(cls)
    if hints is None:
        try:
            hints = typing.get_type_hints(cls)
        except Exception:  # unresolvable forward references: decode without conversion
            hints = {}
        _hint_cache[cls] = hints
    return hints


def _convert(value: Any, hint: Any) -> Any:
    if value is None or hint is Any:
        return value
    origin = typing.get_origin(hint)
    if origin is Union or origin is types.UnionType:
        options = [a for a in typing.get_args(hint) if a is not type(None)]
        return _convert(value, options[0]) if len(options) == 1 else value
    if origin in (list, set, frozenset, tuple) and isinstance(value, list):
        item_hints = typing.get_args(hint)
        if origin is tuple and not (len(item_hints) == 2 and item_hints[1] is Ellipsis):
            return tuple(value)
        item = item_hints[0] if item_hints else Any
        return origin(_convert(v, item) for v in value)
    if origin is dict and isinstance(value, dict):
        args = typing.get_args(hint)
        item = args[1] if len(args) == 2 else Any
        return {k: _convert(v, item) for k, v in value.items()}
    if not isinstance(hint, type):
        return value
    if issubclass(hint, dt.datetime) and isinstance(value, str):
        return parse_timestamp(value)
    if issubclass(hint, dt.date) and isinstance(value, str):
        return dt.date.fromisoformat(value)
    if issubclass(hint, dt.time) and isinstance(value, str):
        return dt.time.fromisoformat(value)
    if issubclass(hint, uuid.UUID) and isinstance(value, str):
        return uuid.UUID(value)
    if issubclass(hint, Decimal) and isinstance(value, str | int | float):
        return Decimal(str(value))
    if issubclass(hint, enum.Enum):
        return hint(value)
    if issubclass(hint, JobArgs) and isinstance(value, dict):
        return hint.decode(value)
    if dataclasses.is_dataclass(hint) and isinstance(value, dict):
        hints = _type_hints(hint)
        return hint(**{k: _convert(v, hints.get(k, Any)) for k, v in value.items()})
    return value


ArgsLike: TypeAlias = JobArgs | tuple[str, Mapping[str, Any]]
"""What insert accepts as args: a :class:`JobArgs` instance or a plain ``(kind, dict)``."""


def kind_and_encoded_args(args: ArgsLike) -> tuple[str, str, InsertOpts | None]:
    """Validate ``args`` and return ``(kind, encoded JSON, class default options)``."""
    if isinstance(args, JobArgs):
        return validate_kind(type(args).kind), args.encode(), args.insert_opts()
    if isinstance(args, tuple) and len(args) == 2:
        kind, data = args
        kind = validate_kind(kind)
        if not isinstance(data, Mapping):
            raise InvalidJobError(
                "args", f"must be a dict (JSON object), got {type(data).__name__}"
            )
        return kind, encode_json(dict(data)), None
    raise InvalidJobError(
        "args",
        f"expected a JobArgs instance or a (kind, dict) tuple, got {type(args).__name__}",
    )
