"""Field annotations as shapes a value is checked against.

A decoded field must have the type its class declares, where the annotation names a
concrete type: a payload that puts a string where a ``Decimal`` is declared is refused,
whatever the class's ``__init__`` would have accepted. The encoder applies the same
check, so that an event a worker would refuse fails ``publish()`` instead.

Annotations that say little (``Any``, a ``TypeVar``, an unresolved string, a
non-runtime Protocol) check nothing. ``float`` accepts ``int`` and ``complex`` accepts
both, as the typing rules (PEP 484's numeric tower) do.
"""

from __future__ import annotations

import collections.abc
import enum
import types
import typing
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from ..untrusted import shown

Check = Callable[[Any], bool]

_UNION_TYPES: tuple[Any, ...] = (typing.Union, types.UnionType)
_UNWRAPPED: tuple[Any, ...] = (typing.ClassVar, typing.Final)
_SEQUENCES: tuple[type, ...] = (
    list,
    set,
    frozenset,
    collections.abc.Sequence,
    collections.abc.MutableSequence,
    collections.abc.Set,
    collections.abc.MutableSet,
    collections.abc.Collection,
)
_MAPPINGS: tuple[type, ...] = (dict, collections.abc.Mapping, collections.abc.MutableMapping)


@dataclass(frozen=True)
class Shape:
    """What an annotation requires of a value, reduced to what can be checked.

    Parameters:
      kind(str): ``"class"``, ``"none"``, ``"union"``, ``"literal"``, ``"items"``
        (a collection of one item shape), ``"tuple"`` (fixed length) or ``"mapping"``.
      text(str): The annotation as a person reads it, for error messages.
      classes(tuple[type, ...]): For ``class``, ``items``, ``tuple`` and ``mapping``: the
        classes the value itself must be an instance of.
      parts(tuple[Shape | None, ...]): The shapes of the members (union), items, tuple
        elements, or key and value; None checks nothing.
      values(tuple[Any, ...]): For ``literal``: the allowed values.
    """

    kind: str
    text: str
    classes: tuple[type, ...] = ()
    parts: tuple[Shape | None, ...] = ()
    values: tuple[Any, ...] = ()

    @property
    def exact(self) -> type | None:
        """A class whose instances, by ``type(v) is exact``, pass without a further check."""
        if self.kind == "class" and len(self.classes) == 1:
            return self.classes[0]
        return None


def describe(hint: Any) -> str:
    """An annotation as it is written: ``list[OrderLine] | None``, ``Decimal``."""
    if hint is None or hint is type(None):
        return "None"
    if hint is Ellipsis:
        return "..."
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in _UNION_TYPES:
        return " | ".join(describe(arg) for arg in args)
    if origin is typing.Literal:
        return f"Literal[{', '.join(map(repr, args))}]"
    if origin is typing.Annotated:
        return describe(args[0])
    if origin is not None and args:
        name = origin.__qualname__ if isinstance(origin, type) else repr(origin).replace("typing.", "")
        return f"{name}[{', '.join(describe(arg) for arg in args)}]"
    if isinstance(hint, type):
        return hint.__qualname__
    if isinstance(hint, typing.TypeVar):
        return hint.__name__
    return repr(hint).replace("typing.", "")


def shape_of(hint: Any) -> Shape | None:
    """The checkable shape of an annotation; None when it constrains nothing checkable."""
    if hint is Any or hint is object:
        return None
    if hint is None or hint is type(None):
        return Shape("none", "None")
    if isinstance(hint, typing.TypeVar):
        if hint.__bound__ is not None:
            return shape_of(hint.__bound__)
        if hint.__constraints__:
            return _union([shape_of(c) for c in hint.__constraints__], describe(hint))
        return None
    supertype = getattr(hint, "__supertype__", None)  # typing.NewType
    if supertype is not None:
        return shape_of(supertype)
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    text = describe(hint)
    if origin is typing.Annotated:
        return shape_of(args[0])
    if origin in _UNWRAPPED:
        return shape_of(args[0]) if args else None
    if origin in _UNION_TYPES:
        return _union([shape_of(a) for a in args], text)
    if origin is typing.Literal:
        return Shape("literal", text, values=args)
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return Shape("items", text, (tuple,), (shape_of(args[0]),))
        if args == ((),):  # tuple[()]: the empty tuple
            return Shape("tuple", text, (tuple,), ())
        if args:
            return Shape("tuple", text, (tuple,), tuple(shape_of(a) for a in args))
        return _class(tuple, text)
    if origin in _SEQUENCES:
        if args:
            return Shape("items", text, (origin,), (shape_of(args[0]),))
        return _class(origin, text)
    if origin in _MAPPINGS:
        if len(args) == 2:
            return Shape("mapping", text, (origin,), (shape_of(args[0]), shape_of(args[1])))
        return _class(origin, text)
    if isinstance(origin, type):  # a generic class such as Box[int]: its instances are Box
        return _class(origin, text)
    if isinstance(hint, type):
        return _class(hint, text)
    return None  # a string or ForwardRef that did not resolve, a ParamSpec, ...


def _class(cls: type, text: str) -> Shape | None:
    if cls is float:
        return Shape("class", text, (float, int))
    if cls is complex:
        return Shape("class", text, (complex, float, int))
    if getattr(cls, "_is_protocol", False) and not getattr(cls, "_is_runtime_protocol", False):
        return None
    if typing.is_typeddict(cls):
        return Shape("class", text, (dict,))
    try:
        isinstance(None, cls)
    except TypeError:  # a special form isinstance() refuses
        return None
    return Shape("class", text, (cls,))


def _union(members: list[Shape | None], text: str) -> Shape | None:
    if any(member is None for member in members):
        return None
    return Shape("union", text, parts=tuple(members))


# -- fast checks ----------------------------------------------------------------------------


def compile_check(shape: Shape | None) -> Check | None:
    """A function telling whether a value fits ``shape``; None when anything fits."""
    if shape is None:
        return None
    kind = shape.kind
    if kind == "none":
        return _is_none
    if kind == "class":
        classes = shape.classes[0] if len(shape.classes) == 1 else shape.classes
        return lambda value: isinstance(value, classes)
    if kind == "union":
        checks = [compile_check(part) for part in shape.parts]
        if len(checks) == 2 and checks[0] is _is_none and checks[1] is not None:
            other = checks[1]
            return lambda value: value is None or other(value)
        if len(checks) == 2 and checks[1] is _is_none and checks[0] is not None:
            first = checks[0]
            return lambda value: value is None or first(value)
        return lambda value: any(check(value) for check in checks if check is not None)
    if kind == "literal":
        allowed = shape.values
        return lambda value: any(_same_literal(value, a) for a in allowed)
    # Any: isinstance() against a variable would narrow ``value`` to object for mypy.
    container: Any = shape.classes[0]
    if kind == "items":
        maybe_item = compile_check(shape.parts[0])
        if maybe_item is None:
            return lambda value: isinstance(value, container)
        item: Check = maybe_item
        item_exact: Any = shape.parts[0].exact if shape.parts[0] is not None else None
        if item_exact is not None:
            return lambda value: (
                isinstance(value, container)
                and all([type(x) is item_exact or isinstance(x, item_exact) for x in value])
            )
        return lambda value: isinstance(value, container) and all([item(x) for x in value])
    if kind == "tuple":
        elements: list[Check] = [compile_check(part) or _anything for part in shape.parts]
        length = len(elements)
        return lambda value: (
            isinstance(value, tuple)
            and len(value) == length
            and all([check(x) for check, x in zip(elements, value, strict=True)])
        )
    if kind == "mapping":
        key = compile_check(shape.parts[0]) or _anything
        val = compile_check(shape.parts[1]) or _anything
        return lambda value: isinstance(value, container) and all([key(k) and val(v) for k, v in value.items()])
    raise AssertionError(f"unknown shape kind {kind!r}")


def _is_none(value: Any) -> bool:
    return value is None


def _anything(value: Any) -> bool:
    return True


def _same_literal(value: Any, allowed: Any) -> bool:
    if isinstance(allowed, enum.Enum):
        return value is allowed
    return type(value) is type(allowed) and value == allowed


def admitted_classes(shape: Shape | None) -> tuple[type, ...] | None:
    """The classes a value of ``shape`` may be an instance of; None when any may do."""
    if shape is None:
        return None
    if shape.kind == "none":
        return (type(None),)
    if shape.kind == "literal":
        return tuple({type(value) for value in shape.values})
    if shape.kind == "union":
        classes: list[type] = []
        for part in shape.parts:
            admitted = admitted_classes(part)
            if admitted is None:
                return None
            classes += admitted
        return tuple(classes)
    return shape.classes


def admits(classes: tuple[type, ...] | None, produced: tuple[type, ...]) -> bool:
    """Whether an instance of one of ``produced`` could be an instance of one of ``classes``."""
    if classes is None:
        return True
    for made in produced:
        for cls in classes:
            try:
                if issubclass(made, cls):
                    return True
            except TypeError:  # a Protocol with data members, say: cannot tell, so admitted
                return True
    return False


# -- explaining a failed check ----------------------------------------------------------------


def mismatch(shape: Shape | None, value: Any) -> tuple[str, str] | None:
    """Where inside ``value``, and how, it fails ``shape``: ``("[2]", "expected int, got str")``.

    The slow twin of :func:`compile_check`, only run once a check has failed.
    """
    if shape is None:
        return None
    kind = shape.kind
    got = f"got {_type_text(value)}"
    if kind == "none":
        return None if value is None else ("", f"expected None, {got}")
    if kind == "class":
        return None if isinstance(value, shape.classes) else ("", f"expected {shape.text}, {got}")
    if kind == "union":
        if any(mismatch(part, value) is None for part in shape.parts):
            return None
        return ("", f"expected {shape.text}, {got}")
    if kind == "literal":
        if any(_same_literal(value, a) for a in shape.values):
            return None
        return ("", f"expected {shape.text}, got {shown(value)}")
    classes: Any = shape.classes
    if not isinstance(value, classes):
        return ("", f"expected {shape.text}, {got}")
    if kind == "items":
        return _first(_steps(value), shape.parts[0])
    if kind == "tuple":
        if len(value) != len(shape.parts):
            return ("", f"expected {shape.text}, got a tuple of {len(value)}")
        for index, (part, item) in enumerate(zip(shape.parts, value, strict=True)):
            found = mismatch(part, item)
            if found is not None:
                return (f"[{index}]" + found[0], found[1])
        return None
    if kind == "mapping":
        for key, item in value.items():
            found = mismatch(shape.parts[0], key)
            if found is not None:
                return (f"[{shown(key)}]", "key: " + found[1])
            found = mismatch(shape.parts[1], item)
            if found is not None:
                return (f"[{shown(key)}]" + found[0], found[1])
        return None
    raise AssertionError(f"unknown shape kind {kind!r}")


def _steps(value: Iterable[Any]) -> Iterable[tuple[str, Any]]:
    if isinstance(value, (set, frozenset)):
        return ((f"{{{index}}}", item) for index, item in enumerate(value))
    return ((f"[{index}]", item) for index, item in enumerate(value))


def _first(items: Iterable[tuple[str, Any]], shape: Shape | None) -> tuple[str, str] | None:
    for step, item in items:
        found = mismatch(shape, item)
        if found is not None:
            return (step + found[0], found[1])
    return None


def _type_text(value: Any) -> str:
    cls = type(value)
    return "None" if value is None else cls.__qualname__


def classes_in(hint: Any) -> Iterable[Any]:
    """Every class and Enum member an annotation names: ``list[Line] | None`` gives list, Line, NoneType.

    An ``Annotated`` annotation's metadata is skipped: it holds values, not types.
    """
    if isinstance(hint, type):
        yield hint
    if isinstance(hint, enum.Enum):  # Literal[Status.PAID]
        yield type(hint)
    if isinstance(hint, typing.TypeVar):
        if hint.__bound__ is not None:
            yield from classes_in(hint.__bound__)
        for constraint in hint.__constraints__:
            yield from classes_in(constraint)
    supertype = getattr(hint, "__supertype__", None)
    if supertype is not None:
        yield from classes_in(supertype)
    origin = typing.get_origin(hint)
    if isinstance(origin, type):
        yield origin
    args = typing.get_args(hint)
    if origin is typing.Annotated:
        args = args[:1]
    for arg in args:
        if isinstance(arg, (list, tuple)):  # Callable[[A, B], C]
            for inner in arg:
                yield from classes_in(inner)
        else:
            yield from classes_in(arg)
