"""The codec interface: an event to a JSON value and back.

A codec's output travels inside the Dramatiq message's ``args``, so the envelope stays
plain JSON whatever the codec does, and a payload that cannot be decoded fails inside
the handler's actor, where it is dead-lettered, never in the broker's consumer.
"""

from __future__ import annotations

from typing import Any, Protocol, TypeAlias, runtime_checkable

#: What a codec produces: a value the standard ``json`` module can write.
JSONValue: TypeAlias = Any


@runtime_checkable
class Codec(Protocol):
    """Turns events into JSON values and back.

    ``encode`` raises :class:`~dramatiq_eventbus.errors.EventEncodeError` (a TypeError)
    for a value it cannot represent; ``decode`` raises
    :class:`~dramatiq_eventbus.errors.EventDecodeError` for a payload it will not build,
    which makes the worker dead-letter the message at once. Anyone who can write to the
    broker can hand ``decode`` anything: it must never run code that a payload names,
    unless it has first proved the payload came from the bus (as the pickle codec does
    with its signature).
    """

    #: A short name, shown in logs and in each message's options.
    name: str

    def encode(self, event: object) -> JSONValue: ...

    def decode(self, payload: JSONValue) -> object: ...
