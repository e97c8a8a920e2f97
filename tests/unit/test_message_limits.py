"""What a consumer agrees to read: max_message_bytes, and the JSON objects and lists a message may hold."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from dramatiq_eventbus.brokers import inspect_body
from dramatiq_eventbus.brokers.inspection import Refusal
from dramatiq_eventbus.brokers.limits import (
    BYTES_PER_CONTAINER,
    DEFAULT_MAX_MESSAGE_BYTES,
    containers_allowed,
    count_containers,
    size_problem,
)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(alphabet=st.sampled_from('{}[]"\\ab\n\u00e9')),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=3), children, max_size=4),
    max_leaves=30,
)


def containers_in(value: Any) -> int:
    if isinstance(value, list):
        return 1 + sum(containers_in(item) for item in value)
    if isinstance(value, dict):
        return 1 + sum(containers_in(item) for item in value.values())
    return 0


@settings(max_examples=300, deadline=None)
@given(json_values, st.booleans())
def test_the_count_is_exact_whatever_the_strings_hold(value: Any, ascii_only: bool) -> None:
    body = json.dumps(value, ensure_ascii=ascii_only).encode()
    # enough=-1 forces the exact count, which leaves out the braces and brackets inside strings.
    assert count_containers(body, -1) == containers_in(value)


def test_a_message_under_the_byte_limit_with_too_many_lists_is_refused_before_parsing() -> None:
    allowed = containers_allowed(DEFAULT_MAX_MESSAGE_BYTES)
    assert allowed == DEFAULT_MAX_MESSAGE_BYTES // BYTES_PER_CONTAINER == 16_384
    body = b'{"args": [' + b",".join([b"[]"] * 300_000) + b"]}"
    assert len(body) < DEFAULT_MAX_MESSAGE_BYTES
    refusal = inspect_body(body, {}, "events")
    assert isinstance(refusal, Refusal)
    assert "300,002 JSON objects and lists, more than the 16,384 allowed" in refusal.reason
    assert "raise it to allow more" in refusal.reason


def test_braces_inside_strings_are_not_counted() -> None:
    body = json.dumps({"note": "{[" * 200_000}).encode()
    assert size_problem(body, DEFAULT_MAX_MESSAGE_BYTES) is None


def test_the_allowance_grows_with_max_message_bytes() -> None:
    body = json.dumps([[]] * 20_000).encode()
    assert size_problem(body, DEFAULT_MAX_MESSAGE_BYTES) is not None
    assert size_problem(body, 2 * DEFAULT_MAX_MESSAGE_BYTES) is None


def test_objects_and_lists_are_counted_only_when_the_envelope_is_json() -> None:
    body = b"[]" * 20_000
    assert size_problem(body, DEFAULT_MAX_MESSAGE_BYTES, json=False) is None
    assert size_problem(body + b"x" * DEFAULT_MAX_MESSAGE_BYTES, DEFAULT_MAX_MESSAGE_BYTES, json=False) is not None
