"""Codecs: how an event crosses the broker. See :mod:`.base` for the interface.

Two come with the bus: ``"typed"`` (:class:`TypedCodec`, readable JSON that keeps
Python types; the default) and ``"pickle"`` (:class:`PickleCodec`, signed dill). Any
object with a ``name``, ``encode(event)`` and ``decode(payload)`` can be given to
configure() instead.
"""

from __future__ import annotations

from collections.abc import Iterable

from ..errors import ConfigurationError
from .base import Codec, JSONValue
from .custom import CustomType, CustomTypes
from .names import type_name
from .pickling import PickleCodec, SecretKeys
from .typed import TypedCodec

CODECS = ("typed", "pickle")


def make_codec(
    name: str,
    *,
    event_classes: Iterable[type],
    custom_types: CustomTypes,
    secret_key: SecretKeys | None = None,
    pickle_fallback: bool = False,
) -> Codec:
    """Build the codec configure() named, for these event classes.

    Raises:
      ConfigurationError: An unknown name; ``"pickle"``, or ``pickle_fallback``, without
        a secret key; a typed codec whose classes cannot have stable, distinct names.
    """
    if name == "typed":
        return TypedCodec(event_classes, custom_types, secret_key=secret_key, pickle_fallback=pickle_fallback)
    if name == "pickle":
        return PickleCodec(secret_key, event_classes)
    raise ConfigurationError(
        f"codec must be one of {', '.join(map(repr, CODECS))} or an object with encode() and decode(), not {name!r}"
    )


__all__ = [
    "CODECS",
    "Codec",
    "CustomType",
    "CustomTypes",
    "JSONValue",
    "PickleCodec",
    "TypedCodec",
    "make_codec",
    "type_name",
]
