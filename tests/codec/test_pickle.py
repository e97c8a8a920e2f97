"""Pickle mode: dill, base64, HMAC-SHA256; nothing is unpickled before its signature is checked."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import pickle
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import dill
import pytest

from dramatiq_eventbus import EventDecodeError, EventEncodeError
from dramatiq_eventbus.codecs import PickleCodec

from .model import assert_same

KEY = "pickle-tests-secret-key"


@dataclass(frozen=True)
class Paid:
    order_id: str
    amount: Decimal
    note: Any = None


class WritesAFile:
    """What an attacker would put on the queue: unpickling it opens (creates) a file."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (str(self.path), "w"))


def evil_data(path: Path) -> str:
    return base64.b64encode(pickle.dumps(WritesAFile(path))).decode("ascii")


def sign(data: str, key: str) -> str:
    return hmac.new(key.encode(), b"dramatiq-eventbus pickle v1\n" + data.encode(), hashlib.sha256).hexdigest()


def forged_payloads(path: Path) -> dict[str, Any]:
    """Payloads that would create ``path`` if unpickled, each with a signature that is not right."""
    data = evil_data(path)
    genuine = PickleCodec(KEY).encode(Paid("1", Decimal("1")))
    return {
        "no signature": {"$pickle": data},
        "null signature": {"$pickle": data, "hmac": None},
        "zero signature": {"$pickle": data, "hmac": "0" * 64},
        "signed with another key": {"$pickle": data, "hmac": sign(data, "another key")},
        "signature without the domain prefix": {
            "$pickle": data,
            "hmac": hmac.new(KEY.encode(), data.encode(), hashlib.sha256).hexdigest(),
        },
        "tampered: a genuine signature on other data": {"$pickle": data, "hmac": genuine["hmac"]},
        "tampered: a genuine payload with a byte changed": {
            "$pickle": genuine["$pickle"][:-8]
            + ("A" if genuine["$pickle"][-8] != "A" else "B")
            + genuine["$pickle"][-7:],
            "hmac": genuine["hmac"],
        },
        "truncated signature": {"$pickle": data, "hmac": sign(data, KEY)[:32]},
        "non-ASCII signature": {"$pickle": data, "hmac": "é" * 64},
        "signature of the wrong type": {"$pickle": data, "hmac": 12345},
        "an extra key": {"$pickle": data, "hmac": sign(data, KEY), "class": "os:system"},
    }


@pytest.fixture
def no_unpickling(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Fail loudly if anything is unpickled."""
    calls: list[str] = []

    def refuse(name: str) -> Callable[..., Any]:
        def unpickle(*args: Any, **kwargs: Any) -> Any:
            calls.append(name)
            raise AssertionError(f"{name} was called")

        return unpickle

    monkeypatch.setattr(dill, "loads", refuse("dill.loads"))
    monkeypatch.setattr(pickle, "loads", refuse("pickle.loads"))
    yield calls


def test_the_forged_pickle_would_write_the_file_if_it_were_unpickled(tmp_path: Path) -> None:
    target = tmp_path / "pwned"
    pickle.loads(base64.b64decode(evil_data(target))).close()
    assert target.exists()  # so the tests below, where it does not appear, mean something


FORGERIES = [
    "no signature",
    "null signature",
    "zero signature",
    "signed with another key",
    "signature without the domain prefix",
    "tampered: a genuine signature on other data",
    "tampered: a genuine payload with a byte changed",
    "truncated signature",
    "non-ASCII signature",
    "signature of the wrong type",
    "an extra key",
]


def test_every_forgery_is_tested() -> None:
    assert list(forged_payloads(Path("/nonexistent"))) == FORGERIES


@pytest.mark.parametrize("case", FORGERIES)
def test_a_forged_or_tampered_pickle_is_refused_before_unpickling(
    case: str, tmp_path: Path, no_unpickling: list[str]
) -> None:
    target = tmp_path / "pwned"
    payload = forged_payloads(target)[case]
    with pytest.raises(EventDecodeError, match=r"refused|must be ASCII|unexpected key"):
        PickleCodec(KEY, [Paid]).decode(payload)
    assert no_unpickling == []
    assert not target.exists()


@pytest.mark.parametrize("payload", [None, "gASV", ["$pickle"], {"$type": "x:Y"}, {"hmac": "00"}])
def test_a_payload_that_is_not_a_pickle_object_is_refused(payload: Any, no_unpickling: list[str]) -> None:
    with pytest.raises(EventDecodeError, match=r"expected a signed \$pickle payload"):
        PickleCodec(KEY).decode(payload)


def test_a_pickle_round_trips_opaque_in_dashboards() -> None:
    codec = PickleCodec(KEY, [Paid])
    event = Paid("o-1", Decimal("10.00"), note={(1, 2): {frozenset({3})}, "lambda": None})
    payload = codec.encode(event)
    assert set(payload) == {"$pickle", "hmac"} and len(payload["hmac"]) == 64
    assert "o-1" not in json.dumps(payload) and "amount" not in json.dumps(payload)
    assert_same(event, codec.decode(json.loads(json.dumps(payload))))


def test_a_str_key_and_its_utf8_bytes_are_the_same_key() -> None:
    payload = PickleCodec("clé de seize octets").encode(Paid("1", Decimal("1")))
    assert PickleCodec("clé de seize octets".encode()).decode(payload) == Paid("1", Decimal("1"))


def test_dill_carries_what_pickle_cannot() -> None:
    codec = PickleCodec(KEY, [Paid])
    event = Paid("1", Decimal("1"), note=lambda x: x + 1)
    received: Any = codec.decode(codec.encode(event))
    assert received.note(1) == 2


def test_a_signed_payload_that_is_not_an_event_of_the_bus_is_refused() -> None:
    payload = PickleCodec(KEY).encode({"not": "an event"})
    with pytest.raises(EventDecodeError, match="holds a dict, which is not an event class"):
        PickleCodec(KEY, [Paid]).decode(payload)


@pytest.mark.parametrize(
    ("data", "problem"),
    [("not base64!", "is not base64"), (base64.b64encode(b"not a pickle").decode(), "cannot be unpickled")],
)
def test_a_signed_payload_that_is_not_a_pickle_is_a_decode_error(data: str, problem: str) -> None:
    with pytest.raises(EventDecodeError, match=problem):
        PickleCodec(KEY).decode({"$pickle": data, "hmac": sign(data, KEY)})


def test_an_unpicklable_event_is_an_encode_error() -> None:
    class Local:  # dill pickles classes by reference, and this one cannot be found again
        pass

    with pytest.raises(EventEncodeError, match="Paid: cannot pickle"), pytest.warns(dill.PicklingWarning):
        PickleCodec(KEY).encode(Paid("1", Decimal("1"), note=Local()))
