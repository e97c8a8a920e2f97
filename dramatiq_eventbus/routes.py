"""A map of the flows: which context's events go to which handlers, as text, JSON or Mermaid.

``eventbus routes --format text|json|mermaid`` prints it; in Python,
``FlowMap.from_bus(bus).to_mermaid()``. A class's *context* is the package it is defined in:
the last part of the package that holds its module (``examples.shop.orders.events`` is in
``examples.shop.orders``, shown as ``orders``), or the module itself when the class is
defined in a package's ``__init__``. Two packages whose last parts are the same are shown
by their full names. ``FlowMap.from_bus(bus, context_of=...)`` takes another rule.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from .actors import is_async_handler
from .bus import EventBus
from .codecs.names import qualified_name, type_name
from .handler import Handler
from .partition import has_partition_key
from .registry import HandlerSpec

__all__ = ["FORMATS", "JSON_VERSION", "ContextNode", "EventNode", "FlowMap", "HandlerNode", "context_of"]

#: The formats ``eventbus routes --format`` takes; ``text`` is the default.
FORMATS = ("text", "json", "mermaid")
#: The ``version`` of the JSON shape; raised only when a field changes meaning or goes away.
JSON_VERSION = 1

# What a Mermaid label may hold as it is; anything else becomes an entity code (#60; for <).
_SAFE_LABEL = re.compile(r"[A-Za-z0-9 _.,:()=-]")
_UNSAFE_ID = re.compile(r"[^A-Za-z0-9_]")


@dataclass(frozen=True)
class EventNode:
    """An event class of the map.

    Parameters:
      name(str): Where it is defined, ``package.module.QualName``.
      label(str): Its ``__qualname__``, as the diagram shows it.
      wire_name(str): The name its messages carry (see the codec guide).
      context(str): The name of its context.
      partitioned(bool): It has a partition key (a ``partition_key`` method, property or field,
        or a function registered with ``partition_key.register``), so its messages go to the partitioned
        queue and are handled in order per key; an instance whose key is None goes to the
        default queue all the same.
      queue(str): The queue its messages go to.
      handlers(tuple[str, ...]): The actor names of its handlers, in configured order.
    """

    name: str
    label: str
    wire_name: str
    context: str
    partitioned: bool
    queue: str
    handlers: tuple[str, ...]


@dataclass(frozen=True)
class HandlerNode:
    """A handler of the map.

    Parameters:
      name(str): Its actor name, ``package.module.ClassName``.
      label(str): Its class's ``__qualname__``, as the diagram shows it.
      context(str): The name of its context.
      priority(int): 0-9, lower is more urgent.
      queues(tuple[str, ...]): The queues its messages arrive on, by its events' partitioning.
      options(Mapping[str, Any]): Its actor options but priority, defaults included, as JSON
        values: a class is given by its qualified name, anything else JSON cannot hold by its repr.
      filters(bool): Its ``interested`` is its own, so it may turn events down in the publisher.
      is_async(bool): Its ``handle_event`` is an ``async def``.
      events(tuple[str, ...]): The qualified names of the event classes it is registered for.
    """

    name: str
    label: str
    context: str
    priority: int
    queues: tuple[str, ...]
    options: Mapping[str, Any]
    filters: bool
    is_async: bool
    events: tuple[str, ...]


@dataclass(frozen=True)
class ContextNode:
    """A context of the map: the events and handlers of one package.

    Parameters:
      name(str): As shown: the package's last part, or the whole package where two share it.
      package(str): The package.
      events(tuple[str, ...]): The qualified names of its event classes.
      handlers(tuple[str, ...]): The actor names of its handlers.
    """

    name: str
    package: str
    events: tuple[str, ...]
    handlers: tuple[str, ...]


def context_of(cls: type) -> str:
    """The package ``cls`` belongs to: its module's package, or its module when that is a package.

    Parameters:
      cls(type): An event or handler class.
    """
    module = cls.__module__
    if hasattr(sys.modules.get(module), "__path__"):  # defined in a package's __init__
        return module
    package, _, _ = module.rpartition(".")
    return package or module


@dataclass(frozen=True)
class FlowMap:
    """The contexts, events and handlers of a configured bus, and the routes between them.

    Parameters:
      contexts(tuple[ContextNode, ...]): In order of first appearance in the configuration.
      events(tuple[EventNode, ...]): In configured order.
      handlers(tuple[HandlerNode, ...]): Each once, in the order first configured.
      default_queue(str): The bus's queue for events without a partition key.
      partitioned_queue(str): Its queue for events with one.
      options_text(Mapping[str, str]): Each handler's actor options as ``eventbus routes``
        has always printed them, by actor name, for :meth:`to_text`.
    """

    contexts: tuple[ContextNode, ...]
    events: tuple[EventNode, ...]
    handlers: tuple[HandlerNode, ...]
    default_queue: str
    partitioned_queue: str
    options_text: Mapping[str, str]

    @classmethod
    def from_bus(cls, bus: EventBus, *, context_of: Callable[[type], str] = context_of) -> FlowMap:
        """The map of a configured bus.

        Parameters:
          bus(EventBus): A configured bus; the broker is not contacted.
          context_of(Callable[[type], str]): Gives an event or handler class the package (or any
            name) of its context. Default: :func:`context_of`.

        Raises:
          ConfigurationError: The bus is not configured.
        """
        config = bus.config
        registry, queues = config.registry, config.queues
        wire_name = _wire_namer(config.codec)
        packages: dict[str, tuple[list[str], list[str]]] = {}
        events: list[EventNode] = []
        partitioned: dict[str, bool] = {}
        for event_class in registry.event_classes:
            name = qualified_name(event_class)
            package = context_of(event_class)
            packages.setdefault(package, ([], []))[0].append(name)
            is_partitioned = has_partition_key(event_class)
            partitioned[name] = is_partitioned
            specs = registry.handlers_for(event_class)
            for spec in specs:
                packages.setdefault(context_of(spec.handler_class), ([], []))
            events.append(
                EventNode(
                    name=name,
                    label=event_class.__qualname__,
                    wire_name=wire_name(event_class),
                    context=package,
                    partitioned=is_partitioned,
                    queue=queues.partitioned if is_partitioned else queues.default,
                    handlers=tuple(spec.name for spec in specs),
                )
            )
        handlers: list[HandlerNode] = []
        for spec in registry.handlers:
            package = context_of(spec.handler_class)
            packages[package][1].append(spec.name)
            event_names = tuple(qualified_name(e) for e in registry.event_classes if spec in registry.handlers_for(e))
            handler_queues = {queues.partitioned if partitioned[e] else queues.default for e in event_names}
            handlers.append(
                HandlerNode(
                    name=spec.name,
                    label=spec.handler_class.__qualname__,
                    context=package,
                    priority=spec.priority,
                    queues=tuple(q for q in (queues.default, queues.partitioned) if q in handler_queues),
                    options={key: _json_value(value) for key, value in sorted(spec.actor_options.items())},
                    filters=filters_events(spec),
                    is_async=is_async_handler(spec.instance),
                    events=event_names,
                )
            )
        shown = _context_names(packages)
        return cls(
            contexts=tuple(
                ContextNode(shown[package], package, tuple(event_names), tuple(handler_names))
                for package, (event_names, handler_names) in packages.items()
            ),
            events=tuple(_replace_context(node, shown) for node in events),
            handlers=tuple(_replace_context(node, shown) for node in handlers),
            default_queue=queues.default,
            partitioned_queue=queues.partitioned,
            options_text={spec.name: _options_text(spec) for spec in registry.handlers},
        )

    def render(self, format: str) -> str:
        """The map in one of :data:`FORMATS`.

        Parameters:
          format(str): ``text``, ``json`` or ``mermaid``.

        Raises:
          ValueError: Another format.
        """
        if format == "text":
            return self.to_text()
        if format == "json":
            return self.to_json()
        if format == "mermaid":
            return self.to_mermaid()
        raise ValueError(f"unknown format {format!r}: use one of {', '.join(FORMATS)}")

    def to_text(self) -> str:
        """Each event class, then an indented line per handler with its priority and options.

        The output ``eventbus routes`` has always printed, for people.
        """
        lines: list[str] = []
        handlers = {node.name: node for node in self.handlers}
        for event in self.events:
            lines.append(event.name)
            for name in event.handlers:
                lines.append(f"  -> {name}  priority={handlers[name].priority}  {self.options_text[name]}")
        return "".join(f"{line}\n" for line in lines)

    def to_dict(self) -> dict[str, Any]:
        """The map as the JSON value :meth:`to_json` writes; its shape is in docs/guides/flow-map.md."""
        return {
            "version": JSON_VERSION,
            "queues": {"default": self.default_queue, "partitioned": self.partitioned_queue},
            "contexts": [
                {"name": c.name, "package": c.package, "events": list(c.events), "handlers": list(c.handlers)}
                for c in self.contexts
            ],
            "events": [
                {
                    "name": e.name,
                    "class": e.label,
                    "wire_name": e.wire_name,
                    "context": e.context,
                    "partitioned": e.partitioned,
                    "queue": e.queue,
                    "handlers": list(e.handlers),
                }
                for e in self.events
            ],
            "handlers": [
                {
                    "actor": h.name,
                    "class": h.label,
                    "context": h.context,
                    "priority": h.priority,
                    "queues": list(h.queues),
                    "options": dict(h.options),
                    "interested_filter": h.filters,
                    "async": h.is_async,
                    "events": list(h.events),
                }
                for h in self.handlers
            ],
        }

    def to_json(self) -> str:
        """The map as indented JSON, ending with a newline; see :meth:`to_dict`."""
        return json.dumps(self.to_dict(), indent=2, ensure_ascii=False) + "\n"

    def to_mermaid(self) -> str:
        """The map as a Mermaid flowchart, ending with a newline.

        A subgraph per context holds its event classes (rounded; ``partitioned`` marked) and its
        handlers (boxes, with their priority, and ``async`` where it is). An edge goes from each
        event to each of its handlers; it is dotted and labelled ``interested`` where the
        handler's ``interested`` may turn the event down. Ids are made of the names' letters,
        digits and underscores only, and labels are escaped, so any class or module name is safe.
        """
        ids = _Ids()
        event_ids = {event.name: ids.make("event", event.name) for event in self.events}
        handler_ids = {handler.name: ids.make("handler", handler.name) for handler in self.handlers}
        events = {event.name: event for event in self.events}
        handlers = {handler.name: handler for handler in self.handlers}
        lines = ["flowchart LR"]
        for context in self.contexts:
            lines.append(f'  subgraph {ids.make("context", context.package)} ["{mermaid_label(context.name)}"]')
            lines.append("    direction TB")
            for name in context.events:
                event = events[name]
                text = mermaid_label(event.label) + ("<br/>partitioned" if event.partitioned else "")
                lines.append(f'    {event_ids[name]}(["{text}"])')
            for name in context.handlers:
                handler = handlers[name]
                text = f"{mermaid_label(handler.label)}<br/>priority {handler.priority}"
                text += "<br/>async" if handler.is_async else ""
                lines.append(f'    {handler_ids[name]}["{text}"]')
            lines.append("  end")
        for event in self.events:
            for name in event.handlers:
                arrow = " -. interested .-> " if handlers[name].filters else " --> "
                lines.append(f"  {event_ids[event.name]}{arrow}{handler_ids[name]}")
        partitioned = [event_ids[event.name] for event in self.events if event.partitioned]
        filtering = [handler_ids[handler.name] for handler in self.handlers if handler.filters]
        lines.append("  classDef event fill:#eef6ff,stroke:#3b6ea5")
        lines.append("  classDef partitioned fill:#eef6ff,stroke:#3b6ea5,stroke-width:3px")
        lines.append("  classDef handler fill:#f6f6f6,stroke:#555")
        lines.append("  classDef filtering fill:#f6f6f6,stroke:#555,stroke-dasharray:4 3")
        for class_name, members in (
            ("event", [event_ids[e.name] for e in self.events if not e.partitioned]),
            ("partitioned", partitioned),
            ("handler", [handler_ids[h.name] for h in self.handlers if not h.filters]),
            ("filtering", filtering),
        ):
            if members:
                lines.append(f"  class {','.join(members)} {class_name}")
        return "".join(f"{line}\n" for line in lines)


def filters_events(spec: HandlerSpec) -> bool:
    """Whether a handler's ``interested`` is its own, rather than :class:`Handler`'s or none.

    Parameters:
      spec(HandlerSpec): The handler.
    """
    interested = getattr(spec.instance, "interested", None)
    if interested is None:
        return False
    return getattr(interested, "__func__", interested) is not Handler.interested


def mermaid_label(text: str) -> str:
    """``text`` as it may stand between a Mermaid label's quotes: any character but letters,
    digits, spaces and ``_.,:()=-`` becomes an entity code (``<`` is ``#60;``), so that no name
    can end the label, start markup or inject HTML.

    Parameters:
      text(str): A class, module or context name.
    """
    return "".join(char if _SAFE_LABEL.fullmatch(char) else f"#{ord(char)};" for char in text)


class _Ids:
    """Mermaid node ids made from names: ``kind_`` and the name's ``[A-Za-z0-9_]`` characters,
    with a number after it where two names would give the same id."""

    def __init__(self) -> None:
        self._taken: set[str] = set()

    def make(self, kind: str, name: str) -> str:
        base = f"{kind}_{_UNSAFE_ID.sub('_', name)}"
        made, number = base, 1
        while made in self._taken:
            number += 1
            made = f"{base}_{number}"
        self._taken.add(made)
        return made


def _context_names(packages: Iterable[str]) -> dict[str, str]:
    """Each package's shown name: its last part, or the whole package where two share the last part."""
    packages = list(packages)
    last = [package.rpartition(".")[2] for package in packages]
    return {
        package: short if last.count(short) == 1 else package for package, short in zip(packages, last, strict=True)
    }


def _replace_context(node: Any, shown: Mapping[str, str]) -> Any:
    return replace(node, context=shown[node.context])


def _wire_namer(codec: object) -> Callable[[type], str]:
    """The codec's own name for a class where it has one (register_type may rename), else the default."""
    wire_name = getattr(codec, "wire_name", None)

    def name(cls: type) -> str:
        if callable(wire_name):
            try:
                found = wire_name(cls)
            except (KeyError, LookupError):
                found = None
            if isinstance(found, str):
                return found
        return type_name(cls)

    return name


def _json_value(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, type):
        return qualified_name(value)
    if isinstance(value, tuple | list):
        return [_json_value(item) for item in value]
    return repr(value)


def _options_text(spec: HandlerSpec) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in sorted(spec.actor_options.items()))
