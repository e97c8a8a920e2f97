"""What the codec tests share: event classes, a strict "same value, same types" check, and
hypothesis strategies for nested values and events. The tests here check the checker."""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import math
import pathlib
import string
import zoneinfo
from dataclasses import dataclass, field
from decimal import Decimal
from fractions import Fraction
from typing import Any, Generic, NamedTuple, TypeVar
from uuid import UUID

import pytest
from hypothesis import strategies as st

T = TypeVar("T")

# -- classes the events are made of ----------------------------------------------------------


class Status(enum.Enum):
    NEW = "new"
    PAID = "paid"
    SHIPPED = "shipped"
    DISPATCHED = "shipped"  # an alias: the same member as SHIPPED


class Tier(enum.IntEnum):
    BRONZE = 1
    SILVER = 2
    GOLD = 3


class Mode(enum.StrEnum):
    PICKUP = "pickup"
    DELIVERY = "delivery"


class Perm(enum.Flag):
    READ = 1
    WRITE = 2
    ADMIN = 4
    READ_WRITE = READ | WRITE  # a named combination


class Point(NamedTuple):
    x: float
    y: float = 0.0


@dataclass(frozen=True)
class Line:
    sku: str
    quantity: int
    unit_price: Decimal
    tags: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True, kw_only=True)
class Customer:
    id: UUID
    name: str
    tier: Tier
    since: dt.date


@dataclass
class Shipment(Generic[T]):
    item: T
    eta: dt.timedelta | None = None


@dataclass
class Holder:
    """Carries any value in an event, for the round trip of arbitrary nested values."""

    value: Any


@dataclass(frozen=True)
class OrderPlaced:
    order_id: str
    customer: Customer
    total: Decimal
    placed_at: dt.datetime
    lines: list[Line]
    status: Status
    perms: Perm
    where: Point | None
    shipments: tuple[Shipment[Line], ...]
    ratios: dict[int, Fraction]
    keyed: dict[tuple[int, str], bool]
    by_status: dict[Status, list[int]]
    by_id: dict[UUID, str]
    attachments: dict[str, bytes]
    opens_at: dt.time
    path: pathlib.PurePosixPath
    meta: Any = None
    note: str | None = None
    mode: Mode = Mode.PICKUP
    raw: bytearray = field(default_factory=bytearray)


@dataclass(frozen=True)
class ValueEvent:
    """An event holding one arbitrary value, so that values can make a codec's trip as events.

    ``holder`` is there for its annotation: it makes Holder a class the typed codec knows.
    """

    value: Any
    holder: Holder | None = None


EVENT_CLASSES = (OrderPlaced, ValueEvent)


# -- the strict check --------------------------------------------------------------------------


def assert_same(expected: Any, actual: Any, path: str = "value") -> None:
    """``actual`` equals ``expected`` with the same type at every level.

    Stricter than ``==``: 1 is not True nor 1.0, a tuple is not a list, -0.0 is not 0.0,
    Decimal("1.0") is not Decimal("1.00"), NaN equals NaN, and a datetime keeps its
    tzinfo class, zone name and fold.
    """
    kind = type(expected)
    assert type(actual) is kind, f"{path}: expected a {kind.__qualname__}, got a {type(actual).__qualname__}"
    if kind is float:
        assert (math.isnan(expected) and math.isnan(actual)) or (
            expected == actual and math.copysign(1, expected) == math.copysign(1, actual)
        ), f"{path}: {expected!r} != {actual!r}"
    elif kind is complex:
        assert_same(expected.real, actual.real, f"{path}.real")
        assert_same(expected.imag, actual.imag, f"{path}.imag")
    elif kind is Decimal:
        assert str(expected) == str(actual), f"{path}: {expected!r} != {actual!r}"
    elif kind in (dt.datetime, dt.time):
        # repr shows the tzinfo (its class, zone key or name) and fold, which == ignores.
        assert repr(expected) == repr(actual), f"{path}: {expected!r} != {actual!r}"
    elif kind in (list, tuple):
        assert len(expected) == len(actual), f"{path}: lengths {len(expected)} != {len(actual)}"
        for index, (a, b) in enumerate(zip(expected, actual, strict=True)):
            assert_same(a, b, f"{path}[{index}]")
    elif kind in (set, frozenset):
        assert len(expected) == len(actual), f"{path}: sizes {len(expected)} != {len(actual)}"
        stored = {member: member for member in actual}
        for member in expected:
            assert member in stored, f"{path}: {member!r} is missing"
            assert_same(member, stored[member], f"{path}{{{member!r}}}")
    elif kind is dict:
        assert len(expected) == len(actual), f"{path}: sizes {len(expected)} != {len(actual)}"
        keys = {key: key for key in actual}
        for key, value in expected.items():
            assert key in keys, f"{path}: key {key!r} is missing"
            assert_same(key, keys[key], f"{path}<key {key!r}>")
            assert_same(value, actual[keys[key]], f"{path}[{key!r}]")
    elif isinstance(expected, enum.Enum):
        assert expected is actual or expected == actual, f"{path}: {expected!r} != {actual!r}"
    elif dataclasses.is_dataclass(expected):
        for f in dataclasses.fields(expected):
            assert_same(getattr(expected, f.name), getattr(actual, f.name), f"{path}.{f.name}")
    elif isinstance(expected, tuple) and hasattr(expected, "_fields"):
        for name in expected._fields:
            assert_same(getattr(expected, name), getattr(actual, name), f"{path}.{name}")
    elif getattr(kind, "__attrs_attrs__", None) is not None:
        for attribute in kind.__attrs_attrs__:
            assert_same(getattr(expected, attribute.name), getattr(actual, attribute.name), f"{path}.{attribute.name}")
    elif hasattr(kind, "model_fields") and hasattr(expected, "__pydantic_extra__"):
        for name in kind.model_fields:
            assert_same(getattr(expected, name), getattr(actual, name), f"{path}.{name}")
        assert_same(expected.__pydantic_extra__, actual.__pydantic_extra__, f"{path}.<extra>")
    else:
        assert expected == actual, f"{path}: {expected!r} != {actual!r}"


# -- strategies ---------------------------------------------------------------------------------

_HAVE_ZONES = bool(zoneinfo.available_timezones())


def _fixed_offset(minutes: int, named: bool) -> dt.timezone:
    if named:
        return dt.timezone(dt.timedelta(minutes=minutes), "Zone")
    return dt.timezone(dt.timedelta(minutes=minutes))


_fixed_offsets = st.builds(_fixed_offset, st.integers(min_value=-23 * 60 - 59, max_value=23 * 60 + 59), st.booleans())
timezones: st.SearchStrategy[dt.tzinfo | None] = st.none() | st.just(dt.timezone.utc) | _fixed_offsets
if _HAVE_ZONES:
    timezones = timezones | st.timezones()


def _with_fold(value: Any, fold: int) -> Any:
    return value.replace(fold=fold)


datetimes = st.builds(_with_fold, st.datetimes(timezones=timezones), st.sampled_from([0, 1]))
times = st.builds(_with_fold, st.times(timezones=timezones), st.sampled_from([0, 1]))
big_ints = st.integers(min_value=1, max_value=10**6).map(lambda n: n * 7**5000) | st.integers().map(
    lambda n: -(2**4200) + n
)
path_text = st.text(alphabet=string.ascii_letters + string.digits + "/._-", min_size=1, max_size=20)
paths = (
    path_text.map(pathlib.PurePosixPath)
    | path_text.map(pathlib.Path)
    | path_text.map(lambda text: pathlib.PureWindowsPath("C:\\" + text))
)
enum_members = st.sampled_from([*Status, *Tier, *Mode, *Perm, Perm.READ | Perm.ADMIN, Perm(0), Status.DISPATCHED])

#: Values that hash and equal themselves after a trip: fit for sets and dict keys.
hashable_leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    big_ints,
    st.floats(allow_nan=False),
    st.text(),
    st.binary(max_size=20),
    st.decimals(allow_nan=False),
    st.fractions(),
    datetimes,
    st.dates(),
    times,
    st.timedeltas(),
    st.uuids(),
    paths,
    enum_members,
    st.complex_numbers(allow_nan=False),
)
leaves = st.one_of(
    hashable_leaves,
    st.floats(),  # nan, inf, -0.0
    st.decimals(),  # NaN, sNaN, Infinity, -0
    st.binary(max_size=20).map(bytearray),
    st.complex_numbers(),
)
hashables = st.recursive(
    hashable_leaves, lambda inner: st.tuples(inner, inner) | st.frozensets(inner, max_size=3), max_leaves=6
)


def _containers(inner: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(
        st.lists(inner, max_size=4),
        st.lists(inner, max_size=4).map(tuple),
        st.sets(hashables, max_size=4),
        st.frozensets(hashables, max_size=4),
        st.dictionaries(st.text(max_size=8), inner, max_size=4),  # keys may start with "$"
        st.dictionaries(hashables, inner, max_size=4),
        st.builds(Holder, inner),
        st.builds(Point, st.floats(), st.floats()),
        st.builds(Shipment, inner, st.none() | st.timedeltas()),
    )


#: Nested values of every type the typed codec round-trips.
values = st.recursive(leaves, _containers, max_leaves=12)

_lines = st.builds(
    Line,
    st.text(max_size=10),
    st.integers(),
    st.decimals(),
    st.frozensets(st.text(max_size=5), max_size=3),
)

#: Events of a class that uses every field kind, each field filled per its annotation.
events = st.builds(
    OrderPlaced,
    order_id=st.text(),
    customer=st.builds(Customer, id=st.uuids(), name=st.text(), tier=st.sampled_from(Tier), since=st.dates()),
    total=st.decimals(),
    placed_at=datetimes,
    lines=st.lists(_lines, max_size=5),
    status=st.sampled_from(Status),
    perms=st.sampled_from([*Perm, Perm.READ | Perm.ADMIN, Perm(0)]),
    where=st.none() | st.builds(Point, st.floats(), st.floats()),
    shipments=st.lists(st.builds(Shipment, _lines, st.none() | st.timedeltas()), max_size=3).map(tuple),
    ratios=st.dictionaries(st.integers(), st.fractions(), max_size=3),
    keyed=st.dictionaries(st.tuples(st.integers(), st.text(max_size=5)), st.booleans(), max_size=3),
    by_status=st.dictionaries(st.sampled_from(Status), st.lists(st.integers(), max_size=3), max_size=3),
    by_id=st.dictionaries(st.uuids(), st.text(max_size=5), max_size=3),
    attachments=st.dictionaries(st.text(max_size=5), st.binary(max_size=10), max_size=3),
    opens_at=times,
    path=path_text.map(pathlib.PurePosixPath),
    meta=st.none() | leaves | st.lists(leaves, max_size=3),
    note=st.none() | st.text(),
    mode=st.sampled_from(Mode),
    raw=st.binary(max_size=10).map(bytearray),
)


# -- the checker's own tests -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("a", "b"),
    [
        (1, True),
        (1, 1.0),
        ([1], (1,)),
        (0.0, -0.0),
        (Decimal("1.0"), Decimal("1.00")),
        (Decimal("0"), Decimal("-0")),
        ({1: "a"}, {True: "a"}),
        (dt.datetime(2020, 1, 1), dt.datetime(2020, 1, 1, fold=1)),
        (
            dt.datetime(2020, 1, 1, tzinfo=dt.timezone.utc),
            dt.datetime(2020, 1, 1, tzinfo=zoneinfo.ZoneInfo("UTC")) if _HAVE_ZONES else dt.datetime(2020, 1, 1),
        ),
        (Point(1.0, 2.0), (1.0, 2.0)),
        (Holder([1]), Holder((1,))),
        (frozenset({1}), {1}),
        (b"a", bytearray(b"a")),
    ],
)
def test_the_checker_tells_apart_what_equality_does_not(a: Any, b: Any) -> None:
    with pytest.raises(AssertionError):
        assert_same(a, b)


@pytest.mark.parametrize(
    "value",
    [float("nan"), Decimal("NaN"), Decimal("sNaN"), [float("nan")], {"k": Decimal("-NaN")}, Holder(float("nan"))],
)
def test_the_checker_takes_nan_as_the_same_as_nan(value: Any) -> None:
    assert_same(value, value)
