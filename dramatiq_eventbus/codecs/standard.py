"""The standard types JSON cannot tell apart, each as a one-key tagged object.

Each encoder takes a value of exactly its type; each decoder takes the tagged object and
checks it to the last key, raising :class:`CodecFailure` for anything it would not have
written itself. Strings are parsed only by the standard library's exact parsers, and
numbers written in decimal are bounded, so a payload cannot make a worker spin.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import math
import pathlib
import re
import uuid
from collections.abc import Callable
from decimal import Decimal, InvalidOperation
from fractions import Fraction
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

from ..untrusted import shown
from .base import JSONValue
from .failure import CodecFailure

Encoder = Callable[[Any], JSONValue]
TagDecoder = Callable[[dict[str, Any]], Any]
T = TypeVar("T")

#: Beyond this, an int travels as hex: Python refuses to print or parse more than 4300
#: decimal digits by default (CVE-2020-10735), and hex has no such limit.
BIG_INT = 1 << 4096
_HEX_INT = re.compile(r"-?0x[0-9a-f]+")
#: The longest numerator or denominator of a $fraction, in hex digits (16,384 bits): Fraction()
#: reduces by gcd, whose cost grows with the square of the length (1.6 MB of hex: 8.4 s).
MAX_FRACTION_HEX_DIGITS = 4096
_FRACTION = re.compile(
    rf"(-?(?:[0-9]{{1,1300}}|0x[0-9a-f]{{1,{MAX_FRACTION_HEX_DIGITS}}}))"
    rf"/((?:[0-9]{{1,1300}}|0x[0-9a-f]{{1,{MAX_FRACTION_HEX_DIGITS}}}))"
)
_TIMEDELTA = re.compile(r"(?:(-?[0-9]{1,9}) days?, )?([0-9]{1,2}):([0-9]{2}):([0-9]{2})(?:\.([0-9]{6}))?")
_ZONE_KEY = re.compile(r"[A-Za-z0-9_+\-]+(?:/[A-Za-z0-9_+\-]+)*")
_FLOATS = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}

PATH_TAGS: dict[type, str] = {
    pathlib.PurePosixPath: "$pureposixpath",
    pathlib.PureWindowsPath: "$purewindowspath",
    pathlib.PosixPath: "$posixpath",
    pathlib.WindowsPath: "$windowspath",
}


def only(tag: str, payload: dict[str, Any], *optional: str) -> Any:
    """The tag's value, after checking ``payload`` has no key but the tag and ``optional``."""
    if len(payload) > 1:
        for key in payload:
            if key != tag and key not in optional:
                raise CodecFailure(f"unexpected key {shown(key)} in a {tag} object")
    return payload[tag]


def text(tag: str, value: Any) -> str:
    if type(value) is not str:
        raise CodecFailure(f"{tag} must hold a string, not {type(value).__name__}")
    return value


# -- numbers ---------------------------------------------------------------------------------


def encode_int(value: int) -> JSONValue:
    if -BIG_INT < value < BIG_INT:
        return value
    return {"$int": hex(value)}


def decode_int(payload: dict[str, Any]) -> int:
    digits = text("$int", only("$int", payload))
    if not _HEX_INT.fullmatch(digits):
        raise CodecFailure(f"bad $int {digits[:40]!r}: expected hex digits like '0x1f'")
    return int(digits, 16)


def encode_float(value: float) -> JSONValue:
    if math.isfinite(value):
        return value
    return {"$float": repr(value)}


def decode_float(payload: dict[str, Any]) -> float:
    spelled = text("$float", only("$float", payload))
    if spelled not in _FLOATS:
        raise CodecFailure(f"bad $float {spelled[:40]!r}: expected 'nan', 'inf' or '-inf'")
    return _FLOATS[spelled]


def encode_decimal(value: Decimal) -> JSONValue:
    return {"$decimal": str(value)}


def decode_decimal(payload: dict[str, Any]) -> Decimal:
    digits = payload["$decimal"]
    if len(payload) != 1 or type(digits) is not str:  # the common case pays for one check
        digits = text("$decimal", only("$decimal", payload))
    try:
        return Decimal(digits)
    except InvalidOperation:
        raise CodecFailure(f"bad $decimal {digits[:40]!r}") from None


def encode_complex(value: complex) -> JSONValue:
    return {"$complex": [encode_float(value.real), encode_float(value.imag)]}


def decode_complex(payload: dict[str, Any]) -> complex:
    parts = only("$complex", payload)
    if type(parts) is not list or len(parts) != 2:
        raise CodecFailure("$complex must hold [real, imag]")
    real, imag = (decode_float(p) if type(p) is dict else p for p in parts)
    if type(real) not in (float, int) or type(imag) not in (float, int):
        raise CodecFailure("$complex must hold two numbers")
    return complex(real, imag)


def _int_text(value: int) -> str:
    return str(value) if -BIG_INT < value < BIG_INT else hex(value)


def _parse_int(spelled: str) -> int:
    return int(spelled, 16) if "x" in spelled else int(spelled)


def encode_fraction(value: Fraction) -> JSONValue:
    if max(abs(value.numerator), value.denominator).bit_length() > 4 * MAX_FRACTION_HEX_DIGITS:
        # What a worker would refuse: fail at publish() instead.
        raise CodecFailure(f"a Fraction of more than {4 * MAX_FRACTION_HEX_DIGITS} bits cannot be sent")
    return {"$fraction": f"{_int_text(value.numerator)}/{_int_text(value.denominator)}"}


def decode_fraction(payload: dict[str, Any]) -> Fraction:
    spelled = text("$fraction", only("$fraction", payload))
    match = _FRACTION.fullmatch(spelled)
    if match is None:
        raise CodecFailure(f"bad $fraction {spelled[:40]!r}: expected 'numerator/denominator'")
    denominator = _parse_int(match[2])
    if denominator == 0:
        raise CodecFailure("bad $fraction: the denominator is 0")
    return Fraction(_parse_int(match[1]), denominator)


# -- time ------------------------------------------------------------------------------------

_ZONES: dict[str, ZoneInfo] = {}


def _zone(key: Any) -> ZoneInfo:
    zone = _ZONES.get(key) if type(key) is str else None
    if zone is not None:
        return zone
    if type(key) is not str or not _ZONE_KEY.fullmatch(key):
        raise CodecFailure(f"bad time zone {shown(key)}")
    try:
        zone = ZoneInfo(key)
    except Exception:  # ZoneInfoNotFoundError, or ValueError for a key outside the tz database
        raise CodecFailure(f"unknown time zone {shown(key)}") from None
    _ZONES[key] = zone
    return zone


def _zone_fields(value: dt.datetime | dt.time, out: dict[str, JSONValue]) -> dict[str, JSONValue]:
    """Add what ``isoformat()`` leaves out: the zone's name and ``fold``."""
    zone = value.tzinfo
    if zone is not None:
        if type(zone) is ZoneInfo:
            if zone.key is None:  # loaded from a file: it has no name another process could look up
                raise CodecFailure("cannot encode a ZoneInfo made from a file; it has no key")
            out["tz"] = zone.key
        elif type(zone) is dt.timezone:
            arguments = zone.__getinitargs__()  # type: ignore[attr-defined]
            if len(arguments) == 2:  # timezone(offset, "CET"): the name is part of the value
                out["tzname"] = arguments[1]
        else:
            raise CodecFailure(
                f"cannot encode tzinfo {type(zone)!r}: use zoneinfo.ZoneInfo or datetime.timezone, "
                f"or register_type the class that holds it"
            )
    if value.fold:
        out["fold"] = 1
    return out


def _with_zone(value: Any, payload: dict[str, Any]) -> Any:
    zone = payload.get("tz")
    if zone is not None:
        # The wall time and the zone are what was published; the offset in the ISO text is
        # there to be read, and replace() keeps the wall time.
        value = value.replace(tzinfo=_zone(zone))
    name = payload.get("tzname")
    if name is not None:
        offset = value.tzinfo.utcoffset(None) if value.tzinfo is not None else None
        if type(name) is not str or offset is None or zone is not None:
            raise CodecFailure("bad tzname: it needs a string and a fixed offset in the ISO text")
        value = value.replace(tzinfo=dt.timezone(offset, name))
    fold = payload.get("fold", 0)
    if fold not in (0, 1) or type(fold) is not int:
        raise CodecFailure(f"bad fold {shown(fold)}: expected 0 or 1")
    return value.replace(fold=1) if fold else value


def encode_datetime(value: dt.datetime) -> JSONValue:
    out: dict[str, JSONValue] = {"$datetime": value.isoformat()}
    if value.tzinfo is None and not value.fold:
        return out
    return _zone_fields(value, out)


def _iso(tag: str, payload: dict[str, Any], parse: Callable[[str], T]) -> T:
    """The ISO 8601 value of a ``$datetime`` or ``$time`` object, before its zone fields."""
    spelled = text(tag, only(tag, payload, "tz", "tzname", "fold"))
    try:
        return parse(spelled)
    except ValueError:
        raise CodecFailure(f"bad {tag} {spelled[:40]!r}: expected ISO 8601") from None


def decode_datetime(payload: dict[str, Any]) -> dt.datetime:
    value = _iso("$datetime", payload, dt.datetime.fromisoformat)
    if len(payload) == 1:
        return value
    if len(payload) == 2 and "tz" in payload:
        # The usual aware datetime, its wall time put in its zone as replace() would: combine()
        # takes 0.17 µs, replace(tzinfo=...) 0.7, most of what decoding such a datetime cost.
        return dt.datetime.combine(value.date(), value.time(), _zone(payload["tz"]))
    result: dt.datetime = _with_zone(value, payload)
    return result


def encode_time(value: dt.time) -> JSONValue:
    return _zone_fields(value, {"$time": value.isoformat()})


def decode_time(payload: dict[str, Any]) -> dt.time:
    value = _iso("$time", payload, dt.time.fromisoformat)
    result: dt.time = _with_zone(value, payload)
    return result


def encode_date(value: dt.date) -> JSONValue:
    return {"$date": value.isoformat()}


def decode_date(payload: dict[str, Any]) -> dt.date:
    spelled = text("$date", only("$date", payload))
    try:
        return dt.date.fromisoformat(spelled)
    except ValueError:
        raise CodecFailure(f"bad $date {spelled[:40]!r}: expected ISO 8601") from None


def encode_timedelta(value: dt.timedelta) -> JSONValue:
    return {"$timedelta": str(value)}  # "1 day, 2:03:04.000005": exact and readable


def decode_timedelta(payload: dict[str, Any]) -> dt.timedelta:
    spelled = text("$timedelta", only("$timedelta", payload))
    match = _TIMEDELTA.fullmatch(spelled)
    if match is None:
        raise CodecFailure(f"bad $timedelta {spelled[:40]!r}: expected '[D day[s], ]H:MM:SS[.ffffff]'")
    days, hours, minutes, seconds, micros = match.groups()
    try:
        return dt.timedelta(
            days=int(days or 0),
            hours=int(hours),
            minutes=int(minutes),
            seconds=int(seconds),
            microseconds=int(micros or 0),
        )
    except OverflowError:
        raise CodecFailure(f"bad $timedelta {spelled[:40]!r}: out of range") from None


# -- identifiers, bytes, paths ------------------------------------------------------------------


def encode_uuid(value: uuid.UUID) -> JSONValue:
    return {"$uuid": str(value)}


def decode_uuid(payload: dict[str, Any]) -> uuid.UUID:
    spelled = text("$uuid", only("$uuid", payload))
    try:
        return uuid.UUID(spelled)
    except ValueError:
        raise CodecFailure(f"bad $uuid {spelled[:40]!r}") from None


def encode_bytes(value: bytes) -> JSONValue:
    return {"$bytes": base64.b64encode(value).decode("ascii")}


def encode_bytearray(value: bytearray) -> JSONValue:
    return {"$bytearray": base64.b64encode(value).decode("ascii")}


def _base64(tag: str, payload: dict[str, Any]) -> bytes:
    spelled = text(tag, only(tag, payload))
    try:
        return base64.b64decode(spelled, validate=True)
    except (binascii.Error, ValueError):
        raise CodecFailure(f"bad {tag}: not base64") from None


def decode_bytes(payload: dict[str, Any]) -> bytes:
    return _base64("$bytes", payload)


def decode_bytearray(payload: dict[str, Any]) -> bytearray:
    return bytearray(_base64("$bytearray", payload))


def encode_path(value: pathlib.PurePath) -> JSONValue:
    return {PATH_TAGS[type(value)]: str(value)}


def path_decoder(cls: type[pathlib.PurePath], tag: str) -> TagDecoder:
    def decode(payload: dict[str, Any]) -> pathlib.PurePath:
        spelled = text(tag, only(tag, payload))
        try:
            return cls(spelled)
        except Exception:  # a WindowsPath cannot be made on POSIX, and the reverse
            raise CodecFailure(f"cannot make a {cls.__name__} on this system") from None

    return decode


#: Exact type -> encoder, for the standard types that need no recursion.
LEAF_ENCODERS: dict[type, Encoder] = {
    int: encode_int,
    float: encode_float,
    complex: encode_complex,
    Decimal: encode_decimal,
    Fraction: encode_fraction,
    dt.datetime: encode_datetime,
    dt.date: encode_date,
    dt.time: encode_time,
    dt.timedelta: encode_timedelta,
    uuid.UUID: encode_uuid,
    bytes: encode_bytes,
    bytearray: encode_bytearray,
    **{cls: encode_path for cls in PATH_TAGS},
}

#: Tag -> decoder, for the same types.
LEAF_DECODERS: dict[str, TagDecoder] = {
    "$int": decode_int,
    "$float": decode_float,
    "$complex": decode_complex,
    "$decimal": decode_decimal,
    "$fraction": decode_fraction,
    "$datetime": decode_datetime,
    "$date": decode_date,
    "$time": decode_time,
    "$timedelta": decode_timedelta,
    "$uuid": decode_uuid,
    "$bytes": decode_bytes,
    "$bytearray": decode_bytearray,
    **{tag: path_decoder(cls, tag) for cls, tag in PATH_TAGS.items()},
}

#: Tag -> the type its decoder returns: a field whose annotation admits none of them refuses
#: such an object before decoding it.
LEAF_TYPES: dict[str, type] = {
    "$int": int,
    "$float": float,
    "$complex": complex,
    "$decimal": Decimal,
    "$fraction": Fraction,
    "$datetime": dt.datetime,
    "$date": dt.date,
    "$time": dt.time,
    "$timedelta": dt.timedelta,
    "$uuid": uuid.UUID,
    "$bytes": bytes,
    "$bytearray": bytearray,
    **{tag: cls for cls, tag in PATH_TAGS.items()},
}
