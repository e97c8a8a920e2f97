"""Types an application teaches the typed codec with ``register_type``."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigurationError
from .structs import kind_of

#: Types whose JSON form is themselves: a registration would make every str (say) a
#: tagged object whose value is a str again, without end.
_JSON_NATIVE: tuple[type, ...] = (str, int, float, bool, type(None), list, dict)


@dataclass(frozen=True)
class CustomType:
    """One ``register_type`` call.

    Parameters:
      cls(type): The class; its exact instances use this registration.
      encode(Callable[[Any], Any] | None): Turns an instance into a value the typed codec
        can encode (a str, a dict, a tuple of Decimals...); None for a structured class
        (dataclass, NamedTuple, Enum, attrs class, pydantic model) the codec takes apart
        itself, registered only to be known, named or aliased.
      decode(Callable[[Any], Any] | None): Turns that value, decoded, back into an instance.
      name(str | None): The class's name on the wire; default ``package.module:QualName``.
      aliases(tuple[str, ...]): Names the class went by before; messages under them still decode.
    """

    cls: type
    encode: Callable[[Any], Any] | None
    decode: Callable[[Any], Any] | None
    name: str | None
    aliases: tuple[str, ...]

    @property
    def structural(self) -> bool:
        """Registered only to be known, named or aliased; the codec encodes its fields."""
        return self.encode is None


class CustomTypes:
    """The classes given to ``register_type``; kept by the bus across configure() calls.

    A registration takes effect at the next configure(): each codec takes a snapshot.
    Registering a class again replaces its registration.

    Examples::

        register_type(Money, encode=lambda m: [m.amount, m.currency],
                      decode=lambda v: Money(*v), name="billing:Money")
        # A class that moved: its old messages still decode.
        register_type(OrderCreated, encode=None, decode=None, aliases=["shop.events:OrderCreated"])
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._types: dict[type, CustomType] = {}

    def register(
        self,
        cls: type,
        *,
        encode: Callable[[Any], Any] | None = None,
        decode: Callable[[Any], Any] | None = None,
        name: str | None = None,
        aliases: Sequence[str] = (),
    ) -> None:
        """Teach the typed codec ``cls``; see :class:`CustomType` for the parameters.

        Raises:
          ConfigurationError: Naming what is wrong with the registration.
        """
        if not isinstance(cls, type):
            raise ConfigurationError(f"register_type takes a class, not {cls!r}")
        what = f"register_type({cls.__qualname__})"
        if (encode is None) != (decode is None):
            raise ConfigurationError(f"{what}: give both encode= and decode=, or neither")
        for role, function in (("encode", encode), ("decode", decode)):
            if function is not None and not callable(function):
                raise ConfigurationError(f"{what}: {role}= must be callable, not {function!r}")
        if cls in _JSON_NATIVE:
            raise ConfigurationError(f"{what}: {cls.__qualname__} is JSON's own; it cannot be registered")
        if encode is None and kind_of(cls) is None:
            raise ConfigurationError(
                f"{what}: encode= and decode= are needed, as it is not a dataclass, NamedTuple, Enum, "
                f"attrs class or pydantic model whose fields the codec could take apart"
            )
        if isinstance(aliases, str):
            raise ConfigurationError(f"{what}: aliases= must be a list of names, not the string {aliases!r}")
        labels: tuple[object, ...] = (name, *aliases)
        for label in labels:
            if label is not None and (not isinstance(label, str) or not label or label.startswith("$")):
                raise ConfigurationError(f"{what}: a name must be a non-empty str not starting with '$', not {label!r}")
        with self._lock:
            self._types[cls] = CustomType(cls, encode, decode, name, tuple(aliases))

    def get(self, cls: type) -> CustomType | None:
        """The registration of exactly ``cls``, if any."""
        return self._types.get(cls)

    def __iter__(self) -> Iterator[CustomType]:
        with self._lock:
            return iter(tuple(self._types.values()))

    def __len__(self) -> int:
        return len(self._types)
