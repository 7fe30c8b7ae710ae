"""The checkpoint serializer: lossless round trips, strict errors, framing, zstd, AES-GCM."""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import enum
import functools
import math
import os
import socket
import struct
import sys
import threading
import uuid
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import msgpack
import pydantic
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from threadline.checkpoint import serde
from threadline.checkpoint.serde import (
    MsgpackSerializer,
    Serializer,
    TypeRegistry,
    register_type,
)
from threadline.errors import CorruptCheckpointError, SerializationError

KEY = os.urandom(32)


# --------------------------------------------------------------------------- module-level types


class Color(enum.Enum):
    RED = "red"
    GREEN = (0, 255, 0)


class Level(enum.IntEnum):
    LOW = 1
    HIGH = 2


class Perm(enum.Flag):
    R = 1
    W = 2
    X = 4


class Bits(enum.IntFlag):
    A = 1
    B = 2


if sys.version_info >= (3, 11):

    class StrColor(enum.StrEnum):
        BLUE = "blue"


@dataclasses.dataclass
class Inner:
    name: str
    tags: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class Frozen:
    x: int
    when: dt.datetime | None = None


@dataclasses.dataclass
class Outer:
    inner: Inner
    items: list[Inner] = dataclasses.field(default_factory=list)
    lookup: dict[int, Frozen] = dataclasses.field(default_factory=dict)
    computed: int = dataclasses.field(init=False, default=0)

    def __post_init__(self) -> None:
        self.computed = len(self.items)


@dataclasses.dataclass(slots=True)
class Slotted:
    a: int
    b: set[int]


class Address(pydantic.BaseModel):
    city: str
    zip: str = "00000"


class Person(pydantic.BaseModel):
    name: str
    age: int = 0
    tags: list[str] = pydantic.Field(default_factory=list)
    address: Address | None = None
    inner: Inner | None = None
    joined: dt.date | None = None


class Loose(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="allow")
    a: int = 1


class Money:
    """A plain class: storable only once registered with encode/decode."""

    def __init__(self, amount: Decimal, currency: str) -> None:
        self.amount = amount
        self.currency = currency

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Money) and (self.amount, self.currency) == (
            other.amount,
            other.currency,
        )

    __hash__ = None  # type: ignore[assignment]


register_type(
    Money,
    name="tests.Money",
    encode=lambda m: [m.amount, m.currency],
    decode=lambda data: Money(data[0], data[1]),
)


# Dataclasses, Enums and models must be registered (a graph registers its schema's types).
for _cls in (Color, Level, Perm, Bits, Inner, Frozen, Outer, Slotted, Address, Person, Loose):
    register_type(_cls)
if sys.version_info >= (3, 11):
    register_type(StrColor)


class Unregistered:
    pass


TRAP_CALLS: list[Any] = []


def trap(*args: Any, **kwargs: Any) -> None:
    """A callable a malicious frame could name; the serializer must never call it."""
    TRAP_CALLS.append((args, kwargs))


# --------------------------------------------------------------------------- helpers


def assert_identical(a: Any, b: Any, path: str = "value") -> None:
    """Equal in value AND in type, all the way down (dict key order included)."""
    assert type(a) is type(b), f"{path}: {type(a).__name__} != {type(b).__name__}"
    if type(a) is float:
        assert struct.pack("<d", a) == struct.pack("<d", b) or (math.isnan(a) and math.isnan(b))
    elif type(a) in (list, tuple):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_identical(x, y, f"{path}[{i}]")
    elif type(a) is dict:
        assert len(a) == len(b), path
        for (ka, va), (kb, vb) in zip(a.items(), b.items(), strict=True):
            assert_identical(ka, kb, f"{path}<key {ka!r}>")
            assert_identical(va, vb, f"{path}[{ka!r}]")
    elif type(a) in (set, frozenset):
        assert a == b, path
        for item in a:  # same types inside: find each item's twin
            twin = next(x for x in b if x == item)
            assert_identical(item, twin, f"{path}<item>")
    elif dataclasses.is_dataclass(a):
        for f in dataclasses.fields(a):
            assert_identical(getattr(a, f.name), getattr(b, f.name), f"{path}.{f.name}")
    elif isinstance(a, pydantic.BaseModel):
        assert a.model_fields_set == b.model_fields_set, path
        assert a.__pydantic_extra__ == b.__pydantic_extra__, path
        for k in type(a).model_fields:
            assert_identical(getattr(a, k), getattr(b, k), f"{path}.{k}")
    elif type(a) in (dt.datetime, dt.time):
        assert a == b, path
        assert (a.fold, a.utcoffset(), a.tzname()) == (b.fold, b.utcoffset(), b.tzname()), path
        assert a.tzinfo == b.tzinfo, path
        if isinstance(a.tzinfo, ZoneInfo):
            assert isinstance(b.tzinfo, ZoneInfo) and a.tzinfo.key == b.tzinfo.key
    elif type(a) is Decimal:
        assert str(a) == str(b), path
    else:
        assert a == b, path


def round_trip(value: Any, s: Serializer | None = None) -> Any:
    s = s if s is not None else MsgpackSerializer()
    out = s.loads(s.dumps(value))
    assert_identical(value, out)
    return out


def frame(body: Any) -> bytes:
    """A plain frame around a raw msgpack body, for feeding crafted data to loads."""
    return bytes((serde.FORMAT_VERSION,)) + msgpack.packb(body, use_bin_type=True)


def ext(code: int, payload: Any) -> msgpack.ExtType:
    return msgpack.ExtType(code, msgpack.packb(payload, use_bin_type=True))


# --------------------------------------------------------------------------- round trips

SCALARS = [
    None,
    True,
    False,
    0,
    -1,
    2**63 - 1,
    2**63,
    2**64 - 1,
    2**64,
    -(2**63),
    -(2**63) - 1,
    10**100,
    -(10**100),
    0.0,
    -0.0,
    1.5,
    float("inf"),
    float("-inf"),
    float("nan"),
    "",
    "héllo ✓",
    b"",
    b"\x00\xff",
]

RICH = [
    (1, "a", (2.5, None)),
    (),
    [(), [()]],
    {1, 2, 3},
    set(),
    frozenset({"a", (1, 2)}),
    {1: "int key", (1, "t"): "tuple key", frozenset({1}): "fs key", b"k": "bytes key"},
    {"z": 1, "a": 2, "m": 3},
    dt.datetime(2024, 2, 29, 23, 59, 59, 999999),
    dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc),
    dt.datetime(2024, 1, 1, 12, tzinfo=dt.timezone(dt.timedelta(hours=5, minutes=30))),
    dt.datetime(2024, 1, 1, tzinfo=dt.timezone(dt.timedelta(hours=-3, microseconds=1), "XYZ")),
    dt.datetime(2024, 11, 3, 1, 30, tzinfo=ZoneInfo("America/New_York"), fold=1),
    dt.datetime(2024, 7, 1, 9, tzinfo=ZoneInfo("Europe/Paris")),
    dt.datetime(1, 1, 1),
    dt.datetime(9999, 12, 31, 23, 59, 59, 999999, fold=1),
    dt.date(2024, 2, 29),
    dt.time(),
    dt.time(23, 59, 59, 999999, tzinfo=dt.timezone.utc),
    dt.time(1, 2, 3, fold=1),
    dt.timedelta(),
    dt.timedelta(days=-3, seconds=5, microseconds=7),
    dt.timedelta.max,
    dt.timedelta.min,
    uuid.uuid4(),
    uuid.UUID(int=0),
    Decimal("1.10"),
    Decimal("-0"),
    Decimal("1E+3"),
    Decimal("NaN"),
    Decimal("-Infinity"),
    Color.RED,
    Color.GREEN,
    Level.HIGH,
    Perm.R | Perm.X,
    Perm(0),
    Bits.A | Bits.B,
    Inner("a", ("x", "y")),
    Frozen(1, dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc)),
    Outer(Inner("i"), [Inner("j")], {1: Frozen(2)}),
    Slotted(1, {2, 3}),
    Money(Decimal("9.99"), "EUR"),
    Person(name="ada"),
    Person(name="ada", age=36, address=Address(city="London"), inner=Inner("x", ("t",))),
    Loose(a=2, extra_field=(1, 2)),
]


@pytest.mark.parametrize("value", SCALARS + RICH, ids=lambda v: type(v).__name__)
def test_round_trip_keeps_type_and_value(value: Any) -> None:
    round_trip(value)


@pytest.mark.parametrize("value", SCALARS + RICH, ids=lambda v: type(v).__name__)
def test_round_trip_nested_anywhere(value: Any) -> None:
    round_trip({"state": [value, (value,), {"k": value}], 7: value})


@pytest.mark.skipif(sys.version_info < (3, 11), reason="StrEnum is new in Python 3.11")
def test_str_enum() -> None:
    out = round_trip(StrColor.BLUE)
    assert out is StrColor.BLUE


def test_enum_members_come_back_as_the_same_object() -> None:
    assert round_trip(Color.GREEN) is Color.GREEN
    assert round_trip(Level.LOW) is Level.LOW


JSON_LIKE = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | st.text()
    | st.binary(max_size=20),
    lambda children: (
        st.lists(children, max_size=5)
        | st.lists(children, max_size=3).map(tuple)
        | st.dictionaries(st.text(max_size=8) | st.integers(), children, max_size=5)
    ),
    max_leaves=30,
)


@settings(max_examples=200, deadline=None)
@given(JSON_LIKE)
def test_round_trip_json_like(value: Any) -> None:
    round_trip(value)


def test_tuple_and_list_stay_distinct() -> None:
    value = [(1, [2, (3,)]), [(4,)], ((), [])]
    out = round_trip(value)
    assert type(out[0]) is tuple and type(out[0][1]) is list and type(out[0][1][1]) is tuple
    assert out == value


def test_dict_key_order_and_key_types() -> None:
    value = {3: "c", "1": "a", 1: "b", (2, "x"): "t", None: "n", 2.5: "f"}
    out = round_trip(value)
    assert list(out) == list(value)
    assert 1 in out and "1" in out and (2, "x") in out


def test_pydantic_defaults_and_fields_set_survive() -> None:
    person = Person(name="ada", tags=[])
    out = round_trip(person)
    assert out == person
    assert out.model_fields_set == {"name", "tags"}
    assert out.age == 0 and out.address is None
    assert out.model_dump() == person.model_dump()
    # a model built with no explicit fields at all
    assert round_trip(Address(city="x")).model_fields_set == {"city"}


def test_pydantic_model_is_not_revalidated() -> None:
    # model_construct skips validation: what was stored is what comes back.
    odd = Person.model_construct(name="x", age="not an int")  # type: ignore[arg-type]
    out = MsgpackSerializer().loads(MsgpackSerializer().dumps(odd))
    assert out.age == "not an int"


def test_pydantic_extra_fields_round_trip() -> None:
    out = round_trip(Loose(a=5, note="hi", when=dt.date(2024, 1, 1)))
    assert out.__pydantic_extra__ == {"note": "hi", "when": dt.date(2024, 1, 1)}


def test_nested_dataclass_keeps_all_fields_without_rerunning_init() -> None:
    value = Outer(Inner("i", ("a",)), [Inner("j"), Inner("k")], {7: Frozen(1)})
    value.computed = 99  # changed after __post_init__: must come back as stored
    out = round_trip(value)
    assert out.computed == 99
    assert type(out.lookup[7]) is Frozen


@dataclasses.dataclass
class Lazy:
    a: int
    b: int = dataclasses.field(init=False)  # no default, and never set


register_type(Lazy)


def test_dataclass_field_never_set_stays_unset() -> None:
    s = MsgpackSerializer()
    out = s.loads(s.dumps(Lazy(1)))
    assert out.a == 1 and not hasattr(out, "b")
    value = Lazy(2)
    value.b = 3
    value.extra = "not a field"  # type: ignore[attr-defined]
    out = s.loads(s.dumps(value))
    assert (out.a, out.b) == (2, 3) and not hasattr(out, "extra")


def test_frozen_dataclass_round_trips() -> None:
    out = round_trip(Frozen(3))
    with pytest.raises(dataclasses.FrozenInstanceError):
        out.x = 4  # type: ignore[misc]


def test_small_frame_overhead_is_one_byte() -> None:
    s = MsgpackSerializer()
    for value in (None, 1, "x", [1, 2], {"a": 1}):
        data = s.dumps(value)
        assert data == bytes((serde.FORMAT_VERSION,)) + msgpack.packb(value, use_bin_type=True)


def test_bytearray_comes_back_as_bytes() -> None:
    # msgpack's C packer packs bytearray natively as bin, with no hook: documented limitation.
    s = MsgpackSerializer()
    assert s.loads(s.dumps(bytearray(b"ab"))) == b"ab"


def test_serializer_protocol() -> None:
    assert isinstance(MsgpackSerializer(), Serializer)


def test_encode_function_may_call_dumps_reentrantly() -> None:
    reg = TypeRegistry()

    class Box:
        def __init__(self, payload: Any) -> None:
            self.payload = payload

    # the encode function calls dumps on the very serializer that is calling it
    reg.register(Box, name="t.Box", encode=lambda b: s.dumps(b.payload), decode=lambda d: Box(d))
    reg.register(Inner)
    s = MsgpackSerializer(registry=reg)
    payload = {"deep": [(1, 2), Inner("x"), Box(("inner", "box"))]}
    out = s.loads(s.dumps([Box(payload), (Box([1]),)]))
    inner = s.loads(out[0].payload)
    assert inner["deep"][:2] == [(1, 2), Inner("x")]
    assert s.loads(inner["deep"][2].payload) == ("inner", "box")
    assert s.loads(out[1][0].payload) == [1]


def test_thread_safety() -> None:
    s = MsgpackSerializer(compression="zstd", encryption_key=KEY)
    values = [{"i": i, "t": (i, Inner(str(i))), "big": "x" * (i * 50)} for i in range(60)]
    failures: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(20):
                for v in values:
                    assert_identical(v, s.loads(s.dumps(v)))
        except BaseException as exc:  # pragma: no cover - reported below
            failures.append(exc)

    threads = [threading.Thread(target=work) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failures


# --------------------------------------------------------------------------- registration


def test_registered_custom_type_round_trips() -> None:
    out = round_trip({"price": Money(Decimal("1.50"), "USD"), "prices": (Money(Decimal(2), "X"),)})
    assert isinstance(out["price"], Money)


def test_local_dataclass_requires_registration() -> None:
    @dataclasses.dataclass
    class Point:
        x: int
        y: int

    with pytest.raises(SerializationError) as info:
        MsgpackSerializer().dumps({"items": [1, Point(1, 2)]}, "state")
    message = str(info.value)
    assert "state['items'][1]" in message
    assert "test_local_dataclass_requires_registration.<locals>.Point" in message
    assert "is not registered" in message
    assert "threadline.checkpoint.serde.register_type(" in message

    reg = TypeRegistry()
    reg.register(Point, name="tests.Point")
    s = MsgpackSerializer(registry=reg)
    out = s.loads(s.dumps({"items": [Point(1, 2)]}))
    assert out == {"items": [Point(1, 2)]} and type(out["items"][0]) is Point


def test_local_enum_and_model_can_be_registered_without_codecs() -> None:
    class Mood(enum.Enum):
        HAPPY = 1

    class Note(pydantic.BaseModel):
        text: str
        mood: Mood = Mood.HAPPY

    reg = TypeRegistry()
    reg.register(Mood)
    reg.register(Note)
    s = MsgpackSerializer(registry=reg)
    out = s.loads(s.dumps(Note(text="x")))
    assert out == Note(text="x") and out.model_fields_set == {"text"} and out.mood is Mood.HAPPY
    # without registration, a local class is refused, and the path leads to it
    with pytest.raises(SerializationError, match=r"cannot serialize value: .*<locals>\.Note"):
        MsgpackSerializer().dumps(Note(text="x"))
    only_note = TypeRegistry()
    only_note.register(Note)
    with pytest.raises(SerializationError, match=r"value\.mood: .*<locals>\.Mood"):
        MsgpackSerializer(registry=only_note).dumps(Note(text="x"))


def test_register_rejects_misuse() -> None:
    reg = TypeRegistry()
    with pytest.raises(SerializationError, match="needs encode= and decode="):
        reg.register(Unregistered)
    with pytest.raises(SerializationError, match="both encode= and decode="):
        reg.register(Unregistered, encode=lambda v: None)
    with pytest.raises(SerializationError, match="supported already"):
        reg.register(dt.datetime, encode=str, decode=str)
    reg.register(Unregistered, name="n", encode=lambda v: None, decode=lambda d: Unregistered())
    with pytest.raises(SerializationError, match="registered already"):
        reg.register(Money, name="n", encode=lambda v: None, decode=lambda d: None)


def test_renamed_registration_still_reads_old_name() -> None:
    reg = TypeRegistry()
    reg.register(Unregistered, name="old", encode=lambda v: 1, decode=lambda d: Unregistered())
    s = MsgpackSerializer(registry=reg)
    old = s.dumps(Unregistered())
    reg.register(Unregistered, name="new", encode=lambda v: 1, decode=lambda d: Unregistered())
    assert isinstance(s.loads(old), Unregistered)
    assert b"new" in s.dumps(Unregistered())


def test_subclass_of_registered_type_is_not_silently_accepted() -> None:
    class SubMoney(Money):
        pass

    with pytest.raises(SerializationError, match="SubMoney"):
        MsgpackSerializer().dumps(SubMoney(Decimal(1), "X"))


# --------------------------------------------------------------------------- dumps errors


def test_unregistered_type_error_names_path_type_and_fix() -> None:
    value = [{"x": 1}, {"x": Unregistered()}]
    with pytest.raises(SerializationError) as info:
        MsgpackSerializer().dumps(value, "messages")
    message = str(info.value)
    assert "messages[1]['x']" in message
    assert f"{Unregistered.__module__}.Unregistered" in message
    assert "threadline.checkpoint.serde.register_type(" in message
    assert isinstance(info.value, TypeError)  # SerializationError is a TypeError too


@pytest.mark.parametrize(
    ("value", "path", "type_name"),
    [
        ({"f": lambda: 1}, "value['f']", "function"),
        ([(x for x in ())], "value[0]", "generator"),
        ((1, {2: object()}), "value[1][2]", "object"),
        ({"s": {Unregistered()}}, "value['s']<item #0>", "Unregistered"),
        ({Unregistered(): 1}, "value<key #0>", "Unregistered"),
        (Inner("x", (Unregistered(),)), "value.tags[0]", "Unregistered"),
        (Person.model_construct(name=Unregistered()), "value.name", "Unregistered"),
    ],
)
def test_unsupported_values_fail_with_their_path(value: Any, path: str, type_name: str) -> None:
    with pytest.raises(SerializationError) as info:
        MsgpackSerializer().dumps(value)
    assert f"cannot serialize {path}:" in str(info.value)
    assert type_name in str(info.value)


def test_socket_is_refused() -> None:
    with socket.socket() as sock, pytest.raises(SerializationError, match=r"socket\.socket"):
        MsgpackSerializer().dumps({"conn": sock}, "resources")


def test_unsupported_tzinfo_is_refused() -> None:
    class Odd(dt.tzinfo):
        def utcoffset(self, d: dt.datetime | None) -> dt.timedelta:
            return dt.timedelta(0)

    with pytest.raises(SerializationError, match=r"value\['t'\]: tzinfo of type .*Odd"):
        MsgpackSerializer().dumps({"t": dt.datetime(2024, 1, 1, tzinfo=Odd())})


def test_failing_encode_function_is_reported_with_path() -> None:
    reg = TypeRegistry()

    def boom(v: Any) -> Any:
        raise RuntimeError("nope")

    reg.register(Unregistered, name="u", encode=boom, decode=lambda d: None)
    with pytest.raises(SerializationError, match=r"value\[0\].*'u' raised RuntimeError: nope"):
        MsgpackSerializer(registry=reg).dumps([Unregistered()])


def test_encoded_data_of_registered_type_is_checked_too() -> None:
    reg = TypeRegistry()
    reg.register(Unregistered, name="u", encode=lambda v: {"a": object()}, decode=lambda d: d)
    with pytest.raises(SerializationError, match=r"value<encoded as 'u'>\['a'\]"):
        MsgpackSerializer(registry=reg).dumps(Unregistered())


def test_reference_cycle_is_refused() -> None:
    loop: list[Any] = [1]
    loop.append({"back": loop})
    with pytest.raises(SerializationError, match=r"value\[1\]\['back'\].*cycle"):
        MsgpackSerializer().dumps(loop)


def test_lone_surrogate_is_refused_with_path() -> None:
    with pytest.raises(SerializationError, match=r"value\['s'\]: .*surrogates"):
        MsgpackSerializer().dumps({"s": "\ud800"})


def test_serializer_still_works_after_an_error() -> None:
    s = MsgpackSerializer()
    with pytest.raises(SerializationError):
        s.dumps([(1, Unregistered())])
    round_trip([(1, 2), {"a": Inner("x")}], s)


# --------------------------------------------------------------------------- loads errors


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"garbage!",
        b"\x00",
        b"\x02\x01",  # unknown format version
        b"\x41\x01",  # reserved flag bit
        b"\x01",  # no body
        b"\x01\xc1",  # msgpack "never used" byte
        b"\x01\x92\x01",  # truncated array
        b"\x01\x01\x02",  # trailing bytes
        frame(msgpack.ExtType(99, b"")),  # unknown extension code
        frame(ext(1, "not a list")),  # malformed tuple
        frame(msgpack.ExtType(10, b"short")),  # malformed UUID
        frame(msgpack.ExtType(11, b"not-a-number")),  # malformed Decimal
        frame(msgpack.ExtType(6, b"\x07")),  # malformed datetime
        frame({"k": [1, 2, {"x": msgpack.ExtType(9, b"")}]}),  # malformed, nested
        b"\x31" + bytes(range(7, 47)),  # "compressed" garbage
    ],
)
def test_garbage_raises_corrupt(data: bytes) -> None:
    with pytest.raises(CorruptCheckpointError):
        MsgpackSerializer().loads(data)


def test_unknown_version_message() -> None:
    with pytest.raises(CorruptCheckpointError, match="version 2"):
        MsgpackSerializer().loads(b"\x02\x01")


@pytest.mark.parametrize(
    ("code", "ref", "message"),
    [
        (serde._EXT_DATACLASS, "builtins:dict", "not registered"),
        (serde._EXT_ENUM, "os:getcwd", "not registered"),
        (serde._EXT_DATACLASS, f"{__name__}:trap", "not registered"),
        (serde._EXT_MODEL, f"{__name__}:Inner", "not one"),
        (serde._EXT_ENUM, f"{__name__}:Inner", "not one"),
        (serde._EXT_DATACLASS, "no_such_module_xyz:Thing", "not registered"),
        (serde._EXT_DATACLASS, f"{__name__}:Gone", "not registered"),
        (serde._EXT_DATACLASS, f"{__name__}:f.<locals>.X", "not registered"),
        (serde._EXT_DATACLASS, "no-colon", "not registered"),
        (serde._EXT_DATACLASS, "this:X", "not registered"),
        (serde._EXT_DATACLASS, "unittest.__main__:X", "not registered"),
    ],
)
def test_class_references_are_checked_before_use(code: int, ref: str, message: str) -> None:
    with pytest.raises(CorruptCheckpointError, match=message):
        MsgpackSerializer().loads(frame(ext(code, [ref, {}])))
    assert not TRAP_CALLS


def test_unknown_enum_member_and_registered_name() -> None:
    with pytest.raises(CorruptCheckpointError, match="BLUE"):
        MsgpackSerializer().loads(frame(ext(serde._EXT_ENUM, [f"{__name__}:Color", "BLUE"])))
    with pytest.raises(CorruptCheckpointError, match=r"'nobody\.Knows'.*register_type"):
        MsgpackSerializer().loads(frame(ext(serde._EXT_REGISTERED, ["nobody.Knows", 1])))


def test_registered_type_unknown_to_the_reader() -> None:
    reg = TypeRegistry()
    reg.register(Unregistered, name="only.here", encode=lambda v: 0, decode=lambda d: None)
    data = MsgpackSerializer(registry=reg).dumps(Unregistered())
    with pytest.raises(CorruptCheckpointError, match=r"only\.here"):
        MsgpackSerializer().loads(data)


def test_failing_decode_function_raises_corrupt() -> None:
    reg = TypeRegistry()

    def bad(d: Any) -> Any:
        raise ValueError("bad data")

    reg.register(Unregistered, name="u", encode=lambda v: 0, decode=bad)
    s = MsgpackSerializer(registry=reg)
    with pytest.raises(CorruptCheckpointError, match="bad data"):
        s.loads(s.dumps(Unregistered()))


def test_dataclass_fields_added_later_take_defaults() -> None:
    # An Outer as an older version of the class wrote it: fewer fields, one since removed.
    old = frame(ext(serde._EXT_DATACLASS, [f"{__name__}:Outer", {"inner": None, "dropped": 1}]))
    out = MsgpackSerializer().loads(old)
    assert out.inner is None and out.items == [] and out.lookup == {} and out.computed == 0
    assert not hasattr(out, "dropped")


# --------------------------------------------------------------------------- compression


@pytest.mark.parametrize(("compression", "flag"), [("zlib", 0x40), ("zstd", 0x10)])
def test_compression_round_trip_and_size(compression: Any, flag: int) -> None:
    big = {"messages": [{"role": "user", "content": "hello world " * 50} for _ in range(100)]}
    plain = MsgpackSerializer(compression=None).dumps(big)
    assert plain[0] == serde.FORMAT_VERSION
    packed = MsgpackSerializer(compression=compression).dumps(big)
    assert len(packed) < len(plain) / 10
    assert packed[0] == serde.FORMAT_VERSION | flag
    # any reader reads any of them, whatever its own compression setting
    for reader in (None, "zlib", "zstd"):
        assert_identical(MsgpackSerializer(compression=reader).loads(packed), big)
        assert_identical(MsgpackSerializer(compression=reader).loads(plain), big)


def test_zlib_is_the_default_and_reports_the_size_before_compression() -> None:
    big = ["some text that repeats " * 40]
    data, size = MsgpackSerializer().dumps_sized(big)
    plain = MsgpackSerializer(compression=None).dumps(big)
    assert data[0] & 0x40 and size == len(plain) and len(data) < len(plain) / 5
    assert MsgpackSerializer().dumps(big) == data


def test_corrupt_zlib_body_is_a_clear_error() -> None:
    data = bytearray(MsgpackSerializer().dumps("x" * 5000))
    data[5:9] = b"\xff\xff\xff\xff"
    with pytest.raises(CorruptCheckpointError, match="does not decompress"):
        MsgpackSerializer().loads(bytes(data))


@pytest.mark.parametrize("compression", ["zlib", "zstd"])
def test_small_values_are_not_compressed(compression: Any) -> None:
    small = {"a": "b" * 100}
    plain = MsgpackSerializer(compression=None).dumps(small)
    assert MsgpackSerializer(compression=compression).dumps(small) == plain


@pytest.mark.parametrize("compression", ["zlib", "zstd"])
def test_incompressible_large_values_stay_uncompressed(compression: Any) -> None:
    noise = os.urandom(5000)
    data = MsgpackSerializer(compression=compression).dumps(noise)
    assert data[0] == serde.FORMAT_VERSION
    assert MsgpackSerializer().loads(data) == noise


def test_missing_zstandard_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    compressed = MsgpackSerializer(compression="zstd").dumps("x" * 5000)
    monkeypatch.setitem(sys.modules, "zstandard", None)  # makes `import zstandard` fail
    with pytest.raises(ImportError, match=r"pip install threadline\[zstd\]"):
        MsgpackSerializer(compression="zstd")
    with pytest.raises(CorruptCheckpointError, match=r"pip install threadline\[zstd\]"):
        MsgpackSerializer().loads(compressed)


def test_invalid_compression_option() -> None:
    with pytest.raises(ValueError, match="compression"):
        MsgpackSerializer(compression="gzip")  # type: ignore[arg-type]


# --------------------------------------------------------------------------- encryption


def test_encryption_round_trip() -> None:
    s = MsgpackSerializer(encryption_key=KEY)
    value = {"secret": "the plaintext password", "when": dt.datetime(2024, 1, 1), "t": (1,)}
    data = s.dumps(value)
    assert data[0] & 0x20  # encrypted flag
    assert b"plaintext password" not in data
    assert b"secret" not in data
    assert_identical(s.loads(data), value)
    assert s.dumps(value) != data  # a fresh nonce each time


def test_encryption_with_compression() -> None:
    s = MsgpackSerializer(encryption_key=KEY, compression="zstd")
    value = ["a repeated secret sentence " * 20] * 20
    data = s.dumps(value)
    assert data[0] & 0x30 == 0x30
    assert len(data) < 1000
    assert b"secret" not in data
    assert s.loads(data) == value


def test_wrong_key_or_tampering_fails() -> None:
    data = MsgpackSerializer(encryption_key=KEY).dumps({"a": 1})
    with pytest.raises(CorruptCheckpointError, match="wrong encryption key"):
        MsgpackSerializer(encryption_key=os.urandom(32)).loads(data)
    s = MsgpackSerializer(encryption_key=KEY)
    for i in range(len(data)):
        tampered = bytearray(data)
        tampered[i] ^= 0x01
        with pytest.raises(CorruptCheckpointError):
            s.loads(bytes(tampered))
    with pytest.raises(CorruptCheckpointError, match="truncated"):
        s.loads(data[:20])


def test_plaintext_refused_under_a_key_unless_allowed() -> None:
    plain = MsgpackSerializer().dumps({"a": 1})
    with pytest.raises(CorruptCheckpointError, match=r"not encrypted.*allow_plaintext=True"):
        MsgpackSerializer(encryption_key=KEY).loads(plain)
    migrating = MsgpackSerializer(encryption_key=KEY, allow_plaintext=True)
    assert migrating.loads(plain) == {"a": 1}
    rewritten = migrating.dumps({"a": 1})
    assert rewritten[0] & 0x20  # writes stay encrypted while migrating
    assert MsgpackSerializer(encryption_key=KEY).loads(rewritten) == {"a": 1}


def test_encrypted_refused_without_key() -> None:
    data = MsgpackSerializer(encryption_key=KEY).dumps({"a": 1})
    with pytest.raises(CorruptCheckpointError, match=r"encrypted.*encryption_key"):
        MsgpackSerializer().loads(data)


@pytest.mark.parametrize(
    "key",
    [
        KEY,
        KEY.hex(),
        KEY.hex().upper(),
        base64.b64encode(KEY).decode(),
        base64.urlsafe_b64encode(KEY).decode(),
        base64.urlsafe_b64encode(KEY).decode().rstrip("="),
    ],
    ids=["raw", "hex", "HEX", "base64", "urlsafe", "unpadded"],
)
def test_key_forms_are_equivalent(key: bytes | str) -> None:
    data = MsgpackSerializer(encryption_key=KEY).dumps("x")
    assert MsgpackSerializer(encryption_key=key).loads(data) == "x"


@pytest.mark.parametrize(
    "key",
    # Fixed values: ids must be the same in every xdist worker's collection.
    [bytes(range(16)), "too short", base64.b64encode(bytes(range(16))).decode(), "zz" * 32, ""],
)
def test_invalid_keys_are_refused_without_echoing_them(key: bytes | str) -> None:
    with pytest.raises(ValueError, match="32") as info:
        MsgpackSerializer(encryption_key=key)
    if isinstance(key, str) and key:
        assert key not in str(info.value)


def test_missing_cryptography_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "cryptography.hazmat.primitives.ciphers.aead", None)
    with pytest.raises(ImportError, match=r"pip install threadline\[crypto\]"):
        MsgpackSerializer(encryption_key=KEY)


class WithCache(pydantic.BaseModel):
    x: int

    @functools.cached_property
    def doubled(self) -> int:
        return self.x * 2


register_type(WithCache)


def test_pydantic_cached_property_is_not_stored() -> None:
    value = WithCache(x=2)
    assert value.doubled == 4
    out = round_trip(value)
    assert "doubled" not in out.__dict__ and out.doubled == 4
