"""The typed JSON codec: readable payloads that keep their Python types.

An event becomes a JSON object naming its class, with one key per field; every value
JSON cannot tell apart carries a tag::

    {"$type": "shop.orders.events:OrderCreated", "order_id": "123",
     "total": {"$decimal": "100.00"}, "placed_at": {"$datetime": "2026-11-27T10:00:00+00:00"},
     "lines": [{"$type": "shop.orders.events:OrderLine", "sku": "book", "quantity": 2, ...}]}

Decoding builds only the classes in its :class:`~.catalog.Catalog`, checks each field
against its annotation, and never imports a module a payload names, so a payload cannot
make a worker run code. Encoding applies the same checks, so an event a worker would
refuse fails ``publish()`` instead.

Speed comes from doing the thinking at configure time: one table maps each exact type to
its encoder, one maps each tag to its decoder, and each record class gets a plan of its
fields with their checks. Failure paths (``OrderCreated.lines[2].sku``) are built only
when something fails.
"""

from __future__ import annotations

import enum
import logging
import sys
import threading
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

from ..errors import EventDecodeError, EventEncodeError
from ..untrusted import SHOWN_CHARACTERS, escaped, shown
from .base import JSONValue
from .catalog import Catalog, Entry
from .custom import CustomType, CustomTypes
from .failure import CodecFailure
from .names import type_name
from .pickling import TAG as PICKLE_TAG
from .pickling import PickleCodec, SecretKeys, pickle_keys
from .shapes import Shape, admits, admitted_classes, compile_check, mismatch
from .standard import LEAF_DECODERS, LEAF_ENCODERS, LEAF_TYPES, Encoder, TagDecoder, only
from .structs import EnumPlan, RecordPlan

__all__ = ["TypedCodec", "type_name"]

logger = logging.getLogger("dramatiq_eventbus.codecs")

TYPE = "$type"
_SCALARS = frozenset({str, int, float, bool, type(None)})
_CONTAINERS = frozenset({dict, list})
_SHORT_LIST = 32  # decoded by a loop rather than a comprehension: see decode_list
_UNSET: Any = object()
_WHAT_IT_ENCODES = (
    "the typed codec encodes the standard types, and the dataclasses, NamedTuples, Enums, attrs classes and "
    "pydantic models that an event's annotations reach or that were given to register_type"
)


def _same(value: Any) -> Any:
    return value


def _cannot(value: object) -> CodecFailure:
    return CodecFailure(f"cannot encode {type(value)!r}")


def _reason(exc: Exception) -> str:
    """An exception raised while decoding, for an error text: its text may quote the payload."""
    return f"{type(exc).__name__}: {escaped(str(exc), 300)}"


def _misfit(shape: Shape | None, value: object) -> CodecFailure:
    found = mismatch(shape, value)
    step, problem = found if found is not None else ("", f"expected {shape.text if shape else '?'}")
    failure = CodecFailure(problem)
    return failure.at(step) if step else failure


# -- decoding JSON's containers -----------------------------------------------------------------
#
# One function per shape a decoded value can have: any JSON value, an object (tagged or
# plain), a list, a $map, and the members of a $tuple, $set or $frozenset. Each takes the
# codec's tag table and hands it down, so a value at any depth is decoded by the same
# table; the record, Enum and custom decoders in it call back into these for what they hold.
# The loops test an item's type inline and keep scalars as they are: most items are
# scalars, and a call per item would cost more than the decoding.

Tags = dict[str, TagDecoder]


def decode_any(raw: Any, tags: Tags) -> Any:
    """Any JSON value, as :func:`json.loads` makes them."""
    kind = type(raw)
    if kind is dict:
        return decode_object(raw, tags)
    if kind is list:
        return decode_list(raw, tags)
    if kind in _SCALARS:
        return raw
    raise CodecFailure(f"not a JSON value: {kind.__name__}")


def decode_object(raw: dict[str, Any], tags: Tags) -> Any:
    """A JSON object: the value its tag describes when its first key is one, else a dict.

    Parameters:
      raw(dict[str, Any]): The object.
      tags(Tags): The codec's decoders by tag, the containers' among them.

    Raises:
      CodecFailure: An unknown tag, or a tagged object its decoder refused.
    """
    for key in raw:  # only the first key: a tag comes first in everything the codec writes
        decoder = tags.get(key)
        if decoder is None:
            if key[:1] == "$":
                raise CodecFailure(f"unknown type tag {shown(key)}")
            break  # a plain object: below
        # A decoder meets payloads nobody has checked: anything else it raises (a TypeError
        # on a malformed value, say) still means a bad payload, and must say where it is.
        try:
            return decoder(raw)
        except (CodecFailure, RecursionError):
            raise
        except Exception as exc:
            raise CodecFailure(f"bad {key} object: {_reason(exc)}") from None
    else:
        return {}
    # A plain object, a dict of its decoded values: decoded here rather than by a function of
    # its own, so that nested dicts cost one call per level, as encoding them does, and decode
    # as deeply as they encode (990 levels, not 490).
    if _SCALARS.issuperset(map(type, raw.values())) and "$" not in "".join(raw):
        return raw.copy()  # nothing to decode: copied in C, 10-20 times faster than the loop below
    tag = next((key for key in raw if key[:1] == "$"), None)
    if tag is not None:
        # A tag after other keys: something on the way reordered the object. Put it first
        # again; the other keys keep their order, so errors name the same key they would have.
        return decode_object({tag: raw[tag], **raw}, tags)
    out: dict[str, Any] = {}
    key = ""
    try:
        for key, item in raw.items():
            kind = type(item)
            out[key] = decode_object(item, tags) if kind is dict else decode_list(item, tags) if kind is list else item
    except CodecFailure as failure:
        raise failure.at(f"[{shown(key)}]") from None
    return out


def decode_list(raw: list[Any], tags: Tags) -> list[Any]:
    """A JSON list, item by item; a CodecFailure if ``raw`` is no list."""
    if type(raw) is not list:
        raise CodecFailure(f"expected a JSON list, got {type(raw).__name__}")
    if _SCALARS.issuperset(map(type, raw)):
        # Most lists hold only scalars: checked and copied in C. A copy, not ``raw`` itself,
        # so that a handler changing its event's list does not change the message a retry sends.
        return raw.copy()
    if len(raw) <= _SHORT_LIST:
        out: list[Any] = []
        append = out.append
        try:
            for item in raw:
                kind = type(item)
                append(decode_object(item, tags) if kind is dict else decode_list(item, tags) if kind is list else item)
        except CodecFailure as failure:
            raise failure.at(f"[{len(out)}]") from None
        return out
    # A long list: a comprehension, not a loop of appends, takes a quarter less time per item
    # (measured on a list of numbers and empty lists, the shape that costs most per byte). Not
    # for short ones: until Python 3.12 a comprehension is a call of its own, which would halve
    # how deeply lists may nest before Python's recursion limit (990 levels encode, and decode
    # so). The container being decoded is kept, so that a failure can say where it is.
    current = None
    try:
        return [
            (decode_object(current := item, tags) if type(item) is dict else decode_list(current := item, tags))
            if type(item) in _CONTAINERS
            else item
            for item in raw
        ]
    except CodecFailure as failure:
        index = next(index for index, item in enumerate(raw) if item is current)
        raise failure.at(f"[{index}]") from None


def decode_members(tag: str, raw: dict[str, Any], tags: Tags) -> list[Any]:
    """The decoded list a ``$tuple``, ``$set`` or ``$frozenset`` object (``tag``) holds; not a
    copy when nothing in it needed decoding (the caller builds its own container of them)."""
    members = only(tag, raw)
    if tag == "$tuple":
        return decode_list(members, tags)
    if type(members) is list:
        # Members of a set are nearly always scalars, and one pass in C tells both that they
        # need no decoding and that their hashes cannot crowd: ints, by their size (a set of
        # 200 ints: 4 µs, against 11 for a scan of types, then of the smallest and largest),
        # and other scalars by their types.
        if _small_ints(members):
            return members
        kinds = set(map(type, members))
        if kinds <= _SCALARS:
            check_hashes_spread(tag, members, kinds)
            return members
    members = decode_list(members, tags)
    check_hashes_spread(tag, members)
    return members


#: The most members of one set, or keys of one map, that may share a hash. Ints that differ by
#: a multiple of 2**61 - 1 all hash alike, and a set of n of them costs n**2 comparisons while
#: holding the GIL (40,000 of them, 1 MB: 7.9 s, with every other thread of the worker stalled).
MAX_SAME_HASH = 16
_HASH_MODULUS = sys.hash_info.modulus
_HASH_BITS = _HASH_MODULUS.bit_length() - 1  # an int of at most this many bits hashes to itself


def _small_ints(members: list[Any]) -> bool:
    """Whether every member is an int (or a bool) that hashes to itself: none crowds another."""
    try:
        return max(map(int.bit_length, members), default=0) <= _HASH_BITS
    except TypeError:  # not an int
        return False


def check_hashes_spread(tag: str, members: list[Any], kinds: set[type] | None = None) -> None:
    """Refuse members that would turn a set or dict into a linear search; linear in their number.

    Parameters:
      tag(str): The members' tag, for the error.
      members(list): The decoded members.
      kinds(set[type] | None): Their types, when the caller has them already.

    Raises:
      CodecFailure: Too many members share a hash.
    """
    if len(members) <= MAX_SAME_HASH:
        return
    # The usual members, told apart in C: strings, whose hashes are salted per process (unless
    # PYTHONHASHSEED fixes them), and ints too small to wrap around the modulus, which hash to
    # themselves (but -1, which hashes as -2 does).
    if kinds is None:
        kinds = set(map(type, members))
    if kinds == {str} and sys.flags.hash_randomization:
        return
    if kinds == {int} and min(members) > -_HASH_MODULUS and max(members) < _HASH_MODULUS:
        return
    try:
        crowded = max(Counter(map(hash, members)).values())
    except TypeError:
        return  # an unhashable member: building the set says so
    if crowded > MAX_SAME_HASH:
        raise CodecFailure(f"{tag} holds {crowded} members that hash alike (at most {MAX_SAME_HASH})")


def decode_map(raw: dict[str, Any], tags: Tags) -> dict[Any, Any]:
    """A ``$map`` object: a dict whose keys JSON could not hold, from its [key, value] pairs."""
    pairs = only("$map", raw)
    if type(pairs) is not list:
        raise CodecFailure("$map must hold a list of [key, value] pairs")
    decoded: list[tuple[Any, Any]] = []
    for index, pair in enumerate(pairs):
        if type(pair) is not list or len(pair) != 2:
            raise CodecFailure(f"$map item {index} is not a [key, value] pair")
        try:
            decoded.append((decode_any(pair[0], tags), decode_any(pair[1], tags)))
        except CodecFailure as failure:
            raise failure.at(f"<pair {index}>") from None
    check_hashes_spread("$map", [key for key, _ in decoded])
    out: dict[Any, Any] = {}
    for index, (key, value) in enumerate(decoded):
        try:
            out[key] = value
        except TypeError:
            raise CodecFailure(f"$map key {index} is a {type(key).__name__}, which cannot be a key") from None
    return out


def _uncached_flag(cls: type[enum.Enum], value: Any) -> enum.Enum:
    """The Flag member or combination of ``value``, without leaving it in the class's cache.

    ``Flag`` keeps every combination it is asked for in ``_value2member_map_``, for the life
    of the process: decoding 2**32 distinct values a payload names would keep 2**32 objects.
    What this call adds is removed again; the named members are never touched, as they were
    there before.
    """
    cache = getattr(cls, "_value2member_map_", None)
    try:
        known = not isinstance(cache, dict) or value in cache
    except TypeError:  # unhashable: the class refuses it below
        known = True
    if known:
        return cls(value)
    assert isinstance(cache, dict)
    before = set(cache)
    member = cls(value)
    for added in cache.keys() - before:
        cache.pop(added, None)
    return member


def _set_late(obj: Any, qualname: str, name: str, value: Any, default: Callable[[], Any] | None) -> None:
    """Give ``obj`` the payload's ``value`` of a field its ``__init__`` does not take (``init=False``).

    What the class computed itself wins: a payload cannot overwrite the value ``__init__`` or
    ``__post_init__`` gave the field, unless that value is the field's plain default, which
    the publisher may have changed after building the event.

    Raises:
      CodecFailure: The payload's value differs from the one the class computed.
    """
    current = getattr(obj, name, _UNSET)
    try:
        settable = current is _UNSET or current == value or (default is not None and current == default())
    except Exception:  # an __eq__ that raises: the class's value cannot be shown to be a default
        settable = False
    if not settable:
        raise CodecFailure(
            f"{qualname}.{name} is computed by the class (init=False) as {shown(current)}, and the payload's "
            f"{shown(value)} differs"
        )
    if current is not value:
        object.__setattr__(obj, name, value)


def _built_again(encode: Encoder, decode: TagDecoder) -> Encoder:
    """``encode``, checked by building the record again from its output, as a worker will.

    Only for classes with ``init=False`` fields, whose values a worker refuses when they
    contradict what the class computes: an event changed so after it was built fails at
    ``publish()`` rather than on the worker.
    """

    def encode_checked(obj: Any) -> JSONValue:
        out = encode(obj)
        decode(out)
        return out

    return encode_checked


class TypedCodec:
    """Readable, type-preserving JSON: the default codec.

    Parameters:
      event_classes(Iterable[type]): The classes publish() may send. They, the records
        and Enums reachable from their field annotations, and the ``custom_types`` are
        the only classes decoding will build.
      custom_types(CustomTypes | None): The bus's ``register_type`` registrations.
      secret_key(str | bytes | None): Signs fallback pickles; needed by ``pickle_fallback``.
      pickle_fallback(bool): Send an event holding a value this codec cannot represent as
        a signed pickle (with one warning per event class) instead of raising TypeError;
        and accept such pickles when decoding. Off, this codec unpickles nothing.

    Raises:
      ConfigurationError: ``pickle_fallback`` without a secret key; two classes with one
        wire name; a class that would be named after ``__main__``.
    """

    name = "typed"

    def __init__(
        self,
        event_classes: Iterable[type] = (),
        custom_types: CustomTypes | None = None,
        *,
        secret_key: SecretKeys | None = None,
        pickle_fallback: bool = False,
    ) -> None:
        self.catalog = Catalog(event_classes, custom_types if custom_types is not None else CustomTypes())
        self.event_classes = self.catalog.event_classes
        self._events = frozenset(self.event_classes)
        self._fallback: PickleCodec | None = None
        if pickle_fallback:
            self._fallback = PickleCodec(pickle_keys(secret_key, needed_by="pickle_fallback=True"), self.event_classes)
        self._warned: set[type] = set()
        self._warned_lock = threading.Lock()
        self._encoders: dict[type, Encoder] = {str: _same, bool: _same, type(None): _same, **LEAF_ENCODERS}
        self._tags: Tags = dict(LEAF_DECODERS)
        self._records: dict[str, TagDecoder] = {}
        self._enums: dict[str, EnumPlan] = {}
        self._customs: dict[str, tuple[type, Any]] = {}
        self._install_container_encoders()
        self._install_container_decoders()
        self._produces = self._tag_types()
        # The misfits of a field depend only on the classes its shape admits, which few fields
        # differ in: computed once per set of classes (with the names of each entry, gathered once),
        # configure() with 10,000 one-handler event classes takes 3.8 s, not 77 s (measured here:
        # every field of every class was checked against every tag, quadratic in the classes).
        self._misfits: dict[tuple[type, ...] | None, frozenset[str]] = {}
        names: dict[int, list[str]] = {}
        for name, named in self.catalog.by_name.items():
            names.setdefault(id(named), []).append(name)
        for entry in self.catalog.by_class.values():
            self._install(entry, names.get(id(entry), []))

    # -- the public interface -----------------------------------------------------------------

    def knows(self, cls: type) -> bool:
        """Whether ``cls`` is one of this codec's event classes, which encode() takes."""
        return cls in self._events

    def encode(self, event: object) -> JSONValue:
        """The event as a JSON value.

        Raises:
          EventEncodeError: A TypeError naming the path to the value that cannot be encoded,
            e.g. ``OrderCreated.lines[2].sku: cannot encode <class 'x.Y'>``; unless
            ``pickle_fallback`` is on, which sends such an event as a signed pickle.
        """
        cls = type(event)
        if cls not in self._events:
            raise EventEncodeError(
                f"{cls.__qualname__} is not an event class of this codec: configure() a handler for it"
            )
        try:
            return self._encode_any(event)
        except CodecFailure as failure:
            problem = failure.render(cls.__qualname__)
            if failure.problem.startswith("cannot encode <"):
                problem += f"; {_WHAT_IT_ENCODES}"
        except RecursionError:
            problem = f"{cls.__qualname__}: nested too deeply, or holds itself"
        if self._fallback is None:
            raise EventEncodeError(problem)
        self._warn_once(cls, problem)
        return self._fallback.encode(event)

    def decode(self, payload: JSONValue) -> object:
        """The event a payload describes, built from the same classes.

        Raises:
          EventDecodeError: Naming the problem and its path: an unknown type, a malformed
            payload, a field of the wrong type, a missing or unknown field.
        """
        if type(payload) is not dict:
            raise EventDecodeError(f"an event payload is a JSON object with a {TYPE}, not a {type(payload).__name__}")
        if PICKLE_TAG in payload:
            if self._fallback is None:
                raise EventDecodeError(
                    f"a {PICKLE_TAG} payload, refused: this typed codec unpickles nothing unless pickle_fallback is on"
                )
            return self._fallback.decode(payload)
        name = payload.get(TYPE)
        entry = self.catalog.by_name.get(name) if type(name) is str else None
        root = entry.cls.__qualname__ if entry is not None else "event"
        try:
            event = decode_object(payload, self._tags)
        except CodecFailure as failure:
            raise EventDecodeError(failure.render(root)) from None
        except RecursionError:
            raise EventDecodeError(f"{root}: payload nested too deeply") from None
        if type(event) not in self._events:
            raise EventDecodeError(f"the payload holds a {type(event).__qualname__}, which is not an event class")
        return event

    def wire_name(self, cls: type) -> str:
        """The name ``cls`` goes by in this codec's payloads."""
        return self.catalog.name_of(cls)

    def _warn_once(self, cls: type, problem: str) -> None:
        with self._warned_lock:
            if cls in self._warned:
                return
            self._warned.add(cls)
        logger.warning(
            "%s cannot travel as typed JSON (%s); it is sent as a signed pickle instead, since pickle_fallback is "
            "on. This is logged once per event class.",
            cls.__qualname__,
            problem,
        )

    # -- the generic machinery ----------------------------------------------------------------

    def _install_container_encoders(self) -> None:
        """Put JSON's containers, and sets and tuples, in the encoder table."""
        encoders = self._encoders
        get_encoder = encoders.get

        def encode_any(value: Any) -> JSONValue:
            encoder = get_encoder(type(value))
            if encoder is None:
                raise _cannot(value)
            return encoder(value)

        def encode_list(values: Iterable[Any]) -> list[JSONValue]:
            out: list[JSONValue] = []
            append = out.append
            try:
                for item in values:
                    encoder = get_encoder(type(item))
                    if encoder is None:
                        raise _cannot(item)
                    append(encoder(item))
            except CodecFailure as failure:
                raise failure.at(f"[{len(out)}]") from None
            return out

        def encode_members(values: Iterable[Any]) -> list[JSONValue]:
            # Sets have no indexes; {2} says "the third member, in iteration order".
            out: list[JSONValue] = []
            try:
                for item in values:
                    out.append(encode_any(item))
            except CodecFailure as failure:
                raise failure.at(f"{{{len(out)}}}") from None
            return out

        def encode_dict(value: dict[Any, Any]) -> JSONValue:
            for key in value:
                if type(key) is not str or key[:1] == "$":
                    return encode_map(value)
            out: dict[str, JSONValue] = {}
            key = None
            try:
                for key, item in value.items():
                    encoder = get_encoder(type(item))
                    if encoder is None:
                        raise _cannot(item)
                    out[key] = encoder(item)
            except CodecFailure as failure:
                raise failure.at(f"[{key!r}]") from None
            return out

        def encode_map(value: dict[Any, Any]) -> JSONValue:
            # Keys JSON cannot hold (int, tuple, Enum, UUID, or a str starting with "$").
            pairs: list[JSONValue] = []
            for key, item in value.items():
                try:
                    encoded_key = encode_any(key)
                except CodecFailure as failure:
                    raise failure.at(f"<key {len(pairs)}>") from None
                try:
                    pairs.append([encoded_key, encode_any(item)])
                except CodecFailure as failure:
                    raise failure.at(f"[{key!r}]") from None
            return {"$map": pairs}

        encoders[list] = encode_list
        encoders[dict] = encode_dict
        encoders[tuple] = lambda value: {"$tuple": encode_list(value)}
        encoders[set] = lambda value: {"$set": encode_members(value)}
        encoders[frozenset] = lambda value: {"$frozenset": encode_members(value)}
        self._encode_any = encode_any

    def _install_container_decoders(self) -> None:
        """Put the containers' tags, and the three that lead to the catalog's classes, in the tag table.

        The containers' entries are this module's decoders, bound to this codec's table.
        """
        tags = self._tags
        tags["$tuple"] = lambda raw: tuple(decode_members("$tuple", raw, tags))
        tags["$set"] = lambda raw: set(decode_members("$set", raw, tags))
        tags["$frozenset"] = lambda raw: frozenset(decode_members("$frozenset", raw, tags))
        tags["$map"] = lambda raw: decode_map(raw, tags)
        tags[TYPE] = self._decode_record
        tags["$enum"] = self._decode_enum
        tags["$custom"] = self._decode_custom

    def _tag_types(self) -> dict[str, tuple[type, ...]]:
        """Each tag, and the classes its objects decode to."""
        kinds: dict[str, list[type]] = {"$type": [], "$enum": [], "$custom": []}
        for entry in self.catalog.by_class.values():
            tag = (
                "$type"
                if isinstance(entry.plan, RecordPlan)
                else "$enum"
                if isinstance(entry.plan, EnumPlan)
                else "$custom"
            )
            kinds[tag].append(entry.cls)
        containers = {"$tuple": tuple, "$set": set, "$frozenset": frozenset, "$map": dict}
        return {
            **{tag: (cls,) for tag, cls in {**LEAF_TYPES, **containers}.items()},
            **{tag: tuple(classes) for tag, classes in kinds.items()},
        }

    def _misfit_tags(self, shape: Shape | None) -> frozenset[str]:
        """The tags whose objects could never pass ``shape``: refused before they are decoded."""
        classes = admitted_classes(shape)
        misfits = self._misfits.get(classes)
        if misfits is None:
            misfits = frozenset(tag for tag, produced in self._produces.items() if not admits(classes, produced))
            self._misfits[classes] = misfits
        return misfits

    # -- the catalog's classes ----------------------------------------------------------------

    def _install(self, entry: Entry, names: list[str]) -> None:
        """Make ``entry`` known: encoded under its own name, decoded under ``names`` (aliases too)."""
        plan = entry.plan
        if isinstance(plan, RecordPlan):
            decoder = self._record_decoder(plan)
            self._records.update(dict.fromkeys(names, decoder))
            encoder = self._record_encoder(entry.name, plan)
            if any(field.init is None for field in plan.fields):
                encoder = _built_again(encoder, decoder)
            self._encoders[entry.cls] = encoder
        elif isinstance(plan, EnumPlan):
            self._enums.update(dict.fromkeys(names, plan))
            self._encoders[entry.cls] = self._enum_encoder(entry.name, plan)
        else:
            assert plan.decode is not None
            self._customs.update(dict.fromkeys(names, (entry.cls, plan.decode)))
            self._encoders[entry.cls] = self._custom_encoder(entry.name, plan)

    def _record_encoder(self, name: str, plan: RecordPlan) -> Encoder:
        get_encoder = self._encoders.get
        encode_any = self._encode_any
        fields = tuple(
            (field.name, compile_check(field.shape), field.shape, field.shape.exact if field.shape else None)
            for field in plan.fields
        )
        extra_allowed = plan.extra_allowed

        def encode(obj: Any) -> JSONValue:
            out: dict[str, JSONValue] = {TYPE: name}
            field = ""
            try:
                for field, check, shape, exact in fields:
                    value = getattr(obj, field, _UNSET)
                    if value is _UNSET:  # an init=False field nothing has set
                        continue
                    kind = type(value)
                    if kind is str:
                        out[field] = value
                    else:
                        encoder = get_encoder(kind)
                        if encoder is None:
                            raise _cannot(value)
                        out[field] = encoder(value)
                    # Checked after encoding, so that an unencodable value is reported as such.
                    if check is not None and kind is not exact and not check(value):
                        raise _misfit(shape, value)
                if extra_allowed and obj.__pydantic_extra__:
                    for field, value in obj.__pydantic_extra__.items():
                        if field[:1] == "$":
                            raise CodecFailure("an extra field's name cannot start with '$'")
                        out[field] = encode_any(value)
            except CodecFailure as failure:
                raise failure.at(f".{field}") from None
            return out

        return encode

    def _record_decoder(self, plan: RecordPlan) -> TagDecoder:
        tags = self._tags
        qualname = plan.cls.__qualname__
        fields = {
            field.name: (
                field.init,
                compile_check(field.shape),
                field.shape,
                field.shape.exact if field.shape else None,
                self._misfit_tags(field.shape),
            )
            for field in plan.fields
        }
        initialised = sum(1 for field in plan.fields if field.init is not None)
        required = tuple((field.name, field.init) for field in plan.fields if field.required)
        defaults = {field.name: field.default for field in plan.fields if field.init is None}
        build = plan.build
        extra_allowed = plan.extra_allowed

        def decode(raw: dict[str, Any]) -> Any:
            values: dict[str, Any] = {}
            late: dict[str, Any] = {}
            key = ""
            try:
                for key, item in raw.items():
                    spec = fields.get(key)
                    if spec is None:
                        if key == TYPE:
                            continue
                        if extra_allowed and key[:1] != "$":
                            values[key] = decode_any(item, tags)
                            continue
                        failure = CodecFailure(f"{qualname} has no field {shown(key)}")
                        key = ""
                        raise failure
                    init, check, shape, exact, misfits = spec
                    kind = type(item)
                    if kind is dict:
                        for tag in item:  # its first key: what it would decode to is known before decoding it
                            if tag in misfits:
                                assert shape is not None
                                raise CodecFailure(f"expected {shape.text}, got a {tag} object")
                            break
                        value = decode_object(item, tags)
                    else:
                        value = decode_any(item, tags) if kind is list else item
                    if check is not None and type(value) is not exact and not check(value):
                        raise _misfit(shape, value)
                    if init is not None:
                        values[init] = value
                    else:
                        late[key] = value
            except CodecFailure as failure:
                raise (failure.at(f".{escaped(key, SHOWN_CHARACTERS)}") if key else failure) from None
            if len(values) < initialised:
                missing = [name for name, init in required if init not in values]
                if missing:
                    raise CodecFailure(f"{qualname} is missing field {', '.join(missing)}")
            try:
                obj = build(**values)
            except RecursionError:
                raise
            except Exception as exc:  # the class's own __init__, __post_init__ or validators said no
                raise CodecFailure(f"cannot build {qualname}: {_reason(exc)}") from None
            for key, value in late.items():
                _set_late(obj, qualname, key, value, defaults[key])
            return obj

        return decode

    def _decode_record(self, raw: dict[str, Any]) -> Any:
        name = raw[TYPE]
        decoder = self._records.get(name) if type(name) is str else None
        if decoder is None:
            raise CodecFailure(
                f"unknown type {shown(name)}: not an event class, a type reachable from one, or a type given to "
                f"register_type"
            )
        return decoder(raw)

    def _enum_encoder(self, name: str, plan: EnumPlan) -> Encoder:
        names = plan.names
        encode_any = self._encode_any

        def encode(member: Any) -> JSONValue:
            member_name = names.get(id(member))
            if member_name is not None:
                return {"$enum": name, "name": member_name}
            return {"$enum": name, "value": encode_any(member.value)}

        return encode

    # _decode_enum and _decode_custom read their tagged objects alike on purpose: a name
    # looked up in this codec's table, then exactly the keys that tag allows.
    def _decode_enum(self, raw: dict[str, Any]) -> Any:
        name = raw["$enum"]
        plan = self._enums.get(name) if type(name) is str else None
        if plan is None:
            raise CodecFailure(
                f"unknown Enum {shown(name)}: not reachable from an event class nor given to register_type"
            )
        if "name" in raw:
            only("$enum", raw, "name")
            member_name = raw["name"]
            member = plan.members.get(member_name) if type(member_name) is str else None
            if member is None:
                raise CodecFailure(f"{plan.cls.__qualname__} has no member {shown(member_name)}")
            return member
        if "value" not in raw:
            raise CodecFailure("an $enum object needs a name or a value")
        only("$enum", raw, "value")
        value = decode_any(raw["value"], self._tags)
        try:
            if plan.is_flag:
                return _uncached_flag(plan.cls, value)
            return plan.cls(value)
        except (ValueError, TypeError):
            raise CodecFailure(f"{shown(value)} is not a valid {plan.cls.__qualname__}") from None

    def _custom_encoder(self, name: str, custom: CustomType) -> Encoder:
        to_value = custom.encode
        assert to_value is not None
        encode_any = self._encode_any
        qualname = custom.cls.__qualname__

        def encode(obj: Any) -> JSONValue:
            try:
                value = to_value(obj)
            except Exception as exc:
                raise CodecFailure(f"{qualname}'s encode function failed: {type(exc).__name__}: {exc}") from None
            return {"$custom": name, "value": encode_any(value)}

        return encode

    def _decode_custom(self, raw: dict[str, Any]) -> Any:
        name = raw["$custom"]
        known = self._customs.get(name) if type(name) is str else None
        if known is None:
            raise CodecFailure(f"unknown type {shown(name)}: not given to register_type")
        if "value" not in raw:
            raise CodecFailure("a $custom object needs a value")
        only("$custom", raw, "value")
        cls, from_value = known
        value = decode_any(raw["value"], self._tags)
        try:
            obj = from_value(value)
        except Exception as exc:
            raise CodecFailure(f"cannot build {cls.__qualname__}: {_reason(exc)}") from None
        if not isinstance(obj, cls):
            raise CodecFailure(f"{cls.__qualname__}'s decode function returned a {type(obj).__qualname__}")
        return obj
