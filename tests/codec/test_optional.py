"""attrs classes and pydantic models, when those packages happen to be installed.

Neither is a dependency of the bus: the codec imports them only once a class of theirs
shows up, and these tests skip when they are absent.
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from decimal import Decimal
from typing import Any

import pytest

from dramatiq_eventbus import EventDecodeError
from dramatiq_eventbus.codecs import TypedCodec

from .model import Status, assert_same

try:
    import attrs
except ImportError:  # pragma: no cover - attrs is optional
    attrs = None  # type: ignore[assignment]
try:
    import pydantic
except ImportError:  # pragma: no cover - pydantic is optional
    pydantic = None  # type: ignore[assignment]

needs_attrs = pytest.mark.skipif(attrs is None, reason="attrs is not installed")
needs_pydantic = pytest.mark.skipif(pydantic is None, reason="pydantic is not installed")

if attrs is not None:

    @attrs.frozen
    class Part:
        sku: str
        price: Decimal

    @attrs.define
    class Assembly:
        _secret: str  # __init__ takes it as "secret"
        parts: list[Part]
        status: Status = Status.NEW
        counted: int = attrs.field(init=False, default=0)
        made: dt.datetime | None = None


if pydantic is not None:

    class Address(pydantic.BaseModel):
        model_config = pydantic.ConfigDict(frozen=True)
        city: str
        zip_code: str = pydantic.Field(alias="zip")

    class Signup(pydantic.BaseModel):
        model_config = pydantic.ConfigDict(extra="allow")
        email: str
        age: int
        address: Address
        balance: Decimal = Decimal("0")
        at: dt.datetime | None = None
        tags: tuple[str, ...] = ()


def trip(codec: TypedCodec, event: object) -> Any:
    return codec.decode(json.loads(json.dumps(codec.encode(event))))


def test_importing_the_bus_imports_neither_attrs_nor_pydantic() -> None:
    code = "import sys, dramatiq_eventbus.codecs; print('attrs' in sys.modules, 'pydantic' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


@needs_attrs
def test_an_attrs_class_round_trips() -> None:
    event = Assembly("s", [Part("p", Decimal("1.10"))], made=dt.datetime(2026, 1, 1))
    event.counted = 7
    codec = TypedCodec([Assembly])
    payload = codec.encode(event)
    assert payload["_secret"] == "s" and payload["counted"] == 7
    assert_same(event, trip(codec, event))


@needs_attrs
def test_an_attrs_field_of_the_wrong_type_is_refused() -> None:
    codec = TypedCodec([Part])
    payload = codec.encode(Part("p", Decimal("1")))
    payload["price"] = "1"
    with pytest.raises(EventDecodeError, match=r"Part\.price: expected Decimal, got str"):
        codec.decode(payload)


@needs_pydantic
def test_a_pydantic_model_round_trips_with_aliases_and_extras() -> None:
    event = Signup(
        email="a@b.c",
        age=30,
        address=Address(city="Lyon", zip="69001"),
        balance=Decimal("1.50"),
        at=dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc),
        tags=("x",),
        referrer=Decimal("2"),  # type: ignore[call-arg]  # an extra field, kept by extra="allow"
    )
    codec = TypedCodec([Signup])
    payload = codec.encode(event)
    assert payload["address"]["zip_code"] == "69001" and payload["referrer"] == {"$decimal": "2"}
    assert_same(event, trip(codec, event))


@needs_pydantic
def test_pydantic_validation_refuses_a_bad_payload() -> None:
    codec = TypedCodec([Signup])
    payload = {"$type": codec.wire_name(Signup), "email": "a@b.c", "age": "many", "address": None}
    with pytest.raises(EventDecodeError, match="cannot build Signup"):
        codec.decode(payload)
