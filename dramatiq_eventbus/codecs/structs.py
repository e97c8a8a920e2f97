"""Structured classes the typed codec takes apart field by field, and their plans.

Dataclasses, NamedTuples (and ``collections.namedtuple``), attrs classes and pydantic
models are records: a class and named fields. Each class gets one plan, computed once at
configure time, listing its fields, which are required, how each is checked, and how an
instance is built again. attrs and pydantic are never imported here unless a class of
theirs shows up, which means they are already imported.
"""

from __future__ import annotations

import dataclasses
import enum
import inspect
import sys
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from .shapes import Shape, shape_of

DATACLASS = "dataclass"
NAMEDTUPLE = "namedtuple"
ATTRS = "attrs"
PYDANTIC = "pydantic"
ENUM = "enum"


def kind_of(cls: object) -> str | None:
    """Which kind of structured class ``cls`` is, or None for any other object."""
    if not isinstance(cls, type):
        return None
    if issubclass(cls, enum.Enum):
        return ENUM
    if dataclasses.is_dataclass(cls):
        return DATACLASS
    if issubclass(cls, tuple) and hasattr(cls, "_fields") and hasattr(cls, "_make"):
        return NAMEDTUPLE
    if getattr(cls, "__attrs_attrs__", None) is not None:
        return ATTRS
    pydantic = sys.modules.get("pydantic")
    if pydantic is not None and issubclass(cls, pydantic.BaseModel) and hasattr(cls, "model_fields"):
        return PYDANTIC
    return None


@dataclass(frozen=True)
class FieldPlan:
    """One field of a record.

    Parameters:
      name(str): The attribute, and the key on the wire.
      init(str | None): The keyword ``__init__`` takes it by; None when ``__init__`` does
        not take it and it is set on the built instance instead.
      required(bool): ``__init__`` needs it: it has no default.
      hint(Any): Its resolved annotation, or None.
      shape(Shape | None): What its value must be; None checks nothing.
      default(Callable[[], Any] | None): For a field ``__init__`` does not take: the value
        ``__init__`` gives it when the class computes nothing else, if it has one.
    """

    name: str
    init: str | None
    required: bool
    hint: Any
    shape: Shape | None
    default: Callable[[], Any] | None = None


@dataclass(frozen=True)
class RecordPlan:
    """How one record class is taken apart and built again.

    Parameters:
      cls(type): The class.
      kind(str): ``dataclass``, ``namedtuple``, ``attrs`` or ``pydantic``.
      fields(tuple[FieldPlan, ...]): Its fields, in declaration order.
      build(Callable[..., Any]): Makes an instance from ``__init__``'s keywords. For most
        kinds it is the class itself: building through ``__init__`` (not around it, as
        pickle does) lets the class's own ``__post_init__`` or validators vet a payload.
      extra_allowed(bool): A pydantic model with ``extra="allow"``: it keeps unknown keys.
    """

    cls: type
    kind: str
    fields: tuple[FieldPlan, ...]
    build: Callable[..., Any]
    extra_allowed: bool = False


@dataclass(frozen=True)
class EnumPlan:
    """An Enum, Flag or IntEnum class, and its members by name.

    Parameters:
      cls(type[enum.Enum]): The class.
      members(Mapping[str, enum.Enum]): Every member name, aliases included.
      names(Mapping[int, str]): A member's ``id`` to its name, for the members that have one.
      is_flag(bool): A Flag (or IntFlag): values may combine members.
    """

    cls: type[enum.Enum]
    members: Mapping[str, enum.Enum]
    names: Mapping[int, str]
    is_flag: bool = False


def enum_plan(cls: type[enum.Enum]) -> EnumPlan:
    members = dict(cls.__members__)
    # A Flag combination like A|C has no name of its own; it travels by value.
    names = {id(member): name for name, member in members.items() if member.name == name}
    return EnumPlan(cls, members, names, issubclass(cls, enum.Flag))


def record_plan(cls: type, kind: str) -> RecordPlan:
    """The plan of a record class of ``kind`` (see :func:`kind_of`)."""
    if kind == DATACLASS:
        return _dataclass_plan(cls)
    if kind == NAMEDTUPLE:
        return _namedtuple_plan(cls)
    if kind == ATTRS:
        return _attrs_plan(cls)
    if kind == PYDANTIC:
        return _pydantic_plan(cls)
    raise AssertionError(f"not a record kind: {kind!r}")


def _field(
    name: str, init: str | None, required: bool, hint: Any, default: Callable[[], Any] | None = None
) -> FieldPlan:
    return FieldPlan(name, init, required, hint, shape_of(hint) if hint is not None else None, default)


def _dataclass_plan(cls: type) -> RecordPlan:
    hints = resolve_hints(cls)
    fields = tuple(
        _field(
            f.name,
            f.name if f.init else None,
            f.init and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING,
            hints.get(f.name),
            None if f.init else _dataclass_default(f),
        )
        for f in dataclasses.fields(cls)
    )
    return RecordPlan(cls, DATACLASS, fields, cls)


def _dataclass_default(f: dataclasses.Field[Any]) -> Callable[[], Any] | None:
    if f.default is not dataclasses.MISSING:
        value = f.default
        return lambda: value
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory
    return None


def _namedtuple_plan(cls: type) -> RecordPlan:
    hints = resolve_hints(cls)
    defaults = getattr(cls, "_field_defaults", {})
    names: tuple[str, ...] = cls._fields  # type: ignore[attr-defined]
    fields = tuple(_field(name, name, name not in defaults, hints.get(name)) for name in names)
    return RecordPlan(cls, NAMEDTUPLE, fields, cls)


def _attrs_plan(cls: type) -> RecordPlan:
    import attrs

    hints = resolve_hints(cls)
    fields = []
    for attribute in attrs.fields(cls):
        keyword = getattr(attribute, "alias", None) or attribute.name.lstrip("_")
        hint = hints.get(attribute.name, attribute.type if not isinstance(attribute.type, str) else None)
        required = attribute.init and attribute.default is attrs.NOTHING
        default = None if attribute.init else _attrs_default(attribute.default)
        fields.append(_field(attribute.name, keyword if attribute.init else None, required, hint, default))
    return RecordPlan(cls, ATTRS, tuple(fields), cls)


def _attrs_default(default: Any) -> Callable[[], Any] | None:
    import attrs

    if default is attrs.NOTHING or (isinstance(default, attrs.Factory) and default.takes_self):  # type: ignore[arg-type]
        return None
    if isinstance(default, attrs.Factory):  # type: ignore[arg-type]
        factory: Callable[[], Any] = default.factory
        return factory
    return lambda: default


def _pydantic_plan(cls: type) -> RecordPlan:
    model_fields: dict[str, Any] = cls.model_fields  # type: ignore[attr-defined]
    validate = cls.model_validate  # type: ignore[attr-defined]
    by_name = "by_name" in inspect.signature(validate).parameters
    fields = []
    for name, info in model_fields.items():
        keyword = name if by_name or info.alias is None else info.alias
        # pydantic validates the fields itself, by its own rules (EmailStr is a str...):
        # the codec does not check them a second time.
        fields.append(FieldPlan(name, keyword, info.is_required(), info.annotation, None))

    def build(**values: Any) -> Any:
        return validate(values, by_name=True) if by_name else validate(values)

    extra = getattr(cls, "model_config", {}).get("extra") == "allow"
    return RecordPlan(cls, PYDANTIC, tuple(fields), build, extra)


def resolve_hints(cls: type) -> dict[str, Any]:
    """A class's field annotations, evaluated; one that does not resolve is left out.

    ``typing.get_type_hints`` gives up on the whole class at the first annotation naming
    something it cannot find (a class defined inside a function, say); this keeps the rest.
    """
    try:
        return typing.get_type_hints(cls)
    except Exception:
        pass
    hints: dict[str, Any] = {}
    for base in reversed(cls.__mro__):
        annotations = inspect.get_annotations(base)
        module = sys.modules.get(base.__module__)
        global_names = dict(vars(module)) if module is not None else {}
        local_names = {**dict(vars(base)), base.__name__: base, cls.__name__: cls}
        for name, annotation in annotations.items():
            if not isinstance(annotation, str):
                hints[name] = annotation
                continue
            try:
                # The application's own source text, as typing.get_type_hints would evaluate it.
                hints[name] = eval(annotation, global_names, local_names)
            except Exception:
                hints.pop(name, None)
    return hints
