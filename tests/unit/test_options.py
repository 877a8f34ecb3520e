"""InsertOpts validation: every bad value raises an InvalidJobError naming its field."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from sa_river import InsertOpts, InvalidJobError, SaRiverError, UniqueOpts
from sa_river.enqueue import InsertManyParams, _prepare_many, prepare
from sa_river.options import (
    validate_kind,
    validate_max_attempts,
    validate_priority,
    validate_queue,
    validate_scheduled_at,
    validate_tags,
)

UTC = timezone.utc
GOOD_ARGS = ("options_test", {"n": 1})


def _assert_names_field(exc: InvalidJobError, field: str) -> None:
    assert isinstance(exc, ValueError)
    assert isinstance(exc, SaRiverError)
    assert exc.field == field
    assert str(exc).startswith(f"{field}: "), str(exc)


# Each case: field, bad value, the validator, and the InsertOpts that carries the value.
PRIORITY_CASES = [0, 5, -1, True, False, "1", 1.0, None]
MAX_ATTEMPTS_CASES = [0, -1, 40000, 32768, True, "3", 2.5, None]
BAD_TAGS: list[Any] = [
    "abc",  # a string is not a list of tags
    5,
    None,
    {"abc": 1},
    ["a,b"],  # a comma would break River's comma-joined tag transport
    ["abc,def"],
    ["-abc"],  # leading dash
    ["abc-"],  # trailing dash
    ["a" * 256],  # over 255 characters
    ["ab"],  # under 3 characters
    ["a"],
    [""],
    ["has space"],
    ["dot.ted"],
    ["ünïcode"],
    ["ok_tag", 7],  # non-string item
    ["ok_tag", "bad tag"],
]
GOOD_TAGS: list[list[str]] = [
    [],
    ["abc"],
    ["a-b"],
    ["a_b"],
    ["A1-b_2"],
    ["a" * 255],
    ["x--y"],
    ["___"],
]


class TestPriority:
    @pytest.mark.parametrize("value", PRIORITY_CASES, ids=repr)
    def test_validator_rejects(self, value: Any) -> None:
        with pytest.raises(InvalidJobError) as info:
            validate_priority(value)
        _assert_names_field(info.value, "priority")

    @pytest.mark.parametrize("value", [0, 5, True, "1"], ids=repr)
    def test_insert_rejects(self, value: Any) -> None:
        with pytest.raises(InvalidJobError) as info:
            prepare(GOOD_ARGS, InsertOpts(priority=value))
        _assert_names_field(info.value, "priority")
        assert repr(value) in str(info.value)

    @pytest.mark.parametrize("value", [1, 2, 3, 4])
    def test_accepts_one_to_four(self, value: int) -> None:
        assert validate_priority(value) == value
        assert prepare(GOOD_ARGS, InsertOpts(priority=value)).priority == value


class TestMaxAttempts:
    @pytest.mark.parametrize("value", MAX_ATTEMPTS_CASES, ids=repr)
    def test_validator_rejects(self, value: Any) -> None:
        with pytest.raises(InvalidJobError) as info:
            validate_max_attempts(value)
        _assert_names_field(info.value, "max_attempts")

    @pytest.mark.parametrize("value", [0, -1, 40000], ids=repr)
    def test_insert_rejects(self, value: int) -> None:
        with pytest.raises(InvalidJobError) as info:
            prepare(GOOD_ARGS, InsertOpts(max_attempts=value))
        _assert_names_field(info.value, "max_attempts")
        assert str(value) in str(info.value)

    @pytest.mark.parametrize("value", [1, 25, 32767])
    def test_accepts_smallint_range(self, value: int) -> None:
        assert validate_max_attempts(value) == value
        assert prepare(GOOD_ARGS, InsertOpts(max_attempts=value)).max_attempts == value


class TestTags:
    @pytest.mark.parametrize("value", BAD_TAGS, ids=repr)
    def test_validator_rejects(self, value: Any) -> None:
        with pytest.raises(InvalidJobError) as info:
            validate_tags(value)
        _assert_names_field(info.value, "tags")

    @pytest.mark.parametrize("value", [["a,b"], ["-abc"], ["a" * 256], "abc"], ids=repr)
    def test_insert_rejects(self, value: Any) -> None:
        with pytest.raises(InvalidJobError) as info:
            prepare(GOOD_ARGS, InsertOpts(tags=value))
        _assert_names_field(info.value, "tags")

    @pytest.mark.parametrize("value", GOOD_TAGS, ids=repr)
    def test_accepts_river_tags(self, value: list[str]) -> None:
        assert validate_tags(value) == value
        assert list(prepare(GOOD_ARGS, InsertOpts(tags=value)).tags) == value

    def test_accepts_a_tuple(self) -> None:
        assert validate_tags(("abc", "def")) == ["abc", "def"]

    def test_long_tag_message_is_bounded(self) -> None:
        with pytest.raises(InvalidJobError) as info:
            validate_tags(["a" * 10_000])
        assert len(str(info.value)) < 200
        assert "10000" in str(info.value)


class TestScheduledAt:
    def test_naive_datetime_is_rejected(self) -> None:
        naive = datetime(2030, 1, 1, 12, 0)
        with pytest.raises(InvalidJobError, match="timezone-aware") as info:
            validate_scheduled_at(naive)
        _assert_names_field(info.value, "scheduled_at")
        with pytest.raises(InvalidJobError) as info:
            prepare(GOOD_ARGS, InsertOpts(scheduled_at=naive))
        _assert_names_field(info.value, "scheduled_at")

    @pytest.mark.parametrize("value", ["2030-01-01T00:00:00Z", 1700000000, 1.5], ids=repr)
    def test_non_datetime_is_rejected(self, value: Any) -> None:
        with pytest.raises(InvalidJobError) as info:
            prepare(GOOD_ARGS, InsertOpts(scheduled_at=value))
        _assert_names_field(info.value, "scheduled_at")

    def test_aware_datetime_is_accepted_in_any_zone(self) -> None:
        when = datetime(2030, 1, 1, 12, 0, tzinfo=timezone(timedelta(hours=-7)))
        assert validate_scheduled_at(when) is when
        assert prepare(GOOD_ARGS, InsertOpts(scheduled_at=when)).scheduled_at == when


class TestQueueAndKind:
    @pytest.mark.parametrize("value", ["", "q" * 128, "q" * 1000, None, 5, "q\x00"], ids=repr)
    def test_queue_rejected(self, value: Any) -> None:
        with pytest.raises(InvalidJobError) as info:
            validate_queue(value)
        _assert_names_field(info.value, "queue")

    @pytest.mark.parametrize("value", ["", "q" * 128], ids=["empty", "128-chars"])
    def test_insert_rejects_queue(self, value: str) -> None:
        with pytest.raises(InvalidJobError) as info:
            prepare(GOOD_ARGS, InsertOpts(queue=value))
        _assert_names_field(info.value, "queue")

    @pytest.mark.parametrize("value", ["", "k" * 128, None, 5, "k\x00"], ids=repr)
    def test_kind_rejected(self, value: Any) -> None:
        with pytest.raises(InvalidJobError) as info:
            validate_kind(value)
        _assert_names_field(info.value, "kind")

    @pytest.mark.parametrize("value", ["", "k" * 128], ids=["empty", "128-chars"])
    def test_insert_rejects_kind(self, value: str) -> None:
        with pytest.raises(InvalidJobError) as info:
            prepare((value, {}))
        _assert_names_field(info.value, "kind")

    @pytest.mark.parametrize("value", ["q", "q" * 127, "with space/and.dots"], ids=len)
    def test_names_up_to_127_characters_are_accepted(self, value: str) -> None:
        assert validate_queue(value) == value
        assert validate_kind(value) == value
        prepared = prepare((value, {}), InsertOpts(queue=value))
        assert (prepared.kind, prepared.queue) == (value, value)


class TestLoneSurrogates:
    """A lone surrogate (what ``os.fsdecode`` makes of undecodable bytes) cannot be encoded as
    UTF-8: the driver used to fail mid-insert with a bare ``UnicodeEncodeError``."""

    @pytest.mark.parametrize("validate", [validate_queue, validate_kind], ids=["queue", "kind"])
    def test_a_name_holding_a_lone_surrogate_is_rejected_with_its_position(
        self, validate: Any
    ) -> None:
        with pytest.raises(InvalidJobError, match=r"lone surrogate '\\udce9' at position 3"):
            validate("caf\udce9")

    def test_insert_rejects_a_queue_holding_a_lone_surrogate(self) -> None:
        with pytest.raises(InvalidJobError) as info:
            prepare(GOOD_ARGS, InsertOpts(queue="caf\udce9"))
        _assert_names_field(info.value, "queue")
        assert "lone surrogate" in str(info.value)

    def test_insert_rejects_a_kind_holding_a_lone_surrogate(self) -> None:
        with pytest.raises(InvalidJobError) as info:
            prepare(("caf\udce9", {}))
        _assert_names_field(info.value, "kind")

    def test_a_tag_holding_a_lone_surrogate_is_rejected(self) -> None:
        with pytest.raises(InvalidJobError) as info:
            prepare(GOOD_ARGS, InsertOpts(tags=["caf\udce9"]))
        _assert_names_field(info.value, "tags")

    def test_metadata_holding_a_lone_surrogate_names_its_path(self) -> None:
        with pytest.raises(InvalidJobError) as info:
            prepare(GOOD_ARGS, InsertOpts(metadata={"file": ["ok", "caf\udce9.txt"]}))
        _assert_names_field(info.value, "metadata.file[1]")
        assert "lone surrogate '\\udce9' at position 3" in str(info.value)

    def test_metadata_nested_too_deeply_is_rejected(self) -> None:
        with pytest.raises(InvalidJobError) as info:
            prepare(GOOD_ARGS, InsertOpts(metadata={"m": nested(100_000)}))
        _assert_names_field(info.value, "metadata")
        assert "nested too deeply" in str(info.value)

    def test_names_with_other_non_ascii_characters_are_accepted(self) -> None:
        assert validate_queue("café") == "café"
        assert validate_kind("emoji_\U0001f600") == "emoji_\U0001f600"


def nested(depth: int) -> dict[str, Any]:
    """``{"a": {"a": ...}}`` ``depth`` levels deep."""
    root: dict[str, Any] = {}
    node = root
    for _ in range(depth):
        node["a"] = {}
        node = node["a"]
    return root


class TestMetadataAndUnique:
    def test_metadata_must_be_a_mapping(self) -> None:
        with pytest.raises(InvalidJobError) as info:
            prepare(GOOD_ARGS, InsertOpts(metadata=["a"]))  # type: ignore[arg-type]
        _assert_names_field(info.value, "metadata")

    def test_metadata_is_encoded_compactly(self) -> None:
        prepared = prepare(GOOD_ARGS, InsertOpts(metadata={"a": "<", "b": [1]}))
        assert prepared.metadata == '{"a":"\\u003c","b":[1]}'

    def test_bad_unique_options_are_rejected_at_insert(self) -> None:
        with pytest.raises(InvalidJobError) as info:
            prepare(GOOD_ARGS, InsertOpts(unique=UniqueOpts(by_state=["available"])))
        _assert_names_field(info.value, "unique.by_state")
        with pytest.raises(InvalidJobError) as info:
            prepare(GOOD_ARGS, InsertOpts(unique=UniqueOpts(by_period=timedelta(milliseconds=10))))
        _assert_names_field(info.value, "unique.by_period")


class TestBatchErrors:
    def test_bad_item_is_named_by_index(self) -> None:
        items: list[Any] = [
            GOOD_ARGS,
            InsertManyParams(GOOD_ARGS, InsertOpts(queue="ok")),
            InsertManyParams(GOOD_ARGS, InsertOpts(priority=5)),
        ]
        with pytest.raises(InvalidJobError) as info:
            _prepare_many(items)
        _assert_names_field(info.value, "items[2].priority")

    def test_unserialisable_item_keeps_its_error_type_and_path(self) -> None:
        from sa_river import UnserializableArgsError

        with pytest.raises(UnserializableArgsError) as info:
            _prepare_many([GOOD_ARGS, ("k", {"a": [object()]})])
        _assert_names_field(info.value, "items[1].args.a[0]")

    @pytest.mark.parametrize("items", ["abc", None, GOOD_ARGS[1]], ids=repr)
    def test_items_must_be_a_list(self, items: Any) -> None:
        with pytest.raises(InvalidJobError) as info:
            _prepare_many(items)
        _assert_names_field(info.value, "items")


def test_insert_opts_repr_shows_only_set_fields() -> None:
    assert repr(InsertOpts()) == "InsertOpts()"
    assert repr(InsertOpts(queue="mail", priority=2)) == "InsertOpts(queue='mail', priority=2)"


def test_options_are_immutable() -> None:
    opts = InsertOpts(queue="q")
    with pytest.raises(AttributeError):
        opts.queue = "other"  # type: ignore[misc]
    unique = UniqueOpts()
    with pytest.raises(AttributeError):
        unique.by_queue = True  # type: ignore[misc]


def test_aware_scheduled_at_in_the_past_is_accepted() -> None:
    when = datetime.now(UTC) - timedelta(days=1)
    assert prepare(GOOD_ARGS, InsertOpts(scheduled_at=when)).scheduled_at == when
