"""JobArgs: dataclass-based typed args, kinds, Go-compatible JSON, decoding, default options."""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import json
import uuid
from decimal import Decimal
from typing import Any

import pytest

from sa_river import InsertOpts, InvalidJobError, JobArgs, UniqueOpts, UnserializableArgsError
from sa_river.args import decode_json, encode_json, kind_and_encoded_args
from sa_river.enqueue import prepare

UTC = dt.timezone.utc


class SendWelcome(JobArgs, kind="send_welcome"):
    user_id: int
    locale: str = "en"


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


class Level(enum.IntEnum):
    LOW = 1
    HIGH = 2


@dataclasses.dataclass
class Address:
    street: str
    city: str


class Rich(JobArgs, kind="rich"):
    when: dt.datetime
    day: dt.date
    at: dt.time
    ident: uuid.UUID
    amount: Decimal
    color: Color
    level: Level
    address: Address
    maybe_when: dt.datetime | None = None
    ids: list[uuid.UUID] = dataclasses.field(default_factory=list)
    by_name: dict[str, Decimal] = dataclasses.field(default_factory=dict)
    pair: tuple[int, str] = (0, "")


class Inner(JobArgs, kind="inner"):
    n: int


class Outer(JobArgs, kind="outer"):
    inner: Inner
    inners: list[Inner]


# --- kind and dataclass ------------------------------------------------------------------------


class TestKindAndDataclass:
    def test_subclass_is_a_dataclass(self) -> None:
        job = SendWelcome(user_id=7)
        assert dataclasses.is_dataclass(job)
        assert "__dataclass_fields__" in SendWelcome.__dict__
        assert [f.name for f in dataclasses.fields(job)] == ["user_id", "locale"]
        assert job.user_id == 7
        assert job.locale == "en"
        assert job == SendWelcome(user_id=7, locale="en")
        assert repr(job) == "SendWelcome(user_id=7, locale='en')"

    def test_kind_is_a_class_attribute_not_a_field(self) -> None:
        assert SendWelcome.kind == "send_welcome"
        assert SendWelcome(user_id=1).kind == "send_welcome"
        assert "kind" not in SendWelcome(user_id=1).to_dict()

    def test_frozen_class_keyword_makes_an_immutable_dataclass(self) -> None:
        class Frozen(JobArgs, kind="frozen", frozen=True):
            x: int

        job = Frozen(x=1)
        with pytest.raises(dataclasses.FrozenInstanceError):
            job.x = 2  # type: ignore[misc]
        assert job.encode() == '{"x":1}'

    def test_kind_is_required(self) -> None:
        with pytest.raises(InvalidJobError) as info:

            class NoKind(JobArgs):
                x: int

        assert info.value.field == "kind"
        assert "kind" in str(info.value)
        assert "NoKind" in str(info.value)

    def test_empty_kind_is_rejected(self) -> None:
        with pytest.raises(InvalidJobError, match="kind") as info:

            class Empty(JobArgs, kind=""):
                x: int

        assert info.value.field == "kind"

    def test_kind_over_127_characters_is_rejected(self) -> None:
        with pytest.raises(InvalidJobError, match="127") as info:

            class Long(JobArgs, kind="k" * 128):
                x: int

        assert info.value.field == "kind"

    def test_kind_of_127_characters_is_accepted(self) -> None:
        class Longest(JobArgs, kind="k" * 127):
            x: int

        assert len(Longest.kind) == 127

    def test_non_string_kind_is_rejected(self) -> None:
        with pytest.raises(InvalidJobError) as info:

            class Numbered(JobArgs, kind=5):  # type: ignore[arg-type]
                x: int

        assert info.value.field == "kind"

    def test_subclass_inherits_kind_and_fields(self) -> None:
        class Welcome2(SendWelcome):
            extra: bool = False

        assert Welcome2.kind == "send_welcome"
        assert Welcome2(user_id=1, extra=True).encode() == (
            '{"user_id":1,"locale":"en","extra":true}'
        )

    def test_subclass_may_override_kind(self) -> None:
        class Other(SendWelcome, kind="other"):
            pass

        assert Other.kind == "other"
        assert SendWelcome.kind == "send_welcome"


# --- encoding ----------------------------------------------------------------------------------


class TestEncode:
    def test_compact_in_field_order(self) -> None:
        assert SendWelcome(user_id=7).encode() == '{"user_id":7,"locale":"en"}'

    def test_html_characters_are_escaped_as_go_does(self) -> None:
        text = encode_json({"a": "<b>&</b>"})
        assert text == '{"a":"\\u003cb\\u003e\\u0026\\u003c/b\\u003e"}'
        assert json.loads(text) == {"a": "<b>&</b>"}

    def test_line_and_paragraph_separators_are_escaped(self) -> None:
        text = encode_json({"s": "a\u2028b\u2029c"})
        assert text == '{"s":"a\\u2028b\\u2029c"}'
        assert "\u2028" not in text
        assert "\u2029" not in text
        assert json.loads(text) == {"s": "a\u2028b\u2029c"}

    def test_keys_are_escaped_too(self) -> None:
        assert encode_json({"<k>": 1}) == '{"\\u003ck\\u003e":1}'

    def test_utf8_is_kept_not_ascii_escaped(self) -> None:
        text = encode_json({"name": "Zoë 東京 🚀"})
        assert text == '{"name":"Zoë 東京 🚀"}'

    def test_control_characters_and_quotes_are_escaped(self) -> None:
        text = encode_json({"s": 'a"b\\c\n\t'})
        assert text == '{"s":"a\\"b\\\\c\\n\\t"}'

    def test_nested_values_and_literals(self) -> None:
        text = encode_json({"a": [1, {"b": None, "c": True, "d": False}], "e": "x"})
        assert text == '{"a":[1,{"b":null,"c":true,"d":false}],"e":"x"}'

    def test_typed_values_are_encoded(self) -> None:
        ident = uuid.UUID("12345678-1234-5678-1234-567812345678")
        job = Rich(
            when=dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC),
            day=dt.date(2024, 1, 2),
            at=dt.time(3, 4, 5),
            ident=ident,
            amount=Decimal("12.50"),
            color=Color.BLUE,
            level=Level.HIGH,
            address=Address("Main St", "Springfield"),
            ids=[ident],
            by_name={"a": Decimal("1.5")},
            pair=(1, "x"),
        )
        data = json.loads(job.encode())
        assert data == {
            "when": "2024-01-02T03:04:05+00:00",
            "day": "2024-01-02",
            "at": "03:04:05",
            "ident": str(ident),
            "amount": "12.50",
            "color": "blue",
            "level": 2,
            "address": {"street": "Main St", "city": "Springfield"},
            "maybe_when": None,
            "ids": [str(ident)],
            "by_name": {"a": "1.5"},
            "pair": [1, "x"],
        }

    def test_plain_kind_and_dict(self) -> None:
        kind, encoded, opts = kind_and_encoded_args(("dyn", {"b": 1, "a": "<"}))
        assert kind == "dyn"
        assert encoded == '{"b":1,"a":"\\u003c"}'
        assert opts is None

    def test_plain_args_must_be_a_dict(self) -> None:
        with pytest.raises(InvalidJobError) as info:
            kind_and_encoded_args(("dyn", [1, 2]))  # type: ignore[arg-type]
        assert info.value.field == "args"

    def test_args_of_the_wrong_type_are_rejected(self) -> None:
        with pytest.raises(InvalidJobError) as info:
            kind_and_encoded_args({"a": 1})  # type: ignore[arg-type]
        assert info.value.field == "args"

    def test_plain_args_validate_the_kind(self) -> None:
        with pytest.raises(InvalidJobError) as info:
            kind_and_encoded_args(("", {}))
        assert info.value.field == "kind"


# --- unserialisable values ---------------------------------------------------------------------


class TestUnserialisable:
    def test_dotted_path_names_the_nested_value(self) -> None:
        with pytest.raises(UnserializableArgsError) as info:
            encode_json({"a": {"b": [1, object()]}})
        assert info.value.field == "args.a.b[1]"
        assert str(info.value).startswith("args.a.b[1]: ")

    def test_is_an_invalid_job_error_and_a_value_error(self) -> None:
        with pytest.raises(InvalidJobError):
            encode_json({"x": {1, object()}})
        with pytest.raises(ValueError, match="args"):
            encode_json({"x": object()})

    def test_job_args_field_is_named(self) -> None:
        class Holder(JobArgs, kind="holder"):
            payload: Any

        with pytest.raises(UnserializableArgsError) as info:
            Holder(payload={"ok": 1, "bad": object()}).encode()
        assert info.value.field == "args.payload.bad"

    def test_nested_dataclass_field_is_named(self) -> None:
        @dataclasses.dataclass
        class Box:
            content: Any

        with pytest.raises(UnserializableArgsError) as info:
            encode_json({"boxes": [Box(1), Box(content=b"bytes")]})
        assert info.value.field == "args.boxes[1].content"

    @pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")], ids=str)
    def test_nan_and_infinity_are_rejected(self, value: float) -> None:
        with pytest.raises(UnserializableArgsError) as info:
            encode_json({"score": [0.5, value]})
        assert info.value.field == "args.score[1]"

    @pytest.mark.parametrize(
        ("value", "path"),
        [
            ({"a": "x\x00y"}, "args.a"),
            ({"a": {"b": ["ok", "\x00"]}}, "args.a.b[1]"),
            ({"key\x00": 1}, "args.key\x00"),
            ({"c": Color.RED, "e": [enum.Enum("Nul", {"N": "\x00"}).N]}, "args.e[0]"),  # type: ignore[attr-defined]
        ],
        ids=["value", "nested", "key", "enum"],
    )
    def test_nul_character_is_rejected_because_jsonb_cannot_store_it(
        self, value: Any, path: str
    ) -> None:
        with pytest.raises(UnserializableArgsError, match="NUL") as info:
            encode_json(value)
        assert info.value.field == path

    @pytest.mark.parametrize(
        "text",
        ["\\u0000", "\\\\u0000", "u0000", "\\\\"],
        ids=["backslash-u0000", "two-backslashes-u0000", "bare-u0000", "backslashes"],
    )
    def test_text_that_only_looks_like_a_nul_escape_is_accepted(self, text: str) -> None:
        assert json.loads(encode_json({"a": text})) == {"a": text}

    @pytest.mark.parametrize(
        ("value", "path"),
        [
            ({"file": "caf\udce9.txt"}, "args.file"),
            ({"a": {"b": ["ok", "caf\udce9"]}}, "args.a.b[1]"),
            ({"ok": "é", "later": "\ud83d alone"}, "args.later"),
        ],
        ids=["value", "nested", "high-surrogate"],
    )
    def test_a_lone_surrogate_is_rejected_naming_its_path(self, value: Any, path: str) -> None:
        with pytest.raises(UnserializableArgsError, match="lone surrogate") as info:
            encode_json(value)
        assert info.value.field == path
        assert isinstance(info.value, InvalidJobError)

    def test_a_lone_surrogate_error_gives_its_position_in_the_string(self) -> None:
        with pytest.raises(UnserializableArgsError) as info:
            encode_json({"file": "caf\udce9.txt"})
        assert "'\\udce9' at position 3" in str(info.value)

    def test_a_key_holding_a_lone_surrogate_is_named_escaped(self) -> None:
        with pytest.raises(UnserializableArgsError) as info:
            encode_json({"caf\udce9": 1})
        assert info.value.field == "args.caf\\udce9"
        str(info.value).encode("utf-8")  # the error itself prints anywhere

    def test_a_job_args_field_holding_a_lone_surrogate_is_named(self) -> None:
        with pytest.raises(UnserializableArgsError) as info:
            kind_and_encoded_args(SendWelcome(user_id=1, locale="\udce9"))
        assert info.value.field == "args.locale"

    def test_args_nested_thousands_deep_are_rejected_not_a_recursion_error(self) -> None:
        deep: dict[str, Any] = {}
        node = deep
        for _ in range(100_000):  # deeper than any Python (3.13 encodes 5,000) can encode
            node["a"] = {}
            node = node["a"]
        with pytest.raises(UnserializableArgsError, match="nested too deeply") as info:
            encode_json(deep)
        assert info.value.field == "args"
        with pytest.raises(InvalidJobError, match="nested too deeply"):
            prepare(("dyn", {"list": [deep]}))

    def test_non_ascii_text_without_surrogates_is_kept(self) -> None:
        value = {"a": "café", "b": "\U0001f600", "c": "\u2028 \ufffd"}
        assert json.loads(encode_json(value)) == value

    def test_nul_in_metadata_names_metadata(self) -> None:
        with pytest.raises(UnserializableArgsError) as info:
            prepare(("dyn", {}), InsertOpts(metadata={"m": "\x00"}))
        assert info.value.field == "metadata.m"

    def test_non_string_key_object_is_rejected(self) -> None:
        with pytest.raises(UnserializableArgsError) as info:
            encode_json({"m": {(1, 2): "tuple key"}})
        assert info.value.field.startswith("args")

    def test_top_level_value_without_path(self) -> None:
        with pytest.raises(UnserializableArgsError) as info:
            encode_json(object())
        assert info.value.field == "args"

    def test_field_name_is_configurable(self) -> None:
        with pytest.raises(UnserializableArgsError) as info:
            encode_json({"m": object()}, field="metadata")
        assert info.value.field == "metadata.m"

    def test_prepare_rejects_unserialisable_args_and_metadata(self) -> None:
        with pytest.raises(UnserializableArgsError) as info:
            prepare(("dyn", {"a": {"b": [1, object()]}}))
        assert info.value.field == "args.a.b[1]"
        with pytest.raises(UnserializableArgsError) as info:
            prepare(("dyn", {}), InsertOpts(metadata={"trace": float("nan")}))
        assert info.value.field == "metadata.trace"


# --- decoding ----------------------------------------------------------------------------------


class TestDecode:
    def test_round_trip_of_simple_args(self) -> None:
        job = SendWelcome(user_id=7, locale="fr")
        assert SendWelcome.decode(decode_json(job.encode())) == job

    def test_missing_keys_fall_back_to_defaults(self) -> None:
        assert SendWelcome.decode({"user_id": 1}) == SendWelcome(user_id=1, locale="en")

    def test_unknown_keys_are_ignored(self) -> None:
        decoded = SendWelcome.decode({"user_id": 1, "added_by_newer_producer": [1, 2]})
        assert decoded == SendWelcome(user_id=1)

    def test_missing_required_key_names_args(self) -> None:
        with pytest.raises(InvalidJobError) as info:
            SendWelcome.decode({"locale": "en"})
        assert info.value.field == "args"
        assert "SendWelcome" in str(info.value)

    def test_typed_values_are_converted(self) -> None:
        ident = uuid.uuid4()
        job = Rich(
            when=dt.datetime(2024, 1, 2, 3, 4, 5, 123456, tzinfo=UTC),
            day=dt.date(2024, 1, 2),
            at=dt.time(3, 4, 5),
            ident=ident,
            amount=Decimal("12.50"),
            color=Color.RED,
            level=Level.LOW,
            address=Address("Main St", "Springfield"),
            maybe_when=dt.datetime(2025, 6, 7, tzinfo=UTC),
            ids=[ident, uuid.UUID(int=1)],
            by_name={"x": Decimal("0.1")},
            pair=(3, "y"),
        )
        decoded = Rich.decode(decode_json(job.encode()))
        assert decoded == job
        assert isinstance(decoded.when, dt.datetime)
        assert decoded.when.tzinfo is not None
        assert isinstance(decoded.ident, uuid.UUID)
        assert isinstance(decoded.amount, Decimal)
        assert decoded.color is Color.RED
        assert decoded.level is Level.LOW
        assert isinstance(decoded.address, Address)
        assert all(isinstance(i, uuid.UUID) for i in decoded.ids)
        assert isinstance(decoded.by_name["x"], Decimal)
        assert decoded.pair == (3, "y")

    def test_go_style_utc_timestamp_is_converted(self) -> None:
        decoded = Rich.decode(
            {
                "when": "2024-01-02T03:04:05Z",
                "day": "2024-01-02",
                "at": "03:04:05",
                "ident": "12345678-1234-5678-1234-567812345678",
                "amount": 3,
                "color": "blue",
                "level": 2,
                "address": {"street": "s", "city": "c"},
            }
        )
        assert decoded.when == dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)
        assert decoded.amount == Decimal(3)
        assert decoded.color is Color.BLUE
        assert decoded.level is Level.HIGH

    def test_nested_job_args_are_converted(self) -> None:
        job = Outer(inner=Inner(n=1), inners=[Inner(n=2), Inner(n=3)])
        encoded = job.encode()
        assert encoded == '{"inner":{"n":1},"inners":[{"n":2},{"n":3}]}'
        decoded = Outer.decode(decode_json(encoded))
        assert decoded == job
        assert isinstance(decoded.inner, Inner)
        assert all(isinstance(i, Inner) for i in decoded.inners)

    def test_none_stays_none_for_optional_fields(self) -> None:
        data = json.loads(
            Rich(
                when=dt.datetime(2024, 1, 1, tzinfo=UTC),
                day=dt.date(2024, 1, 1),
                at=dt.time(0),
                ident=uuid.UUID(int=0),
                amount=Decimal(0),
                color=Color.RED,
                level=Level.LOW,
                address=Address("", ""),
            ).encode()
        )
        assert data["maybe_when"] is None
        assert Rich.decode(data).maybe_when is None

    def test_decode_json_accepts_bytes(self) -> None:
        assert decode_json(b'{"a":"\\u003c"}') == {"a": "<"}


# --- class default insert options --------------------------------------------------------------


class Mailer(
    JobArgs,
    kind="mailer",
    insert_opts=InsertOpts(queue="mail", priority=3, max_attempts=5, tags=["email"]),
):
    to: str


class TestClassInsertOpts:
    def test_class_defaults_are_exposed(self) -> None:
        assert Mailer(to="a").insert_opts() == InsertOpts(
            queue="mail", priority=3, max_attempts=5, tags=["email"]
        )
        assert SendWelcome(user_id=1).insert_opts() is None

    def test_class_defaults_apply_when_the_call_gives_none(self) -> None:
        p = prepare(Mailer(to="a"))
        assert (p.queue, p.priority, p.max_attempts, list(p.tags)) == ("mail", 3, 5, ["email"])

    def test_call_options_override_field_by_field(self) -> None:
        p = prepare(Mailer(to="a"), InsertOpts(priority=1, tags=["urgent"]))
        assert p.queue == "mail", "unset in the call: class default"
        assert p.max_attempts == 5, "unset in the call: class default"
        assert p.priority == 1, "set in the call: the call wins"
        assert list(p.tags) == ["urgent"]

    def test_sa_river_defaults_fill_what_neither_sets(self) -> None:
        p = prepare(SendWelcome(user_id=1))
        assert (p.queue, p.priority, p.max_attempts, list(p.tags)) == ("default", 1, 25, [])
        assert p.metadata == "{}"
        assert p.scheduled_at is None
        assert p.pending is False
        assert p.unique_key is None
        assert p.unique_states is None

    def test_unique_from_class_and_schedule_from_call(self) -> None:
        class Report(JobArgs, kind="report", insert_opts=InsertOpts(unique=UniqueOpts())):
            n: int

        when = dt.datetime(2030, 1, 1, tzinfo=UTC)
        p = prepare(Report(n=1), InsertOpts(scheduled_at=when, queue="reports"))
        assert p.unique_key is not None
        assert p.unique_states == "11110101"
        assert p.scheduled_at == when
        assert p.queue == "reports"

    def test_merged_over_keeps_explicit_falsy_values(self) -> None:
        merged = InsertOpts(pending=False, tags=[], metadata={}).merged_over(
            InsertOpts(pending=True, tags=["abc"], metadata={"a": 1}, queue="q")
        )
        assert merged == InsertOpts(pending=False, tags=[], metadata={}, queue="q")

    def test_merged_over_none(self) -> None:
        opts = InsertOpts(queue="q")
        assert opts.merged_over(None) is opts

    def test_subclass_inherits_class_defaults(self) -> None:
        class UrgentMailer(Mailer, kind="urgent_mailer"):
            pass

        p = prepare(UrgentMailer(to="a"))
        assert (p.kind, p.queue, p.priority) == ("urgent_mailer", "mail", 3)

    def test_insert_opts_method_may_depend_on_the_instance(self) -> None:
        class PerTenant(JobArgs, kind="per_tenant"):
            tenant: str

            def insert_opts(self) -> InsertOpts | None:
                return InsertOpts(queue=f"tenant_{self.tenant}")

        assert prepare(PerTenant(tenant="acme")).queue == "tenant_acme"
        assert prepare(PerTenant(tenant="acme"), InsertOpts(queue="x")).queue == "x"

    def test_invalid_class_defaults_are_rejected_at_insert(self) -> None:
        class Bad(JobArgs, kind="bad_defaults", insert_opts=InsertOpts(priority=9)):
            pass

        with pytest.raises(InvalidJobError) as info:
            prepare(Bad())
        assert info.value.field == "priority"
        # A valid call-site value replaces the bad default.
        assert prepare(Bad(), InsertOpts(priority=2)).priority == 2
