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

Field annotations are enforced both ways: ``encode`` (so every insert) refuses a value of the
wrong type, and ``decode`` (so every worker, whatever wrote the row: the ``enqueue`` command, a
``(kind, dict)`` insert, River's Go client) refuses JSON that does not fit, each with an
:class:`~sa_river.errors.InvalidJobError` naming the field:

>>> SendWelcome.decode({"user_id": "7"})
Traceback (most recent call last):
  ...
sa_river.errors.InvalidJobError: args.user_id: expected int, got str '7'

A class's annotations are compiled into checks once, on first use, as inserts are hot.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import datetime as dt
import enum
import inspect
import json
import re
import reprlib
import sys
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
        """The args as compact JSON text, as stored in ``river_job.args``.

        Every field's value is checked against its annotation first: a value of the wrong type
        raises :class:`~sa_river.errors.InvalidJobError` naming the field (``args.user_id:
        expected int, got str 'x'``), so a job its worker could not decode is never written.
        """
        plan = _plans.get(type(self)) or _plan(type(self))
        plan.check(self, "args")
        return encode_json(self.to_dict())

    @classmethod
    def decode(cls, data: Mapping[str, Any]) -> Self:
        """Build the args from a decoded JSON object, checking and converting typed fields.

        Unknown keys are ignored (a newer producer may have added a field); missing keys fall
        back to the dataclass defaults. A value that does not fit its field's annotation raises
        :class:`~sa_river.errors.InvalidJobError` naming the field.
        """
        plan = _plans.get(cls) or _plan(cls)
        return plan.load(data, "args")  # type: ignore[no-any-return]


# --- type checks -------------------------------------------------------------------------------
#
# Each class's annotations are compiled once, on first use (so forward references to names
# defined later in the module resolve), into a _ClassPlan held in _plans: a _Rule per checked
# field. A rule checks a Python value at insert and loads a JSON value at decode. Insert is the
# hot path, so a rule names the one type (``exact``) whose values need no further look: a field
# holding exactly that type costs an identity test, and only the rest call into the rule.


class _Never:
    """A type nothing is an instance of: the ``exact`` of rules that always look closer."""


@dataclasses.dataclass(frozen=True, slots=True)
class _Rule:
    """How one annotation is enforced. ``check(value, path)`` raises on a Python value of the
    wrong type (insert); ``load(value, path)`` returns the field's value for a JSON value or
    raises (decode). Values of type ``exact`` pass ``check`` and values of type ``json_exact``
    load as themselves, without a call. ``plain``: ``load`` returns its argument unchanged.
    ``described``: what decode errors say is expected, when more than ``name`` helps."""

    name: str
    check: Callable[[Any, str], None]
    load: Callable[[Any, str], Any]
    exact: type = _Never
    json_exact: type = _Never
    plain: bool = False
    described: str = ""

    @property
    def expected_json(self) -> str:
        return self.described or self.name


class _ClassPlan:
    """The rules of one JobArgs class or dataclass, compiled once."""

    __slots__ = ("build", "checked", "decoders", "name")

    def __init__(self, cls: type) -> None:
        hints = _field_hints(cls)
        fields = dataclasses.fields(cls)
        rules = {f.name: _rule(hints.get(f.name, Any)) for f in fields}
        self.name = cls.__name__
        self.build = cls
        # Insert: every field (init=False ones are encoded too) whose annotation checks anything.
        self.checked = tuple((name, rule) for name, rule in rules.items() if rule is not None)
        # Decode: the fields __init__ takes, with the rule to load each (None: taken as it is).
        self.decoders = tuple((f.name, rules[f.name]) for f in fields if f.init)

    def check(self, value: Any, path: str) -> None:
        """Raise :class:`InvalidJobError` at the first field of ``value`` of the wrong type."""
        # Read from the instance's __dict__: a third of what getattr costs, and this runs for
        # every job inserted. A field held elsewhere (slots, a descriptor) falls back to getattr.
        fields = getattr(value, "__dict__", _NO_FIELDS)
        for name, rule in self.checked:
            try:
                item = fields[name]
            except KeyError:
                item = getattr(value, name)
            if type(item) is not rule.exact:
                rule.check(item, f"{path}.{name}")

    def load(self, data: Any, path: str) -> Any:
        """An instance built from the JSON object ``data``; raises naming the bad field."""
        if not isinstance(data, Mapping):
            raise _mismatch(path, f"{self.name} (a JSON object)", data)
        values: dict[str, Any] = {}
        for name, rule in self.decoders:
            if name in data:
                item = data[name]
                if rule is not None and type(item) is not rule.json_exact:
                    item = rule.load(item, f"{path}.{name}")
                values[name] = item
        try:
            return self.build(**values)
        except TypeError as exc:
            raise InvalidJobError(path, f"cannot build {self.name}: {exc}") from exc


_plans: dict[type, _ClassPlan] = {}
_NO_FIELDS: dict[str, Any] = {}


def _plan(cls: type) -> _ClassPlan:
    plan = _plans.get(cls)
    if plan is None:
        plan = _plans[cls] = _ClassPlan(cls)
    return plan


def _field_hints(cls: type) -> dict[str, Any]:
    """The resolved annotations of ``cls``; a field whose annotation cannot be resolved (a
    forward reference to a name not in scope) is left out, and so is not checked."""
    try:
        return typing.get_type_hints(cls)
    except Exception:
        pass
    hints: dict[str, Any] = {}
    for base in reversed(cls.__mro__):
        module = sys.modules.get(base.__module__)
        globalns = dict(vars(module)) if module is not None else {}
        for name, annotation in inspect.get_annotations(base).items():
            holder = types.SimpleNamespace(__annotations__={name: annotation})
            try:
                hints[name] = typing.get_type_hints(holder, globalns, dict(vars(base)))[name]
            except Exception:
                hints.pop(name, None)
    return hints


def _describe(value: Any) -> str:
    """``str 'x'``: a value's type and a short repr (a big list is not printed in full)."""
    if value is None:
        return "None"
    try:
        text = _SHORT.repr(value)
    except Exception:  # a broken __repr__ must not hide the error being reported
        text = "<unprintable>"
    return f"{type(value).__name__} {text}"


_SHORT = reprlib.Repr()
_SHORT.maxstring = _SHORT.maxother = 60


def _mismatch(path: str, expected: str, value: Any) -> InvalidJobError:
    return InvalidJobError(path, f"expected {expected}, got {_describe(value)}")


def _rule(hint: Any) -> _Rule | None:
    """The rule enforcing ``hint``; None for an annotation that takes anything (``Any``,
    ``object``, a type variable, something this module does not know)."""
    if hint is Any or hint is object or isinstance(hint, typing.TypeVar | typing.ForwardRef):
        return None
    if hint is None or hint is type(None):
        return _scalar("None", type(None), lambda v: v is None)
    supertype = getattr(hint, "__supertype__", None)  # typing.NewType
    if supertype is not None:
        return _rule(supertype)
    alias_value = getattr(hint, "__value__", None)  # a ``type X = ...`` alias (3.12+)
    if alias_value is not None and type(hint).__name__ == "TypeAliasType":
        return _rule(alias_value)
    origin = typing.get_origin(hint)
    if origin is not None:
        return _generic_rule(hint, origin, typing.get_args(hint))
    if not isinstance(hint, type):
        return None
    if hint in _SCALARS:
        return _SCALARS[hint]
    if hint in (list, tuple, collections.abc.Sequence, collections.abc.MutableSequence):
        return _sequence_rule(hint, None)
    if hint in (set, frozenset, collections.abc.Set, collections.abc.MutableSet):
        return _sequence_rule(hint, None)
    if hint in (dict, collections.abc.Mapping, collections.abc.MutableMapping):
        return _mapping_rule(None, None)
    if issubclass(hint, dt.datetime):
        return _parsed_rule(hint, "ISO 8601 text", parse_timestamp, str)
    if issubclass(hint, dt.date):
        return _parsed_rule(hint, "ISO 8601 text", dt.date.fromisoformat, str, not_a=dt.datetime)
    if issubclass(hint, dt.time):
        return _parsed_rule(hint, "ISO 8601 text", dt.time.fromisoformat, str)
    if issubclass(hint, uuid.UUID):
        return _parsed_rule(hint, "UUID text", uuid.UUID, str)
    if issubclass(hint, Decimal):
        return _parsed_rule(hint, "a number", lambda v: Decimal(str(v)), str | int | float)
    if issubclass(hint, enum.Enum):
        return _enum_rule(hint)
    if dataclasses.is_dataclass(hint):
        return _class_rule(hint)
    if typing.is_typeddict(hint):  # checked as the dict it is, its items as they come
        return _mapping_rule(None, None, hint.__name__)
    return _instance_rule(hint)


def _scalar(name: str, exact: type, accepts: Callable[[Any], bool]) -> _Rule:
    """A JSON scalar: the same test at insert and at decode, and no conversion."""

    def check(value: Any, path: str) -> None:
        if not accepts(value):
            raise _mismatch(path, name, value)

    def load(value: Any, path: str) -> Any:
        if not accepts(value):
            raise _mismatch(path, name, value)
        return value

    return _Rule(name, check, load, exact, exact, plain=True)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


_SCALARS: dict[type, _Rule] = {
    int: _scalar("int", int, _is_int),
    float: _scalar("float", float, _is_number),  # an int is a float (and Go writes 1.0 as 1)
    str: _scalar("str", str, lambda v: isinstance(v, str)),
    bool: _scalar("bool", bool, lambda v: v is True or v is False),
    type(None): _scalar("None", type(None), lambda v: v is None),
}


def _instance_rule(cls: type) -> _Rule | None:
    """A class this module does not convert: checked at insert, taken as it is at decode."""
    try:
        isinstance(None, cls)
    except TypeError:  # a class that refuses isinstance (a Protocol...): not checked
        return None

    def check(value: Any, path: str) -> None:
        if not isinstance(value, cls):
            raise _mismatch(path, cls.__name__, value)

    return _Rule(cls.__name__, check, _as_is, cls, plain=True)


def _as_is(value: Any, path: str) -> Any:
    return value


def _parsed_rule(
    cls: type,
    text: str,
    parse: Callable[[Any], Any],
    json_types: Any,
    not_a: type = _Never,
) -> _Rule:
    """A value encoded as text (or a number) and parsed back: a ``datetime``, ``UUID``..."""
    name = cls.__name__

    def check(value: Any, path: str) -> None:
        # A datetime is a date, but its text does not parse back as one.
        if not isinstance(value, cls) or isinstance(value, not_a):
            raise _mismatch(path, name, value)

    def load(value: Any, path: str) -> Any:
        if isinstance(value, cls) and not isinstance(value, not_a):
            return value
        if isinstance(value, json_types) and not isinstance(value, bool):
            try:
                return parse(value)
            except (ValueError, TypeError, ArithmeticError):
                pass
        raise _mismatch(path, described, value)

    described = f"{name} ({text})"
    return _Rule(name, check, load, cls, described=described)


def _enum_rule(cls: type[enum.Enum]) -> _Rule:
    name = cls.__name__
    values = ", ".join(repr(member.value) for member in list(cls)[:10])
    expected = f"{name} (one of {values}{', ...' if len(cls) > 10 else ''})"

    def check(value: Any, path: str) -> None:
        if not isinstance(value, cls):
            raise _mismatch(path, name, value)

    def load(value: Any, path: str) -> Any:
        if isinstance(value, cls):
            return value
        if not isinstance(value, bool):  # True would find the member whose value is 1
            try:
                return cls(value)
            except (ValueError, TypeError):
                pass
        raise _mismatch(path, expected, value)

    return _Rule(name, check, load, cls, described=expected)


def _class_rule(cls: type) -> _Rule:
    """A nested JobArgs class or dataclass, encoded as a JSON object of its fields. Its own
    plan is compiled when first needed, so a class may refer to itself."""
    name = cls.__name__
    decode = getattr(cls, "decode", None)
    custom_decode = (
        issubclass(cls, JobArgs) and getattr(decode, "__func__", None) is not _JOB_ARGS_DECODE
    )

    def check(value: Any, path: str) -> None:
        if not isinstance(value, cls):
            raise _mismatch(path, name, value)
        _plan(type(value)).check(value, path)

    def load(value: Any, path: str) -> Any:
        if isinstance(value, cls):
            return value
        if not isinstance(value, dict):
            raise _mismatch(path, described, value)
        if custom_decode:
            return cls.decode(value)  # type: ignore[attr-defined]
        return _plan(cls).load(value, path)

    described = f"{name} (a JSON object)"
    return _Rule(name, check, load, described=described)


def _generic_rule(hint: Any, origin: Any, args: tuple[Any, ...]) -> _Rule | None:
    if origin is Union or origin is types.UnionType:
        return _union_rule(args)
    if origin is typing.Literal:
        return _literal_rule(args)
    if origin is tuple:
        if args == ((),):  # Python 3.10 spells tuple[()] so
            args = ()
        if len(args) == 2 and args[1] is Ellipsis:
            return _sequence_rule(tuple, args[0])
        return _fixed_tuple_rule(args)
    if origin in (list, collections.abc.Sequence, collections.abc.MutableSequence):
        return _sequence_rule(origin, args[0] if args else None)
    if origin in (set, frozenset, collections.abc.Set, collections.abc.MutableSet):
        return _sequence_rule(origin, args[0] if args else None)
    if origin in (dict, collections.abc.Mapping, collections.abc.MutableMapping):
        key, item = args if len(args) == 2 else (Any, Any)
        return _mapping_rule(key, item)
    if isinstance(origin, type):  # a generic class of the user's: checked as the class
        return _rule(origin)
    return None


def _hint_name(rule: _Rule | None) -> str:
    return "Any" if rule is None else rule.name


def _union_rule(options: tuple[Any, ...]) -> _Rule | None:
    rules = [_rule(option) for option in options]
    if any(rule is None for rule in rules):
        return None  # ``X | Any`` takes anything
    checked = [rule for rule in rules if rule is not None]
    name = " | ".join(rule.name for rule in checked)
    nullable = any(rule.exact is type(None) for rule in checked)
    others = [rule for rule in checked if rule.exact is not type(None)]

    def first_fit(value: Any, path: str, expected: str, attempt: Callable[[_Rule], Any]) -> Any:
        errors = []
        for rule in others:
            try:
                return attempt(rule)
            except InvalidJobError as exc:
                errors.append(exc)
        # An option that failed deeper (an item of a list, a field of a class) or for another
        # reason than its shape had the right shape: its error says more than "expected
        # list[int] | None".
        shape_only = f"{path}: expected "
        specific = [e for e in errors if e.field != path or not str(e).startswith(shape_only)]
        if specific:
            raise max(specific, key=lambda exc: len(exc.field))
        raise _mismatch(path, expected, value)

    expected_json = " | ".join(rule.expected_json for rule in checked)

    def check(value: Any, path: str) -> None:
        if value is None and nullable:
            return
        first_fit(value, path, name, lambda rule: rule.check(value, path))

    def load(value: Any, path: str) -> Any:
        if value is None and nullable:
            return None
        return first_fit(value, path, expected_json, lambda rule: rule.load(value, path))

    # The fast path serves the common ``X | None``: a value of exactly X's type.
    exact = others[0].exact if len(others) == 1 else _Never
    json_exact = others[0].json_exact if len(others) == 1 else _Never
    plain = all(rule.plain for rule in checked)
    return _Rule(name, check, load, exact, json_exact, plain, expected_json)


def _literal_rule(values: tuple[Any, ...]) -> _Rule:
    # Compared with their types, so Literal[1] refuses True; an enum member also loads from
    # the value it is encoded as.
    allowed = {(type(v), v): v for v in values}
    from_json = {(type(v.value), v.value): v for v in values if isinstance(v, enum.Enum)}
    from_json.update((key, v) for key, v in allowed.items() if not isinstance(v, enum.Enum))
    listed = ", ".join(
        f"{type(v).__name__}.{v.name}" if isinstance(v, enum.Enum) else repr(v) for v in values
    )
    name = f"Literal[{listed}]"
    expected = f"one of {listed}" if len(values) > 1 else listed

    def find(table: dict[tuple[type, Any], Any], value: Any, path: str) -> Any:
        try:
            return table[type(value), value]
        except (KeyError, TypeError):  # TypeError: an unhashable value
            raise _mismatch(path, expected, value) from None

    def check(value: Any, path: str) -> None:
        find(allowed, value, path)

    def load(value: Any, path: str) -> Any:
        return find(from_json, value, path)

    return _Rule(name, check, load, plain=not any(isinstance(v, enum.Enum) for v in values))


def _sequence_rule(container: Any, item_hint: Any) -> _Rule | None:
    """``list[X]``, ``tuple[X, ...]``, ``set[X]`` and their abstract kin, all JSON arrays. A
    list and a tuple are both accepted for a list or a tuple, a set or frozenset for a set:
    each encodes to the array the field decodes from."""
    item = None if item_hint is None else _rule(item_hint)
    is_set = container in (set, frozenset, collections.abc.Set, collections.abc.MutableSet)
    accepted: Any = set | frozenset if is_set else list | tuple
    if container in (collections.abc.Sequence, collections.abc.MutableSequence):
        build: type = list
    elif container in (collections.abc.Set, collections.abc.MutableSet):
        build = set
    else:
        build = container
    base = getattr(container, "__name__", str(container))
    name = base if item_hint is None else f"{base}[{_hint_name(item)}{', ...' * (build is tuple)}]"

    def check(value: Any, path: str) -> None:
        if not isinstance(value, accepted):
            raise _mismatch(path, name, value)
        if item is not None:
            exact, check_item = item.exact, item.check
            for index, element in enumerate(value):
                if type(element) is not exact:
                    check_item(element, f"{path}[{index}]")

    def load(value: Any, path: str) -> Any:
        if not isinstance(value, list | tuple):
            raise _mismatch(path, described, value)
        if item is None or item.plain:
            if item is not None:
                exact, load_item = item.json_exact, item.load
                for index, element in enumerate(value):
                    if type(element) is not exact:
                        load_item(element, f"{path}[{index}]")
            if type(value) is build:
                return value
            elements: Any = value
        else:
            exact, load_item = item.json_exact, item.load
            elements = [
                element if type(element) is exact else load_item(element, f"{path}[{index}]")
                for index, element in enumerate(value)
            ]
        try:
            return build(elements)
        except TypeError as exc:  # a set of unhashable items
            raise InvalidJobError(path, f"cannot build {name}: {exc}") from exc

    described = f"{name} (a JSON array)"
    plain = (item is None or item.plain) and build is list
    return _Rule(name, check, load, plain=plain, described=described)


def _fixed_tuple_rule(item_hints: tuple[Any, ...]) -> _Rule:
    """``tuple[A, B]``: a JSON array of exactly that many items, each of its own type."""
    items = [_rule(hint) for hint in item_hints]
    name = f"tuple[{', '.join(_hint_name(item) for item in items) or '()'}]"

    def shaped(value: Any, path: str, what: str) -> None:
        if not isinstance(value, list | tuple):
            raise _mismatch(path, what, value)
        if len(value) != len(items):
            raise InvalidJobError(
                path,
                f"expected {name} ({len(items)} items), got {len(value)} items: {_describe(value)}",
            )

    def check(value: Any, path: str) -> None:
        shaped(value, path, name)
        for index, (item, element) in enumerate(zip(items, value, strict=True)):
            if item is not None and type(element) is not item.exact:
                item.check(element, f"{path}[{index}]")

    def load(value: Any, path: str) -> Any:
        shaped(value, path, described)
        return tuple(
            element if item is None else item.load(element, f"{path}[{index}]")
            for index, (item, element) in enumerate(zip(items, value, strict=True))
        )

    described = f"{name} (a JSON array)"
    return _Rule(name, check, load, described=described)


def _mapping_rule(key_hint: Any, item_hint: Any, name: str = "dict") -> _Rule:
    """``dict[str, X]`` and its abstract kin, a JSON object. JSON keys are text, so a key
    annotation other than ``str`` is checked at insert only."""
    key = None if key_hint is None else _rule(key_hint)
    item = None if item_hint is None else _rule(item_hint)
    if key_hint is not None:
        name = f"{name}[{_hint_name(key)}, {_hint_name(item)}]"
    load_key = key if key is _SCALARS[str] else None

    def check(value: Any, path: str) -> None:
        if not isinstance(value, dict):
            raise _mismatch(path, name, value)
        for k, element in value.items():
            if key is not None and type(k) is not key.exact:
                key.check(k, f"{path}.{k} (key)")
            if item is not None and type(element) is not item.exact:
                item.check(element, f"{path}.{k}")

    def load(value: Any, path: str) -> Any:
        if not isinstance(value, dict):
            raise _mismatch(path, described, value)
        if load_key is not None:
            for k in value:
                if type(k) is not str:
                    load_key.load(k, f"{path}.{k} (key)")
        if item is None:
            return value
        exact, load_item = item.json_exact, item.load
        if item.plain:
            for k, element in value.items():
                if type(element) is not exact:
                    load_item(element, f"{path}.{k}")
            return value
        return {
            k: element if type(element) is exact else load_item(element, f"{path}.{k}")
            for k, element in value.items()
        }

    described = f"{name} (a JSON object)"
    return _Rule(name, check, load, plain=item is None or item.plain, described=described)


_JOB_ARGS_DECODE = JobArgs.decode.__func__  # type: ignore[attr-defined]


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
