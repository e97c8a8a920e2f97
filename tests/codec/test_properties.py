"""Property tests: generated nested values and events round-trip equal, with identical types,
through each mode, and through JSON as Dramatiq's envelope carries them."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings

from dramatiq_eventbus.codecs import Codec, CustomTypes, PickleCodec, make_codec

from .model import EVENT_CLASSES, OrderPlaced, ValueEvent, assert_same, events, values

SECRET_KEY = "property-tests-secret-key"
#: The issue asks for at least 1,000 generated values and events per mode: the slow variants
#: (``-m slow``) draw that many; ``make test`` draws a fifth of it, the same properties.
FULL_EXAMPLES = 1000
NORMAL_EXAMPLES = 200


def examples(count: int) -> settings:
    return settings(
        max_examples=count,
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


def typed_values_round_trip(value: Any) -> None:
    assert_same(ValueEvent(value), trip(TYPED, ValueEvent(value)))


def typed_events_round_trip(event: OrderPlaced) -> None:
    assert_same(event, trip(TYPED, event))


def pickle_values_round_trip(value: Any) -> None:
    assert_same(ValueEvent(value), trip(PICKLE, ValueEvent(value)))


def pickle_events_round_trip(event: OrderPlaced) -> None:
    assert_same(event, trip(PICKLE, event))


test_typed_mode_round_trips_nested_values = examples(NORMAL_EXAMPLES)(given(values)(typed_values_round_trip))
test_typed_mode_round_trips_events = examples(NORMAL_EXAMPLES)(given(events)(typed_events_round_trip))
test_pickle_mode_round_trips_nested_values = examples(NORMAL_EXAMPLES)(given(values)(pickle_values_round_trip))
test_pickle_mode_round_trips_events = examples(NORMAL_EXAMPLES)(given(events)(pickle_events_round_trip))

test_typed_mode_round_trips_1000_nested_values = pytest.mark.slow(
    examples(FULL_EXAMPLES)(given(values)(typed_values_round_trip))
)
test_typed_mode_round_trips_1000_events = pytest.mark.slow(
    examples(FULL_EXAMPLES)(given(events)(typed_events_round_trip))
)
test_pickle_mode_round_trips_1000_nested_values = pytest.mark.slow(
    examples(FULL_EXAMPLES)(given(values)(pickle_values_round_trip))
)
test_pickle_mode_round_trips_1000_events = pytest.mark.slow(
    examples(FULL_EXAMPLES)(given(events)(pickle_events_round_trip))
)


def test_pickle_codec_takes_any_class_when_given_none() -> None:
    codec = PickleCodec(SECRET_KEY)
    assert_same({1: (2, 3)}, trip(codec, {1: (2, 3)}))
