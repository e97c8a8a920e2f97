"""The classes a typed codec may build, found once at configure time.

They are the event classes, every record and Enum class reachable from their field
annotations (through ``list[...]``, ``Optional``, generic arguments...), and the classes
given to ``register_type``. Nothing else is ever built: the wire name of a class is a
key into this table, never something to import.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass

from ..errors import ConfigurationError
from .custom import CustomType, CustomTypes
from .names import class_aliases, is_unstable, qualified_name, type_name
from .shapes import classes_in
from .structs import ENUM, EnumPlan, RecordPlan, enum_plan, kind_of, record_plan


@dataclass(frozen=True)
class Entry:
    """One known class.

    Parameters:
      cls(type): The class.
      name(str): Its name on the wire.
      plan(RecordPlan | EnumPlan | CustomType): How it is encoded and decoded.
    """

    cls: type
    name: str
    plan: RecordPlan | EnumPlan | CustomType


class Catalog:
    """Every class a typed codec knows, by class and by wire name (aliases included).

    Parameters:
      event_classes(Iterable[type]): The classes publish() may send.
      custom_types(CustomTypes): The ``register_type`` registrations.

    Raises:
      ConfigurationError: Two classes claim one wire name, or a class would be named
        after ``__main__``.
    """

    def __init__(self, event_classes: Iterable[type], custom_types: CustomTypes) -> None:
        self.event_classes: tuple[type, ...] = tuple(dict.fromkeys(event_classes))
        self.by_class: dict[type, Entry] = {}
        self.by_name: dict[str, Entry] = {}
        self._custom = custom_types
        # Classes with their own encode/decode come first, so that a registered dataclass
        # is not also taken apart as a record when an annotation reaches it.
        for custom in custom_types:
            if not custom.structural:
                self._add(custom.cls, custom)
        for cls in self.event_classes:
            self.learn(cls)
        for custom in custom_types:
            if custom.structural:
                self.learn(custom.cls)

    def learn(self, cls: type) -> None:
        """Add ``cls``, if it is a record or an Enum, and every class its annotations reach."""
        pending = [cls]
        while pending:
            current = pending.pop()
            if current in self.by_class:
                continue
            kind = kind_of(current)
            if kind is None:
                continue
            if kind == ENUM:
                assert issubclass(current, enum.Enum)
                self._add(current, enum_plan(current))
                continue
            plan = record_plan(current, kind)
            self._add(current, plan)
            for field in plan.fields:
                pending.extend(found for found in classes_in(field.hint) if isinstance(found, type))

    def _add(self, cls: type, plan: RecordPlan | EnumPlan | CustomType) -> None:
        custom = self._custom.get(cls)
        name = custom.name if custom is not None and custom.name else type_name(cls)
        if is_unstable(name):
            raise ConfigurationError(
                f"{cls.__qualname__} is defined in a script run as __main__, so its name on the wire would be "
                f"{name!r} here and something else in a worker. Move it into a module, or give it a stable name: "
                f"register_type({cls.__qualname__}, encode=None, decode=None, name='app.events:{cls.__qualname__}') "
                f"or a class attribute __eventbus_name__"
            )
        aliases = (*(custom.aliases if custom is not None else ()), *class_aliases(cls))
        entry = Entry(cls, name, plan)
        self.by_class[cls] = entry
        for label in (name, *aliases):
            other = self.by_name.setdefault(label, entry)
            if other.cls is not cls:
                raise ConfigurationError(
                    f"two classes go by the wire name {label!r}: {qualified_name(other.cls)} and "
                    f"{qualified_name(cls)}; "
                    f"give one of them another name with register_type(..., name=...) or __eventbus_name__"
                )

    def name_of(self, cls: type) -> str:
        return self.by_class[cls].name
