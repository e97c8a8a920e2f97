"""The typed JSON codec: readable payloads that keep their Python types.

An event becomes JSON in which every value JSON cannot tell apart carries a tag::

    {"$type": "shop.orders.events:OrderCreated", "order_id": "123",
     "total": {"$decimal": "100.00"}, "at": {"$datetime": "2026-11-27T10:00:00+00:00"}}

Decoding builds only the classes it was told about (the configured event classes and
the classes reachable from their field annotations); it never imports a module a
payload names, so a payload cannot make a worker run code.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import enum
import math
import typing
import uuid
from collections.abc import Callable, Iterable
from decimal import Decimal, InvalidOperation
from typing import Any

from ..errors import EventDecodeError, EventEncodeError
from .base import JSONValue

_TYPE = "$type"


def type_name(cls: type) -> str:
    """The stable name of a class on the wire: ``package.module:QualName``."""
    return f"{cls.__module__}:{cls.__qualname__}"


class _Unencodable(Exception):
    """Raised deep in encoding; each container on the way up adds its part of the path."""

    def __init__(self, value: object) -> None:
        self.value = value
        self.path: list[str] = []


class TypedCodec:
    """Readable, type-preserving JSON, the default codec.

    Parameters:
      event_classes(Iterable[type]): The classes publish() may send. They, and every
        dataclass, NamedTuple and Enum reachable from their field annotations, are the
        only classes decoding will build.
    """

    name = "typed"

    def __init__(self, event_classes: Iterable[type] = ()) -> None:
        self._classes: dict[str, type] = {}
        self._fields: dict[type, tuple[str, ...]] = {}
        for cls in event_classes:
            self._learn(cls)
        self._encoders: dict[type, Callable[[Any], JSONValue]] = {
            str: _same,
            int: _same,
            bool: _same,
            type(None): _same,
            float: _encode_float,
            Decimal: lambda v: {"$decimal": str(v)},
            dt.datetime: _encode_datetime,
            dt.date: lambda v: {"$date": v.isoformat()},
            dt.time: lambda v: {"$time": v.isoformat()},
            dt.timedelta: lambda v: {"$timedelta": [v.days, v.seconds, v.microseconds]},
            uuid.UUID: lambda v: {"$uuid": str(v)},
            bytes: lambda v: {"$bytes": base64.b64encode(v).decode("ascii")},
            list: self._encode_list,
            tuple: lambda v: {"$tuple": self._encode_list(v)},
            set: lambda v: {"$set": self._encode_list(v)},
            frozenset: lambda v: {"$frozenset": self._encode_list(v)},
            dict: self._encode_dict,
        }
        self._decoders: dict[str, Callable[[Any], object]] = {
            "$decimal": _decode_decimal,
            "$float": _decode_float,
            "$datetime": _decode_datetime,
            "$date": dt.date.fromisoformat,
            "$time": dt.time.fromisoformat,
            "$timedelta": lambda v: dt.timedelta(*v),
            "$uuid": uuid.UUID,
            "$bytes": lambda v: base64.b64decode(v, validate=True),
            "$tuple": lambda v: tuple(self._decode_list(v)),
            "$set": lambda v: set(self._decode_list(v)),
            "$frozenset": lambda v: frozenset(self._decode_list(v)),
            "$map": lambda v: {self._decode(k): self._decode(x) for k, x in v},
        }

    # -- learning which classes may be built --------------------------------------------

    def _learn(self, cls: type) -> None:
        if cls in self._fields or not isinstance(cls, type):
            return
        if issubclass(cls, enum.Enum):
            self._classes[type_name(cls)] = cls
            self._fields[cls] = ()
            return
        if dataclasses.is_dataclass(cls):
            names = tuple(f.name for f in dataclasses.fields(cls) if f.init)
        elif issubclass(cls, tuple) and hasattr(cls, "_fields"):
            names = tuple(cls._fields)
        else:
            return
        self._classes[type_name(cls)] = cls
        self._fields[cls] = names
        try:
            hints = typing.get_type_hints(cls)
        except Exception:  # unresolvable annotations: the class itself still round-trips
            hints = {}
        for hint in hints.values():
            for reachable in _classes_in(hint):
                self._learn(reachable)

    def knows(self, cls: type) -> bool:
        return cls in self._fields

    # -- encoding -------------------------------------------------------------------------

    def encode(self, event: object) -> JSONValue:
        try:
            return self._encode(event)
        except _Unencodable as failure:
            path = type(event).__qualname__ + "".join(reversed(failure.path))
            raise EventEncodeError(
                f"{path}: cannot encode {type(failure.value)!r}; the typed codec encodes standard "
                f"types and the dataclasses, NamedTuples and Enums named in an event's annotations"
            ) from None

    def _encode(self, value: Any) -> JSONValue:
        encoder = self._encoders.get(type(value))
        if encoder is not None:
            return encoder(value)
        cls = type(value)
        if cls in self._fields:
            if isinstance(value, enum.Enum):
                return {"$enum": type_name(cls), "value": self._encode(value.value)}
            out: dict[str, JSONValue] = {_TYPE: type_name(cls)}
            for name in self._fields[cls]:
                try:
                    out[name] = self._encode(getattr(value, name))
                except _Unencodable as failure:
                    failure.path.append(f".{name}")
                    raise
            return out
        raise _Unencodable(value)

    def _encode_list(self, values: Iterable[Any]) -> list[JSONValue]:
        out = []
        for index, item in enumerate(values):
            try:
                out.append(self._encode(item))
            except _Unencodable as failure:
                failure.path.append(f"[{index}]")
                raise
        return out

    def _encode_dict(self, value: dict[Any, Any]) -> JSONValue:
        if all(type(k) is str and not k.startswith("$") for k in value):
            out = {}
            for key, item in value.items():
                try:
                    out[key] = self._encode(item)
                except _Unencodable as failure:
                    failure.path.append(f"[{key!r}]")
                    raise
            return out
        pairs = []
        for key, item in value.items():
            try:
                pairs.append([self._encode(key), self._encode(item)])
            except _Unencodable as failure:
                failure.path.append(f"[{key!r}]")
                raise
        return {"$map": pairs}

    # -- decoding -------------------------------------------------------------------------

    def decode(self, payload: JSONValue) -> object:
        try:
            return self._decode(payload)
        except EventDecodeError:
            raise
        except Exception as exc:
            raise EventDecodeError(f"malformed payload: {type(exc).__name__}: {exc}") from None

    def _decode(self, value: JSONValue) -> Any:
        if type(value) is list:
            return self._decode_list(value)
        if type(value) is not dict:
            return value
        if _TYPE in value:
            return self._decode_object(value)
        if len(value) >= 1:
            tag = next(iter(value))
            if tag.startswith("$"):
                if tag == "$enum":
                    return self._decode_enum(value)
                decoder = self._decoders.get(tag)
                if decoder is None or len(value) != 1:
                    raise EventDecodeError(f"unknown type tag {tag!r}")
                return decoder(value[tag])
        return {key: self._decode(item) for key, item in value.items()}

    def _decode_list(self, values: list[JSONValue]) -> list[Any]:
        if type(values) is not list:
            raise EventDecodeError(f"expected a JSON list, got {type(values).__name__}")
        return [self._decode(item) for item in values]

    def _decode_object(self, value: dict[str, JSONValue]) -> object:
        cls = self._class_named(value[_TYPE])
        fields = {key: self._decode(item) for key, item in value.items() if key != _TYPE}
        unknown = set(fields) - set(self._fields[cls])
        if unknown:
            raise EventDecodeError(f"{value[_TYPE]} has no field {', '.join(sorted(unknown))}")
        try:
            return cls(**fields)
        except TypeError as exc:
            raise EventDecodeError(f"cannot build {value[_TYPE]}: {exc}") from None

    def _decode_enum(self, value: dict[str, JSONValue]) -> enum.Enum:
        cls = self._class_named(value["$enum"])
        if not issubclass(cls, enum.Enum):
            raise EventDecodeError(f"{value['$enum']} is not an Enum")
        try:
            return cls(self._decode(value["value"]))
        except ValueError as exc:
            raise EventDecodeError(str(exc)) from None

    def _class_named(self, name: object) -> type:
        cls = self._classes.get(name) if isinstance(name, str) else None
        if cls is None:
            raise EventDecodeError(f"unknown type {name!r}: not an event class or a type reachable from one")
        return cls


def _same(value: Any) -> Any:
    return value


def _encode_float(value: float) -> JSONValue:
    if math.isfinite(value):
        return value
    return {"$float": repr(value)}


def _decode_float(text: str) -> float:
    if text not in ("nan", "inf", "-inf"):
        raise EventDecodeError(f"bad $float {text!r}")
    return float(text)


def _decode_decimal(text: str) -> Decimal:
    if type(text) is not str:
        raise EventDecodeError(f"bad $decimal {text!r}")
    try:
        return Decimal(text)
    except InvalidOperation:
        raise EventDecodeError(f"bad $decimal {text!r}") from None


def _encode_datetime(value: dt.datetime) -> JSONValue:
    out: dict[str, JSONValue] = {"$datetime": value.isoformat()}
    zone = getattr(value.tzinfo, "key", None)  # a zoneinfo.ZoneInfo keeps its name, not just the offset
    if zone is not None:
        out = {"$datetime": [value.replace(tzinfo=None).isoformat(), zone, value.fold]}
    return out


def _decode_datetime(value: Any) -> dt.datetime:
    if type(value) is str:
        return dt.datetime.fromisoformat(value)
    from zoneinfo import ZoneInfo

    local, zone, fold = value
    return dt.datetime.fromisoformat(local).replace(tzinfo=ZoneInfo(zone), fold=fold)


def _classes_in(hint: Any) -> Iterable[type]:
    """The classes named anywhere in an annotation: ``list[Line] | None`` gives Line, list, NoneType."""
    if isinstance(hint, type):
        yield hint
    for arg in typing.get_args(hint):
        yield from _classes_in(arg)
