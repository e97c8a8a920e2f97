"""Property tests: generated nested values and events round-trip equal, with identical types,
through each mode, and through JSON as Dramatiq's envelope carries them."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, given, settings

from dramatiq_eventbus.codecs import Codec, CustomTypes, PickleCodec, make_codec

from .model import EVENT_CLASSES, OrderPlaced, ValueEvent, assert_same, events, values

SECRET_KEY = "property-tests-secret-key"
#: The issue asks for at least 1,000 generated values and events per mode.
EXAMPLES = settings(
    max_examples=1000,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def _codec(mode: str) -> Codec:
    return make_codec(mode, event_classes=EVENT_CLASSES, custom_types=CustomTypes(), secret_key=SECRET_KEY)


TYPED = _codec("typed")
PICKLE = _codec("pickle")


def trip(codec: Codec, event: object) -> Any:
    """Encode, send through JSON as Dramatiq's envelope does, decode."""
    return codec.decode(json.loads(json.dumps(codec.encode(event), allow_nan=False)))


@EXAMPLES
@given(values)
def test_typed_mode_round_trips_nested_values(value: Any) -> None:
    assert_same(ValueEvent(value), trip(TYPED, ValueEvent(value)))


@EXAMPLES
@given(events)
def test_typed_mode_round_trips_events(event: OrderPlaced) -> None:
    assert_same(event, trip(TYPED, event))


@EXAMPLES
@given(values)
def test_pickle_mode_round_trips_nested_values(value: Any) -> None:
    assert_same(ValueEvent(value), trip(PICKLE, ValueEvent(value)))


@EXAMPLES
@given(events)
def test_pickle_mode_round_trips_events(event: OrderPlaced) -> None:
    assert_same(event, trip(PICKLE, event))


def test_pickle_codec_takes_any_class_when_given_none() -> None:
    codec = PickleCodec(SECRET_KEY)
    assert_same({1: (2, 3)}, trip(codec, {1: (2, 3)}))
