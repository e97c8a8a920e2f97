"""Codecs: how an event crosses the broker. See :mod:`.base` for the interface."""

from .base import Codec, JSONValue
from .typed import TypedCodec, type_name

__all__ = ["Codec", "JSONValue", "TypedCodec", "type_name"]
