"""Codecs: how an event crosses the broker. See :mod:`.base` for the interface."""

from __future__ import annotations

from collections.abc import Iterable

from ..errors import ConfigurationError
from .base import Codec, JSONValue
from .custom import CustomTypes
from .typed import TypedCodec, type_name

CODECS = ("typed",)


def make_codec(
    name: str,
    *,
    event_classes: Iterable[type],
    custom_types: CustomTypes,
    secret_key: str | bytes | None = None,
    pickle_fallback: bool = False,
) -> Codec:
    """Build the codec configure() named, for these event classes."""
    if name == "typed":
        return TypedCodec(event_classes)
    raise ConfigurationError(
        f"codec must be one of {', '.join(map(repr, CODECS))} or an object with encode() and decode(), not {name!r}"
    )


__all__ = ["CODECS", "Codec", "CustomTypes", "JSONValue", "TypedCodec", "make_codec", "type_name"]
