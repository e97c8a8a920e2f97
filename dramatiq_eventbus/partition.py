"""Partition keys: which events must be handled in order relative to each other.

An event's key comes from its own ``partition_key()`` method (or a ``partition_key``
field or property), or from a function registered for its class with
``@partition_key.register`` for classes you do not own.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import singledispatch
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])


@singledispatch
def _raw_key(event: Any) -> object:
    key = getattr(event, "partition_key", None)
    # A method is called; a field or property is the key itself (it was once ignored, and the
    # events went unordered without a word).
    return key() if callable(key) else key


class PartitionKey:
    """``partition_key(event)``: the event's partition key as a str, or None when it has none.

    ``@partition_key.register`` takes a function for a class you do not own, as with
    :func:`functools.singledispatch`. An ``int`` key becomes a ``str``; a key of any
    other type raises ``TypeError``.
    """

    def __call__(self, event: Any) -> str | None:
        key = _raw_key(event)
        if key is None or type(key) is str:
            return key
        if isinstance(key, str):  # a StrEnum or another str subclass: keep its text, not its class
            return str.__str__(key)
        if isinstance(key, int) and not isinstance(key, bool):
            return str(int(key))
        raise TypeError(
            f"partition key of {type(event).__qualname__} must be a str, an int or None, "
            f"not {type(key).__qualname__}: {key!r}"
        )

    def register(self, cls: type, func: Callable[[Any], object] | None = None) -> Any:
        """Register ``func`` as the key function of ``cls``; usable as a decorator."""
        if func is None:
            return _raw_key.register(cls)
        return _raw_key.register(cls, func)


partition_key = PartitionKey()


def has_partition_key(event_class: type) -> bool:
    """Whether events of ``event_class`` have a partition key: a function registered for the
    class, or a ``partition_key`` method, property or (dataclass, attrs or pydantic) field.

    An instance whose key is None is still sent without one: this tells what a class can do,
    for the flow map, not what one event does.

    Parameters:
      event_class(type): An event class.
    """
    if _raw_key.dispatch(event_class) is not _raw_key.dispatch(object):
        return True
    if hasattr(event_class, "partition_key"):  # a method, a property, or a field with a default
        return True
    fields: Any = (
        getattr(event_class, "__dataclass_fields__", None)
        or getattr(event_class, "__attrs_attrs__", None)
        or getattr(event_class, "model_fields", None)
        or ()
    )
    names = fields.keys() if isinstance(fields, dict) else (getattr(field, "name", None) for field in fields)
    return "partition_key" in names
