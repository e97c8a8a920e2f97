"""The typed codec: the wire format, each type it keeps, register_type, evolution, and encode errors."""

from __future__ import annotations

import datetime as dt
import enum
import json
import logging
import pathlib
import sys
import types
import zoneinfo
from dataclasses import dataclass, field
from decimal import Decimal
from fractions import Fraction
from typing import Any, ClassVar, Literal
from uuid import UUID

import pytest

from dramatiq_eventbus import ConfigurationError, EventBus, EventDecodeError, EventEncodeError, Handler
from dramatiq_eventbus.codecs import CustomTypes, PickleCodec, TypedCodec, make_codec, type_name
from dramatiq_eventbus.codecs.names import qualified_name
from examples.shop.orders.events import OrderCreated, OrderLine

from .model import Perm, Point, Status, Tier, assert_same

UTC = dt.timezone.utc
PARIS = zoneinfo.ZoneInfo("Europe/Paris")
NEW_YORK = zoneinfo.ZoneInfo("America/New_York")
KEY = "typed-tests-secret-key"


def trip(codec: TypedCodec | PickleCodec, event: object) -> Any:
    return codec.decode(json.loads(json.dumps(codec.encode(event), allow_nan=False)))


# -- the wire format ----------------------------------------------------------------------------


def test_the_shop_s_order_created_reads_as_its_type_fields_digits_and_iso_times() -> None:
    event = OrderCreated(
        "A-1",
        "alice",
        Decimal("26.99"),
        dt.datetime(2026, 11, 27, 10, 32, 26, 830947, tzinfo=UTC),
        [OrderLine("book", 2, Decimal("12.50")), OrderLine("pen", 1, Decimal("1.99"))],
    )
    codec = TypedCodec([OrderCreated])
    assert codec.encode(event) == {
        "$type": "examples.shop.orders.events:OrderCreated",
        "order_id": "A-1",
        "customer_id": "alice",
        "total": {"$decimal": "26.99"},
        "placed_at": {"$datetime": "2026-11-27T10:32:26.830947+00:00"},
        "lines": [
            {
                "$type": "examples.shop.orders.events:OrderLine",
                "sku": "book",
                "quantity": 2,
                "unit_price": {"$decimal": "12.50"},
            },
            {
                "$type": "examples.shop.orders.events:OrderLine",
                "sku": "pen",
                "quantity": 1,
                "unit_price": {"$decimal": "1.99"},
            },
        ],
    }
    assert_same(event, trip(codec, event))


@dataclass(frozen=True)
class Anything:
    value: Any


@pytest.mark.parametrize(
    ("value", "wire"),
    [
        (Decimal("-0.00"), {"$decimal": "-0.00"}),
        (Decimal("NaN"), {"$decimal": "NaN"}),
        (float("-inf"), {"$float": "-inf"}),
        (-0.0, -0.0),
        ((1, [2]), {"$tuple": [1, [2]]}),
        ({"$type": 1}, {"$map": [["$type", 1]]}),
        ({1: "a"}, {"$map": [[1, "a"]]}),
        (dt.date(2026, 11, 27), {"$date": "2026-11-27"}),
        (dt.timedelta(days=-1, seconds=5, microseconds=7), {"$timedelta": "-1 day, 0:00:05.000007"}),
        (
            dt.datetime(2026, 10, 25, 2, 30, tzinfo=PARIS, fold=1),
            {"$datetime": "2026-10-25T02:30:00+01:00", "tz": "Europe/Paris", "fold": 1},
        ),
        (UUID(int=1), {"$uuid": "00000000-0000-0000-0000-000000000001"}),
        (b"\x00\xff", {"$bytes": "AP8="}),
        (Fraction(-1, 3), {"$fraction": "-1/3"}),
        (pathlib.PurePosixPath("/srv/x"), {"$pureposixpath": "/srv/x"}),
        (Status.PAID, {"$enum": "tests.codec.model:Status", "name": "PAID"}),
        (Perm.READ | Perm.ADMIN, {"$enum": "tests.codec.model:Perm", "value": 5}),
        (Point(1.5), {"$type": "tests.codec.model:Point", "x": 1.5, "y": 0.0}),
    ],
    ids=repr,
)
def test_each_tag_is_readable(value: Any, wire: Any) -> None:
    codec = TypedCodec([Anything, Stock])  # Stock's annotations reach Status, Perm and Point
    assert codec.encode(Anything(value))["value"] == wire


def test_a_zoned_datetime_is_its_wall_time_in_its_zone_whatever_offset_its_text_gives() -> None:
    codec = TypedCodec([Anything])
    payload = {"$type": type_name(Anything), "value": {"$datetime": "2026-07-01T10:00:00+05:00", "tz": "Europe/Paris"}}
    value = codec.decode(payload).value
    assert type(value) is dt.datetime
    assert (value, value.tzinfo, value.fold) == (dt.datetime(2026, 7, 1, 10, tzinfo=PARIS), PARIS, 0)
    assert value.utcoffset() == dt.timedelta(hours=2)


@pytest.mark.parametrize("nest", [lambda inner: [inner, 2], lambda inner: {"a": inner, "b": 2}], ids=["lists", "dicts"])
def test_values_nested_nearly_as_deeply_as_encoding_allows_still_decode(nest: Any) -> None:
    # What publish() encodes, a worker must decode. Decoding the event around them takes a call
    # or two more than encoding it, so the bound is ten levels short of the deepest that encodes.
    codec = TypedCodec([Anything])
    encoded: list[Any] = []
    value: Any = 1
    for _ in range(5000):
        value = nest(value)
        try:
            encoded.append(codec.encode(Anything(value)))
        except EventEncodeError:
            break
    assert 300 < len(encoded) < 5000
    assert codec.decode(encoded[-10]) is not None


# -- what survives a trip -----------------------------------------------------------------------


@dataclass(frozen=True)
class Stock:
    status: Status
    perms: Perm
    tier: Tier
    at: Point


BIG = 7**5000  # over 4,000 digits: past what int() and str() take in decimal by default

SURVIVORS: dict[str, list[Any]] = {
    "int huge": [BIG, -BIG, 2**4096, -(2**4096) + 1, 2**4096 - 1],
    "bool vs int vs float": [True, 1, 1.0, False, 0, 0.0, None],
    "floats": [float("nan"), float("inf"), float("-inf"), -0.0, 5e-324, 1.7976931348623157e308],
    "decimals": [Decimal(x) for x in ("NaN", "-NaN", "sNaN", "Infinity", "-Infinity", "-0", "1.500", "1E+3", "-1e-30")],
    "complex": [complex(1, -0.0), complex("nan+infj")],
    "naive datetime, fold": [dt.datetime(2026, 11, 1, 1, 30), dt.datetime(2026, 11, 1, 1, 30, fold=1)],
    "utc and fixed offsets": [
        dt.datetime(2026, 1, 1, tzinfo=UTC),
        dt.datetime(2026, 1, 1, tzinfo=dt.timezone(dt.timedelta(hours=5, minutes=30))),
        dt.datetime(2026, 1, 1, tzinfo=dt.timezone(dt.timedelta(hours=-3, seconds=7, microseconds=9))),
        dt.datetime(2026, 1, 1, tzinfo=dt.timezone(dt.timedelta(hours=1), "CET")),
    ],
    "zoneinfo with fold": [
        dt.datetime(2026, 11, 1, 1, 30, tzinfo=NEW_YORK),
        dt.datetime(2026, 11, 1, 1, 30, tzinfo=NEW_YORK, fold=1),
        dt.datetime(2026, 3, 29, 2, 30, tzinfo=PARIS),  # in the spring gap
        dt.datetime(2026, 1, 1, tzinfo=zoneinfo.ZoneInfo("UTC")),
    ],
    "date, time, timedelta": [
        dt.date.min,
        dt.date.max,
        dt.time(23, 59, 59, 999999),
        dt.time(1, 2, tzinfo=UTC, fold=1),
        dt.time(1, 2, tzinfo=PARIS),
        dt.timedelta.min,
        dt.timedelta.max,
        dt.timedelta(0),
    ],
    "uuid, bytes, fraction, paths": [
        UUID("12345678-1234-5678-1234-567812345678"),
        b"",
        bytearray(b"\x00"),
        Fraction(BIG, 3),
        pathlib.Path("/tmp/x"),
        pathlib.PurePosixPath("a/b"),
        pathlib.PureWindowsPath(r"C:\Users\x"),
    ],
    "containers": [
        (),
        (1, (2,)),
        [[], ()],
        set(),
        {frozenset({1}), (1, 2)},
        frozenset(),
        {},
        {"a": {"b": [1]}},
        {"$type": "os:system", "$x": 1},
        # Past 16 members a set's hashes are checked: ints by their size, up to and past where
        # they hash to themselves; other scalars by their types; the rest by their hashes.
        set(range(-10, 10)) | {2**60 - 1, -(2**60) + 1, 2**60, 2**61 - 2, 2**61 - 1, 2**62, True},
        frozenset(str(n) for n in range(20)),
        {True, 2.5, "a", None, *range(20)},
        {(n, "a") for n in range(20)},
    ],
    "non-str keys": [
        {1: "int", 2.5: "float", None: "none"},
        {True: "bool", 0.0: "float"},
        {(1, "a"): 1, frozenset({2}): 2},
        {Status.NEW: 1, Tier.GOLD: 2},
        {UUID(int=7): "uuid", dt.date(2026, 1, 1): "date", Decimal("1.5"): "decimal"},
    ],
    "enums": [Status.NEW, Status.DISPATCHED, Tier.SILVER, Perm.READ_WRITE, Perm.READ | Perm.ADMIN, Perm(0)],
    "records": [Point(1.0), Stock(Status.PAID, Perm.WRITE, Tier.BRONZE, Point(0.0, -0.0))],
}


@pytest.mark.parametrize("group", SURVIVORS)
def test_values_survive_the_trip_with_their_types(group: str) -> None:
    codec = TypedCodec([Anything, Stock])
    values: list[Any] = SURVIVORS[group]
    for value in values:
        assert_same(Anything(value), trip(codec, Anything(value)))


# -- dataclass variants -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Sealed:
    id: int
    tags: tuple[str, ...] = ()


@dataclass
class Computed:
    base: int
    doubled: int = field(init=False)
    note: str = field(init=False, default="")

    def __post_init__(self) -> None:
        self.doubled = self.base * 2


@dataclass
class Variants:
    sealed: Sealed
    computed: Computed
    sealed_by_name: dict[str, Sealed]
    maybe: Sealed | None
    nested: list[dict[int, tuple[Sealed, ...]]]
    literal: Literal["a", "b"]
    counter: ClassVar[int] = 0
    default: list[int] = field(default_factory=lambda: [1])


def test_dataclass_variants_round_trip() -> None:
    computed = Computed(3)
    computed.note = "set after __init__"
    event = Variants(
        Sealed(id=1, tags=("x",)),
        computed,
        {"k": Sealed(id=2)},
        None,
        [{1: (Sealed(id=3),)}],
        "b",
    )
    codec = TypedCodec([Variants])
    payload = codec.encode(event)
    assert "counter" not in payload  # a ClassVar is not a field
    assert payload["computed"] == {"$type": type_name(Computed), "base": 3, "doubled": 6, "note": "set after __init__"}
    assert_same(event, trip(codec, event))


def test_a_payload_cannot_overwrite_what_the_class_computes_in_an_init_false_field() -> None:
    codec = TypedCodec([Computed])
    payload = codec.encode(Computed(3))
    forged = {**payload, "doubled": 7}
    with pytest.raises(EventDecodeError, match=r"Computed\.doubled is computed by the class \(init=False\) as 6"):
        codec.decode(forged)
    # A field the class leaves at its default may have been set after __init__: it travels.
    assert codec.decode({**payload, "note": "later"}).note == "later"
    # An event whose computed field was changed after it was built fails at publish(), not on the worker.
    changed = Computed(3)
    changed.doubled = 7
    with pytest.raises(EventEncodeError, match=r"Computed\.doubled is computed by the class"):
        codec.encode(changed)


class Bits(enum.IntFlag):
    LOW = 1
    HIGH = 1 << 30


@dataclass(frozen=True)
class Flagged:
    bits: Bits


def test_decoding_flag_values_does_not_grow_the_flag_class_cache() -> None:
    codec = TypedCodec([Flagged])
    payload = codec.encode(Flagged(Bits.LOW | Bits.HIGH))
    cache_size = len(Bits._value2member_map_)
    for value in range(2, 2002):  # an IntFlag keeps unknown bits: each value is a new combination
        decoded = codec.decode({**payload, "bits": {"$enum": payload["bits"]["$enum"], "value": value}})
        assert decoded.bits == value and type(decoded.bits) is Bits
    assert len(Bits._value2member_map_) == cache_size  # before: 2,000 more, kept for the life of the worker
    assert codec.decode(payload).bits is Bits(Bits.LOW | Bits.HIGH)


@dataclass(frozen=True)
class Tree:
    label: str
    children: tuple[Tree, ...] = ()
    parent_label: str | None = None


def test_a_class_that_refers_to_itself_round_trips() -> None:
    tree = Tree("root", (Tree("a", (Tree("a1"),), "root"), Tree("b", parent_label="root")))
    assert_same(tree, trip(TypedCodec([Tree]), tree))


# -- register_type ---------------------------------------------------------------------------


class Money:
    """A class of the application's own, neither a dataclass nor anything the codec knows."""

    def __init__(self, amount: Decimal, currency: str) -> None:
        self.amount = amount
        self.currency = currency

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Money) and (self.amount, self.currency) == (other.amount, other.currency)

    def __hash__(self) -> int:
        return hash((self.amount, self.currency))


@dataclass(frozen=True)
class Invoice:
    total: Money
    by_currency: dict[str, Money] = field(default_factory=dict)


def _money_types(**options: Any) -> CustomTypes:
    types_ = CustomTypes()
    types_.register(
        Money,
        encode=lambda money: (money.amount, money.currency),
        decode=lambda value: Money(*value),
        **options,
    )
    return types_


def test_a_registered_type_round_trips_under_its_name() -> None:
    codec = TypedCodec([Invoice], _money_types(name="billing:Money"))
    event = Invoice(Money(Decimal("9.90"), "EUR"), {"USD": Money(Decimal("1"), "USD")})
    payload = codec.encode(event)
    assert payload["total"] == {"$custom": "billing:Money", "value": {"$tuple": [{"$decimal": "9.90"}, "EUR"]}}
    assert trip(codec, event) == event


def test_a_registered_type_decodes_under_its_aliases() -> None:
    codec = TypedCodec([Invoice], _money_types(name="billing:Money", aliases=["old.billing:Money"]))
    payload = codec.encode(Invoice(Money(Decimal("1"), "EUR")))
    payload["total"]["$custom"] = "old.billing:Money"
    assert codec.decode(payload) == Invoice(Money(Decimal("1"), "EUR"))


def test_register_type_on_the_bus_reaches_its_codec() -> None:
    class Journal(Handler):
        def handle_event(self, event: Any) -> None:
            seen.append(event)

    seen: list[Any] = []
    bus = EventBus()
    bus.register_type(Money, encode=lambda m: [m.amount, m.currency], decode=lambda v: Money(*v))
    bus.configure(handlers={Invoice: [Journal]}, broker="stub", backend="inline")
    bus.publish(Invoice(Money(Decimal("2"), "EUR")))
    assert seen == [Invoice(Money(Decimal("2"), "EUR"))]


@pytest.mark.parametrize(
    ("cls", "options", "problem"),
    [
        (str, {"encode": str, "decode": str}, "JSON's own"),
        (Money, {}, "encode= and decode= are needed"),
        (Money, {"encode": repr}, "give both encode= and decode="),
        (Money, {"encode": 1, "decode": 2}, "must be callable"),
        (Money, {"encode": repr, "decode": repr, "name": "$money"}, r"not starting with '\$'"),
        (Money, {"encode": repr, "decode": repr, "aliases": "old:Money"}, "a list of names"),
        (Money(Decimal(1), "EUR"), {"encode": repr, "decode": repr}, "takes a class"),
    ],
)
def test_register_type_refuses_what_cannot_work(cls: Any, options: dict[str, Any], problem: str) -> None:
    with pytest.raises(ConfigurationError, match=problem):
        CustomTypes().register(cls, **options)


def test_two_classes_cannot_share_a_wire_name() -> None:
    types_ = _money_types(name="tests.codec.test_typed:Invoice")
    with pytest.raises(ConfigurationError, match=r"two classes go by the wire name 'tests\.codec\.test_typed:Invoice'"):
        TypedCodec([Invoice], types_)


# -- evolution ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Shipped:
    order_id: str
    carrier: str = "post"  # added after messages without it were published
    parcels: list[int] = field(default_factory=list)


def test_a_payload_missing_a_field_with_a_default_takes_the_default() -> None:
    codec = TypedCodec([Shipped])
    old = {"$type": "tests.codec.test_typed:Shipped", "order_id": "o-1"}
    assert_same(Shipped("o-1", "post", []), codec.decode(old))


@dataclass(frozen=True)
class Renamed:
    """Once ``shop.events:OrderSent``; it names its old self, and keeps a name of its own."""

    __eventbus_name__: ClassVar[str] = "shop:Renamed"
    __eventbus_aliases__: ClassVar[tuple[str, ...]] = ("shop.events:OrderSent",)

    order_id: str


def test_a_class_names_itself_and_its_old_names() -> None:
    codec = TypedCodec([Renamed])
    assert codec.encode(Renamed("1")) == {"$type": "shop:Renamed", "order_id": "1"}
    assert codec.decode({"$type": "shop.events:OrderSent", "order_id": "1"}) == Renamed("1")
    assert type_name(Renamed) == "shop:Renamed"  # what the message's event_type option says too
    # Where it is defined, for people: a dotted path, whatever name it goes by on the wire.
    assert qualified_name(Renamed) == "tests.codec.test_typed.Renamed"


def test_an_event_class_gets_aliases_from_register_type() -> None:
    types_ = CustomTypes()
    types_.register(Shipped, aliases=["old.module:OldShipped"])
    codec = TypedCodec([Shipped], types_)
    assert codec.decode({"$type": "old.module:OldShipped", "order_id": "2"}) == Shipped("2")
    assert codec.encode(Shipped("2"))["$type"] == "tests.codec.test_typed:Shipped"


def test_register_type_names_a_structured_class_without_encode_functions() -> None:
    types_ = CustomTypes()
    types_.register(Shipped, name="shipping:Shipped")
    codec = TypedCodec([Shipped], types_)
    assert codec.encode(Shipped("3"))["$type"] == "shipping:Shipped"
    assert codec.decode({"$type": "shipping:Shipped", "order_id": "3"}) == Shipped("3")


def _class_in_main(name: str) -> Any:
    namespace = {"__annotations__": {"x": int}, "__module__": "__main__", "__qualname__": name}
    return dataclass(type(name, (), namespace))


def test_a_class_of_a_script_run_as_main_is_refused_with_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys.modules["__main__"], "__spec__", None, raising=False)
    cls = _class_in_main("ScriptEvent")
    with pytest.raises(ConfigurationError, match=r"defined in a script run as __main__.*register_type\(ScriptEvent"):
        TypedCodec([cls])
    types_ = CustomTypes()
    types_.register(cls, name="app:ScriptEvent")
    assert TypedCodec([cls], types_).encode(cls(x=1)) == {"$type": "app:ScriptEvent", "x": 1}


def test_a_class_in_main_run_with_python_m_takes_the_module_s_name(monkeypatch: pytest.MonkeyPatch) -> None:
    spec = types.SimpleNamespace(name="app.events")
    monkeypatch.setattr(sys.modules["__main__"], "__spec__", spec, raising=False)
    cls = _class_in_main("ModuleEvent")
    assert TypedCodec([cls]).encode(cls(x=1)) == {"$type": "app.events:ModuleEvent", "x": 1}


# -- encoding errors -----------------------------------------------------------------------------


class Opaque:
    pass


@dataclass(frozen=True)
class Basket:
    lines: list[OrderLine]
    total: Decimal = Decimal("0")
    extra: dict[Any, Any] = field(default_factory=dict)
    when: dt.datetime | None = None
    tags: set[str] = field(default_factory=set)


class LocalZone(dt.tzinfo):
    def utcoffset(self, when: dt.datetime | None) -> dt.timedelta:
        return dt.timedelta(hours=2)

    def dst(self, when: dt.datetime | None) -> dt.timedelta:
        return dt.timedelta(0)

    def tzname(self, when: dt.datetime | None) -> str:
        return "LOCAL"


LINES = [OrderLine("a", 1, Decimal("1")), OrderLine("b", 1, Decimal("1"))]


@pytest.mark.parametrize(
    ("event", "message"),
    [
        (
            Basket([*LINES, OrderLine(Opaque(), 1, Decimal("1"))]),  # type: ignore[arg-type]
            "Basket.lines[2].sku: cannot encode <class 'tests.codec.test_typed.Opaque'>",
        ),
        (Basket(LINES, extra={"k": [1, Opaque()]}), "Basket.extra['k'][1]: cannot encode"),
        (Basket(LINES, extra={Opaque(): 1}), "Basket.extra<key 0>: cannot encode"),
        (Basket(LINES, total="1.5"), "Basket.total: expected Decimal, got str"),  # type: ignore[arg-type]
        (Basket([*LINES, "x"]), "Basket.lines[2]: expected OrderLine, got str"),  # type: ignore[list-item]
        (Basket(LINES, tags={"a", 1}), "Basket.tags{"),  # type: ignore[arg-type]
        (Basket(LINES, when=dt.datetime(2026, 1, 1, tzinfo=LocalZone())), "Basket.when: cannot encode tzinfo"),
    ],
    ids=lambda value: value if isinstance(value, str) else None,
)
def test_an_unencodable_value_is_a_type_error_naming_its_path(event: Basket, message: str) -> None:
    with pytest.raises(EventEncodeError) as raised:
        TypedCodec([Basket]).encode(event)
    assert isinstance(raised.value, TypeError)
    assert str(raised.value).startswith(message)


def test_a_value_holding_itself_is_an_encode_error() -> None:
    loop: list[Any] = []
    loop.append(loop)
    with pytest.raises(EventEncodeError, match="nested too deeply, or holds itself"):
        TypedCodec([Basket]).encode(Basket(LINES, extra={"loop": loop}))


def test_only_event_classes_are_encoded_as_events() -> None:
    with pytest.raises(EventEncodeError, match="OrderLine is not an event class"):
        TypedCodec([Basket]).encode(LINES[0])


# -- the pickle fallback ------------------------------------------------------------------------


def test_the_fallback_sends_what_typed_cannot_as_a_signed_pickle_warning_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    codec = TypedCodec([Basket], secret_key=KEY, pickle_fallback=True)
    odd = Basket(LINES, extra={"path": pathlib.Path("/x"), "empty": frozenset()})
    assert codec.encode(odd)["$type"] == "tests.codec.test_typed:Basket"  # representable: stays typed
    with caplog.at_level(logging.WARNING, logger="dramatiq_eventbus.codecs"):
        events = [Basket(LINES, extra={"n": n, "v": enum.Enum}) for n in range(3)]
        payloads = [codec.encode(event) for event in events]
    assert all(set(payload) == {"$pickle", "hmac"} for payload in payloads)
    assert [trip(codec, event) for event in events] == events
    warnings = [record.getMessage() for record in caplog.records]
    assert len(warnings) == 1, warnings
    assert "Basket cannot travel as typed JSON (Basket.extra['v']: cannot encode <class 'enum.EnumType'>" in warnings[0]


def test_without_the_fallback_a_typed_codec_unpickles_nothing() -> None:
    pickled = TypedCodec([Basket], secret_key=KEY, pickle_fallback=True).encode(Basket(LINES, extra={"v": Opaque}))
    with pytest.raises(EventDecodeError, match=r"\$pickle payload, refused"):
        TypedCodec([Basket], secret_key=KEY).decode(pickled)


@pytest.mark.parametrize(
    ("arguments", "problem"),
    [
        ({"codec": "pickle"}, r"codec='pickle' needs a secret_key \(or EVENTBUS_SECRET_KEY\)"),
        ({"codec": "pickle", "secret_key": "  "}, "needs a secret_key"),
        ({"codec": "typed", "pickle_fallback": True}, r"pickle_fallback=True needs a secret_key"),
        ({"codec": "pickle", "secret_key": 42}, "secret_key must be a str or bytes"),
        ({"codec": "yaml"}, "codec must be one of 'typed', 'pickle'"),
    ],
)
def test_configure_refuses_a_codec_it_cannot_make(arguments: dict[str, Any], problem: str) -> None:
    class Quiet(Handler):
        def handle_event(self, event: Any) -> None:
            pass

    with pytest.raises(ConfigurationError, match=problem):
        EventBus().configure(handlers={Basket: [Quiet]}, broker="stub", **arguments)


def test_make_codec_builds_each_mode() -> None:
    typed = make_codec("typed", event_classes=[Basket], custom_types=CustomTypes())
    pickled = make_codec(
        "pickle", event_classes=[Basket], custom_types=CustomTypes(), secret_key=b"a key of sixteen bytes or more"
    )
    assert (typed.name, pickled.name) == ("typed", "pickle")
    assert isinstance(typed, TypedCodec) and typed.knows(Basket) and not typed.knows(OrderLine)
    assert_same(Basket(LINES), trip(pickled, Basket(LINES)))  # type: ignore[arg-type]


def test_a_fraction_at_the_size_limit_round_trips_and_a_larger_one_fails_at_encode() -> None:
    from dramatiq_eventbus.codecs.standard import MAX_FRACTION_HEX_DIGITS, CodecFailure, decode_fraction
    from dramatiq_eventbus.codecs.standard import encode_fraction as encode

    largest = Fraction(2 ** (4 * MAX_FRACTION_HEX_DIGITS) - 1, 3)
    assert decode_fraction(encode(largest)) == largest  # type: ignore[arg-type]
    with pytest.raises(CodecFailure, match="cannot be sent"):
        encode(Fraction(2 ** (4 * MAX_FRACTION_HEX_DIGITS), 3))
