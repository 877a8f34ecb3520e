"""JobArgs field types are enforced: at insert on the instance's Python values, at decode on the
JSON a worker fetched, with an ``InvalidJobError`` naming the field (``args.user_id: expected
int, got str 'x'``). Nothing is inserted when a value does not fit.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import datetime as dt
import enum
import json
import uuid
from decimal import Decimal
from typing import Any, Literal, NewType, Optional, Protocol, TypedDict, Union

import pytest

from sa_river import InsertManyParams, InsertOpts, InvalidJobError, JobArgs
from sa_river.args import decode_json, kind_and_encoded_args
from sa_river.enqueue import _prepare_many, prepare

UTC = dt.timezone.utc


class SendWelcome(JobArgs, kind="tc_send_welcome"):
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


class Inner(JobArgs, kind="tc_inner"):
    n: int


UserId = NewType("UserId", int)


class Everything(JobArgs, kind="tc_everything"):
    """One field of each annotation that args take."""

    count: int = 0
    ratio: float = 0.0
    name: str = ""
    flag: bool = False
    nothing: None = None
    maybe: Optional[int] = None  # noqa: UP045 - the spelling older code uses
    maybe_too: str | None = None
    either: Union[int, str] = 0  # noqa: UP007
    ids: list[int] = dataclasses.field(default_factory=list)
    by_name: dict[str, float] = dataclasses.field(default_factory=dict)
    pair: tuple[int, str] = (0, "")
    many: tuple[int, ...] = ()
    unique: set[str] = dataclasses.field(default_factory=set)
    seq: collections.abc.Sequence[int] = ()
    mode: Literal["fast", "slow"] = "fast"
    one: Literal[1] = 1
    anything: Any = None
    color: Color = Color.RED
    level: Level = Level.LOW
    when: dt.datetime = dt.datetime(2024, 1, 1, tzinfo=UTC)
    day: dt.date = dt.date(2024, 1, 1)
    at: dt.time = dt.time(0)
    ident: uuid.UUID = uuid.UUID(int=0)
    amount: Decimal = Decimal(0)
    address: Address = dataclasses.field(default_factory=lambda: Address("s", "c"))
    inner: Inner = dataclasses.field(default_factory=lambda: Inner(n=0))
    inners: list[Inner] = dataclasses.field(default_factory=list)
    user: UserId = UserId(0)


def insert_error(args: JobArgs) -> InvalidJobError:
    """The error inserting ``args`` raises (prepare validates and encodes, as every insert
    entry point does before it writes)."""
    with pytest.raises(InvalidJobError) as info:
        prepare(args)
    return info.value


def decode_error(cls: type[JobArgs], data: Any) -> InvalidJobError:
    with pytest.raises(InvalidJobError) as info:
        cls.decode(data)
    return info.value


# --- at insert ---------------------------------------------------------------------------------


class TestInsert:
    def test_the_error_names_the_field_the_type_and_the_value(self) -> None:
        error = insert_error(SendWelcome(user_id="x"))  # type: ignore[arg-type]
        assert error.field == "args.user_id"
        assert str(error) == "args.user_id: expected int, got str 'x'"

    def test_values_of_the_declared_types_are_accepted(self) -> None:
        job = Everything(
            count=3,
            ratio=0.5,
            name="n",
            flag=True,
            maybe=4,
            maybe_too="s",
            either="e",
            ids=[1, 2],
            by_name={"a": 1.5},
            pair=(1, "a"),
            many=(1, 2, 3),
            unique={"a"},
            seq=[1],
            mode="slow",
            anything=object,
            color=Color.BLUE,
            level=Level.HIGH,
            when=dt.datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC),
            day=dt.date(2024, 5, 6),
            at=dt.time(7, 8),
            ident=uuid.uuid4(),
            amount=Decimal("1.25"),
            address=Address("Main St", "Springfield"),
            inner=Inner(n=1),
            inners=[Inner(n=2)],
            user=UserId(9),
        )
        with pytest.raises(InvalidJobError, match="anything"):  # Any is not checked...
            prepare(job)
        job.anything = {"free": ["form", 1, None]}  # ...only encoded
        assert json.loads(prepare(job).args)["anything"] == {"free": ["form", 1, None]}

    @pytest.mark.parametrize(
        ("field", "value", "message"),
        [
            ("count", "1", "args.count: expected int, got str '1'"),
            ("count", True, "args.count: expected int, got bool True"),
            ("count", 1.0, "args.count: expected int, got float 1.0"),
            ("count", None, "args.count: expected int, got None"),
            ("ratio", "0.5", "args.ratio: expected float, got str '0.5'"),
            ("ratio", False, "args.ratio: expected float, got bool False"),
            ("name", 5, "args.name: expected str, got int 5"),
            ("name", b"bytes", "args.name: expected str, got bytes b'bytes'"),
            ("flag", 1, "args.flag: expected bool, got int 1"),
            ("flag", "true", "args.flag: expected bool, got str 'true'"),
            ("nothing", 0, "args.nothing: expected None, got int 0"),
            ("maybe", "3", "args.maybe: expected int | None, got str '3'"),
            ("maybe_too", 3, "args.maybe_too: expected str | None, got int 3"),
            ("either", 1.5, "args.either: expected int | str, got float 1.5"),
            ("either", None, "args.either: expected int | str, got None"),
            ("ids", "1,2", "args.ids: expected list[int], got str '1,2'"),
            ("ids", {1, 2}, "args.ids: expected list[int], got set {1, 2}"),
            ("by_name", [("a", 1.0)], "args.by_name: expected dict[str, float], got list"),
            ("unique", ["a"], "args.unique: expected set[str], got list ['a']"),
            ("seq", "123", "args.seq: expected Sequence[int], got str '123'"),
            ("mode", "medium", "args.mode: expected one of 'fast', 'slow', got str 'medium'"),
            ("one", True, "args.one: expected 1, got bool True"),
            ("color", "red", "args.color: expected Color, got str 'red'"),
            ("level", 1, "args.level: expected Level, got int 1"),
            ("when", "2024-01-01", "args.when: expected datetime, got str '2024-01-01'"),
            ("day", dt.datetime(2024, 1, 1), "args.day: expected date, got datetime"),
            ("at", "00:00", "args.at: expected time, got str '00:00'"),
            ("ident", str(uuid.UUID(int=0)), "args.ident: expected UUID, got str '0000"),
            ("amount", 1.5, "args.amount: expected Decimal, got float 1.5"),
            ("address", {"street": "s", "city": "c"}, "args.address: expected Address, got dict"),
            ("inner", {"n": 1}, "args.inner: expected Inner, got dict {'n': 1}"),
            ("user", "9", "args.user: expected int, got str '9'"),
        ],
        ids=lambda v: v if isinstance(v, str) and " " not in v else None,
    )
    def test_a_value_of_another_type_is_refused(self, field: str, value: Any, message: str) -> None:
        error = insert_error(Everything(**{field: value}))
        assert error.field == f"args.{field}"
        assert str(error).startswith(message)

    def test_an_int_is_a_float_and_an_int_enum_an_int(self) -> None:
        assert json.loads(prepare(Everything(ratio=2)).args)["ratio"] == 2
        assert json.loads(prepare(Everything(count=Level.HIGH)).args)["count"] == 2

    def test_a_tuple_is_accepted_for_a_list_and_a_list_for_a_tuple(self) -> None:
        # Both are JSON arrays, and decode back to the declared type.
        job = Everything(ids=(1, 2), pair=[1, "a"], many=[1, 2])  # type: ignore[arg-type]
        decoded = Everything.decode(decode_json(prepare(job).args))
        assert (decoded.ids, decoded.pair, decoded.many) == ([1, 2], (1, "a"), (1, 2))

    def test_items_of_a_list_are_checked_and_named_by_index(self) -> None:
        error = insert_error(Everything(ids=[1, 2, "3"]))  # type: ignore[list-item]
        assert str(error) == "args.ids[2]: expected int, got str '3'"

    def test_keys_and_values_of_a_dict_are_checked_and_named(self) -> None:
        error = insert_error(Everything(by_name={"a": 1.0, "b": "2"}))  # type: ignore[dict-item]
        assert str(error) == "args.by_name.b: expected float, got str '2'"
        error = insert_error(Everything(by_name={7: 1.0}))  # type: ignore[dict-item]
        assert str(error) == "args.by_name.7 (key): expected str, got int 7"

    def test_a_fixed_tuple_needs_its_length_and_each_item_type(self) -> None:
        error = insert_error(Everything(pair=(1, "a", "b")))  # type: ignore[arg-type]
        assert error.field == "args.pair"
        assert "expected tuple[int, str] (2 items), got 3 items" in str(error)
        error = insert_error(Everything(pair=("a", "b")))  # type: ignore[arg-type]
        assert str(error) == "args.pair[0]: expected int, got str 'a'"
        error = insert_error(Everything(many=(1, None)))  # type: ignore[arg-type]
        assert str(error) == "args.many[1]: expected int, got None"

    def test_nested_args_and_dataclasses_are_checked_field_by_field(self) -> None:
        error = insert_error(Everything(inner=Inner(n="1")))  # type: ignore[arg-type]
        assert str(error) == "args.inner.n: expected int, got str '1'"
        error = insert_error(Everything(inners=[Inner(n=1), Inner(n=None)]))  # type: ignore[arg-type]
        assert str(error) == "args.inners[1].n: expected int, got None"
        error = insert_error(Everything(address=Address("Main St", 12)))  # type: ignore[arg-type]
        assert str(error) == "args.address.city: expected str, got int 12"

    def test_an_optional_of_a_container_names_the_bad_item(self) -> None:
        class Tagged(JobArgs, kind="tc_tagged"):
            tags: list[str] | None = None

        assert prepare(Tagged()).args == '{"tags":null}'
        error = insert_error(Tagged(tags=["a", 1]))  # type: ignore[list-item]
        assert str(error) == "args.tags[1]: expected str, got int 1"

    def test_unannotated_and_any_fields_take_anything_json_holds(self) -> None:
        class Loose(JobArgs, kind="tc_loose"):
            payload: Any
            other: object = None

        assert prepare(Loose(payload=[1, "a", {"b": None}], other=3.5)).args == (
            '{"payload":[1,"a",{"b":null}],"other":3.5}'
        )

    def test_a_subclass_checks_inherited_and_own_fields(self) -> None:
        class Welcome2(SendWelcome, kind="tc_welcome2"):
            retries: int = 0

        assert insert_error(Welcome2(user_id="x")).field == "args.user_id"  # type: ignore[arg-type]
        assert insert_error(Welcome2(user_id=1, retries="2")).field == "args.retries"  # type: ignore[arg-type]

    def test_a_frozen_class_is_checked(self) -> None:
        class Frozen(JobArgs, kind="tc_frozen", frozen=True):
            n: int

        assert insert_error(Frozen(n="1")).field == "args.n"  # type: ignore[arg-type]

    def test_a_field_that_is_not_an_init_argument_is_checked_too(self) -> None:
        class Derived(JobArgs, kind="tc_derived"):
            n: int
            doubled: int = dataclasses.field(init=False)

            def __post_init__(self) -> None:
                self.doubled = self.n * 2

        job = Derived(n=2)
        assert prepare(job).args == '{"n":2,"doubled":4}'
        job.doubled = "4"  # type: ignore[assignment]
        assert str(insert_error(job)) == "args.doubled: expected int, got str '4'"

    def test_a_class_may_refer_to_one_defined_after_it(self) -> None:
        # Annotations are compiled when first used, not when the class is created.
        assert insert_error(Later(step=LaterStep(n="x"))).field == "args.step.n"  # type: ignore[arg-type]
        assert Later.decode({"step": {"n": 1}}) == Later(step=LaterStep(n=1))

    def test_a_dataclass_may_refer_to_itself(self) -> None:
        class Tree(JobArgs, kind="tc_tree"):
            root: Node

        tree = Tree(root=Node(1, [Node(2, []), Node(3, [Node("4", [])])]))  # type: ignore[arg-type]
        assert str(insert_error(tree)) == (
            "args.root.children[1].children[0].value: expected int, got str '4'"
        )

    def test_an_unresolvable_annotation_leaves_that_field_unchecked_only(self) -> None:
        class Partly(JobArgs, kind="tc_partly"):
            known: int
            unknown: NotDefinedAnywhere  # type: ignore[name-defined]  # noqa: F821

        assert prepare(Partly(known=1, unknown="anything")).args == (
            '{"known":1,"unknown":"anything"}'
        )
        assert insert_error(Partly(known="1", unknown=None)).field == "args.known"  # type: ignore[arg-type]

    def test_other_classes_are_checked_with_isinstance_where_they_allow_it(self) -> None:
        contact = Contact(point={"x": 1, "y": 2}, who=Person("Ann"), email=Email("a@b"))
        assert prepare(contact).args == (
            '{"point":{"x":1,"y":2},"who":{"name":"Ann"},"email":"a@b"}'
        )
        contact.email = "a@b"  # type: ignore[assignment]
        assert str(insert_error(contact)) == "args.email: expected Email, got str 'a@b'"
        contact.email, contact.point = Email("a@b"), [1, 2]  # type: ignore[assignment]
        assert str(insert_error(contact)) == "args.point: expected Point, got list [1, 2]"
        # A TypedDict is decoded as the dict it is; a Protocol refuses isinstance: unchecked.
        decoded = Contact.decode({"point": {"x": 1, "y": 2}, "who": 5, "email": "a@b"})
        assert decoded.point == {"x": 1, "y": 2}
        assert decoded.who == 5  # type: ignore[comparison-overlap]

    def test_plain_kind_and_dict_args_are_not_checked(self) -> None:
        # A (kind, dict) job has no class to check it against: its worker's decode does.
        _, encoded, _ = kind_and_encoded_args(("tc_send_welcome", {"user_id": "x"}))
        assert encoded == '{"user_id":"x"}'

    def test_a_batch_names_the_item_and_the_field(self) -> None:
        good = SendWelcome(user_id=1)
        with pytest.raises(InvalidJobError) as info:
            _prepare_many([good, good, InsertManyParams(SendWelcome(user_id=None), InsertOpts())])  # type: ignore[arg-type]
        assert info.value.field == "items[2].args.user_id"
        assert str(info.value) == "items[2].args.user_id: expected int, got None"

    def test_encode_checks_before_encoding(self) -> None:
        with pytest.raises(InvalidJobError, match=r"^args\.user_id: expected int"):
            SendWelcome(user_id=[1]).encode()  # type: ignore[arg-type]

    def test_a_long_value_is_shortened_in_the_error(self) -> None:
        error = insert_error(SendWelcome(user_id=list(range(10_000))))  # type: ignore[arg-type]
        assert str(error).startswith("args.user_id: expected int, got list [0, 1, 2, 3, 4, 5, ...]")
        assert len(str(error)) < 200


class Later(JobArgs, kind="tc_later"):
    step: LaterStep


@dataclasses.dataclass
class LaterStep:
    n: int


class Point(TypedDict):
    x: int
    y: int


class Named(Protocol):
    name: str


@dataclasses.dataclass
class Person:
    name: str


class Email(str):
    """A class of the user's that args take as it is."""


class Contact(JobArgs, kind="tc_contact"):
    point: Point
    who: Named
    email: Email


class Legacy(JobArgs, kind="tc_legacy"):
    n: int

    @classmethod
    def decode(cls, data: Any) -> Legacy:
        return cls(n=int(data["old_n"]))


class Holder(JobArgs, kind="tc_holder"):
    legacy: Legacy


@dataclasses.dataclass
class Node:
    value: int
    children: list[Node]


# --- at decode ---------------------------------------------------------------------------------


class TestDecode:
    def test_the_error_names_the_field_the_type_and_the_value(self) -> None:
        error = decode_error(SendWelcome, {"user_id": "x"})
        assert error.field == "args.user_id"
        assert str(error) == "args.user_id: expected int, got str 'x'"

    def test_null_is_refused_for_a_field_that_is_not_optional(self) -> None:
        assert str(decode_error(SendWelcome, {"user_id": None})) == (
            "args.user_id: expected int, got None"
        )
        assert Everything.decode({"maybe": None, "maybe_too": None}).maybe is None

    def test_args_that_are_not_a_json_object_are_refused(self) -> None:
        error = decode_error(SendWelcome, [1, 2])
        assert error.field == "args"
        assert "expected SendWelcome (a JSON object), got list [1, 2]" in str(error)

    @pytest.mark.parametrize(
        ("data", "message"),
        [
            ({"count": "1"}, "args.count: expected int, got str '1'"),
            ({"count": 1.5}, "args.count: expected int, got float 1.5"),
            ({"count": True}, "args.count: expected int, got bool True"),
            ({"ratio": "1"}, "args.ratio: expected float, got str '1'"),
            ({"flag": 0}, "args.flag: expected bool, got int 0"),
            ({"name": ["a"]}, "args.name: expected str, got list ['a']"),
            ({"either": [1]}, "args.either: expected int | str, got list [1]"),
            ({"ids": [1, "2"]}, "args.ids[1]: expected int, got str '2'"),
            ({"ids": {"a": 1}}, "args.ids: expected list[int] (a JSON array), got dict"),
            ({"by_name": {"a": "x"}}, "args.by_name.a: expected float, got str 'x'"),
            ({"by_name": [1]}, "args.by_name: expected dict[str, float] (a JSON object), got"),
            ({"pair": [1]}, "args.pair: expected tuple[int, str] (2 items), got 1 items"),
            ({"pair": [1, 2]}, "args.pair[1]: expected str, got int 2"),
            ({"many": [1, "x"]}, "args.many[1]: expected int, got str 'x'"),
            ({"mode": "medium"}, "args.mode: expected one of 'fast', 'slow', got str 'medium'"),
            ({"one": True}, "args.one: expected 1, got bool True"),
            ({"color": "green"}, "args.color: expected Color (one of 'red', 'blue'), got str"),
            ({"level": 3}, "args.level: expected Level (one of 1, 2), got int 3"),
            ({"level": True}, "args.level: expected Level (one of 1, 2), got bool True"),
            ({"when": "soon"}, "args.when: expected datetime (ISO 8601 text), got str 'soon'"),
            ({"when": 1700000000}, "args.when: expected datetime (ISO 8601 text), got int"),
            ({"day": "2024-13-01"}, "args.day: expected date (ISO 8601 text), got str"),
            ({"at": "noon"}, "args.at: expected time (ISO 8601 text), got str 'noon'"),
            ({"ident": "not-a-uuid"}, "args.ident: expected UUID (UUID text), got str"),
            ({"amount": "lots"}, "args.amount: expected Decimal (a number), got str 'lots'"),
            ({"amount": True}, "args.amount: expected Decimal (a number), got bool True"),
            ({"address": "Main St"}, "args.address: expected Address (a JSON object), got str"),
            ({"address": {"street": "s", "city": 1}}, "args.address.city: expected str, got int"),
            ({"inner": {"n": "1"}}, "args.inner.n: expected int, got str '1'"),
            ({"inners": [{"n": 1}, {"n": None}]}, "args.inners[1].n: expected int, got None"),
            ({"user": "9"}, "args.user: expected int, got str '9'"),
        ],
    )
    def test_a_value_that_does_not_fit_is_refused(self, data: dict[str, Any], message: str) -> None:
        assert str(decode_error(Everything, data)).startswith(message)

    def test_json_values_convert_to_the_declared_types(self) -> None:
        ident = uuid.uuid4()
        decoded = Everything.decode(
            {
                "ratio": 2,
                "pair": [1, "a"],
                "many": [1, 2],
                "unique": ["a", "b"],
                "seq": [1],
                "color": "blue",
                "level": 2,
                "when": "2024-05-06T07:08:09Z",
                "day": "2024-05-06",
                "at": "07:08:09",
                "ident": str(ident),
                "amount": 1.25,
                "address": {"street": "s", "city": "c"},
                "inner": {"n": 1},
                "inners": [{"n": 2}],
            }
        )
        assert decoded.ratio == 2, "an int is a float (Go writes 2.0 as 2)"
        assert decoded.pair == (1, "a")
        assert decoded.many == (1, 2)
        assert decoded.unique == {"a", "b"}
        assert decoded.color is Color.BLUE
        assert decoded.level is Level.HIGH
        assert decoded.when == dt.datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC)
        assert decoded.day == dt.date(2024, 5, 6)
        assert decoded.at == dt.time(7, 8, 9)
        assert decoded.ident == ident
        assert decoded.amount == Decimal("1.25")
        assert decoded.address == Address("s", "c")
        assert decoded.inner == Inner(n=1)
        assert decoded.inners == [Inner(n=2)]

    def test_a_union_takes_the_first_option_that_fits(self) -> None:
        class Either(JobArgs, kind="tc_either"):
            when: dt.datetime | str
            id_or_name: int | str

        decoded = Either.decode({"when": "2024-01-01T00:00:00Z", "id_or_name": "x"})
        assert decoded.when == dt.datetime(2024, 1, 1, tzinfo=UTC)
        assert decoded.id_or_name == "x"
        assert Either.decode({"when": "next week", "id_or_name": 3}).when == "next week"

    def test_an_optional_nested_value_names_what_is_wrong_inside_it(self) -> None:
        class Shipment(JobArgs, kind="tc_shipment"):
            to: Address | None = None
            when: dt.datetime | None = None

        assert str(decode_error(Shipment, {"to": {"street": "s", "city": 1}})) == (
            "args.to.city: expected str, got int 1"
        )
        assert "cannot build Address" in str(decode_error(Shipment, {"to": {"street": "s"}}))
        assert str(decode_error(Shipment, {"when": "soon"})) == (
            "args.when: expected datetime (ISO 8601 text) | None, got str 'soon'"
        )

    def test_a_literal_of_enum_members_decodes_from_their_values(self) -> None:
        class Paint(JobArgs, kind="tc_paint"):
            color: Literal[Color.RED]

        assert Paint.decode({"color": "red"}).color is Color.RED
        assert "expected Color.RED" in str(decode_error(Paint, {"color": "blue"}))
        assert prepare(Paint(color=Color.RED)).args == '{"color":"red"}'

    def test_missing_and_unknown_keys_behave_as_before(self) -> None:
        assert SendWelcome.decode({"user_id": 1, "new_field": "x"}) == SendWelcome(user_id=1)
        error = decode_error(SendWelcome, {"locale": "fr"})
        assert error.field == "args"
        assert "cannot build SendWelcome" in str(error)

    def test_a_dataclass_ignores_unknown_keys_like_job_args(self) -> None:
        decoded = Everything.decode({"address": {"street": "s", "city": "c", "zip": "1"}})
        assert decoded.address == Address("s", "c")

    def test_a_nested_class_with_its_own_decode_is_decoded_by_it(self) -> None:
        assert Holder.decode({"legacy": {"old_n": "5"}}) == Holder(legacy=Legacy(n=5))

    def test_what_insert_accepts_decodes_back_equal(self) -> None:
        job = Everything(
            count=1,
            ratio=1.5,
            name="n",
            flag=True,
            maybe=2,
            either="e",
            ids=[1],
            by_name={"a": 0.5},
            pair=(1, "b"),
            many=(3,),
            unique={"u"},
            seq=[4],
            mode="slow",
            anything={"k": [1]},
            color=Color.BLUE,
            level=Level.HIGH,
            when=dt.datetime(2024, 1, 2, 3, 4, 5, 6, tzinfo=UTC),
            day=dt.date(2024, 1, 2),
            at=dt.time(3, 4, 5),
            ident=uuid.uuid4(),
            amount=Decimal("9.99"),
            address=Address("a", "b"),
            inner=Inner(n=5),
            inners=[Inner(n=6), Inner(n=7)],
            user=UserId(8),
        )
        assert Everything.decode(decode_json(prepare(job).args)) == job
