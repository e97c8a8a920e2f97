"""The registry: which handlers each event class goes to, resolved and checked once.

``configure(handlers=...)`` accepts classes or ``"pkg.module:Name"`` strings, so the
wiring can name every context without the contexts importing each other. Everything
is resolved and validated here, at configure time, so that publish() only does a dict
lookup and a mistake is reported once, with the entry that caused it.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from .codecs.names import qualified_name
from .errors import ConfigurationError
from .handler import Handler, handler_name

#: Retries of a handler that sets none: five attempts in all, as the reference's max_attempts 5.
DEFAULT_MAX_RETRIES = 4
#: Priority of a handler that sets none; 0 is the most urgent of 0-9.
DEFAULT_PRIORITY = 0

HandlersConfig = Mapping[Any, Sequence[Any]] | str
#: Makes the one instance of a handler class: given the class, returns an instance of it.
HandlerFactory = Callable[[type], Any]


@dataclass(frozen=True)
class HandlerSpec:
    """One handler class, resolved and validated.

    Parameters:
      handler_class(type): The class as configured.
      instance(Any): The one instance whose ``interested`` and ``handle_event`` are called,
        made once at configure() and shared by every thread of the process.
      name(str): Its stable actor name, ``package.module.ClassName``.
      priority(int): 0-9, lower is more urgent.
      actor_options(Mapping[str, Any]): Options for its Dramatiq actor, defaults included.
      interested(Callable[[Any], bool]): The instance's ``interested``, or always-True for a
        handler that has none.
    """

    handler_class: type
    instance: Any
    name: str
    priority: int
    actor_options: Mapping[str, Any] = field(default_factory=dict)
    interested: Callable[[Any], bool] = field(default=lambda event: True, compare=False, repr=False)

    def __repr__(self) -> str:
        return f"<handler {self.name}>"


class Registry:
    """Event class to handlers, in configured order, looked up by exact class.

    Parameters:
      routes(Mapping[type, tuple[HandlerSpec, ...]]): The resolved mapping.
    """

    def __init__(self, routes: Mapping[type, tuple[HandlerSpec, ...]]) -> None:
        self._routes = MappingProxyType(dict(routes))
        # Each handler's routes, by name: events_of() for every handler was a scan of every route
        # for each, quadratic in the registry's size.
        self._routes_by_name: dict[str, list[tuple[type, HandlerSpec]]] = {}
        for event_class, specs in self._routes.items():
            for spec in specs:
                self._routes_by_name.setdefault(spec.name, []).append((event_class, spec))

    def events_of(self, spec: HandlerSpec) -> frozenset[type]:
        """The event classes ``spec`` is registered for."""
        return frozenset(
            event_class for event_class, routed in self._routes_by_name.get(spec.name, ()) if routed == spec
        )

    def handlers_for(self, event_class: type) -> tuple[HandlerSpec, ...]:
        """The handlers registered for exactly ``event_class``; empty when there are none."""
        return self._routes.get(event_class, ())

    def subscribed_bases(self, event_class: type) -> tuple[type, ...]:
        """The base classes of ``event_class`` that have handlers, nearest first.

        Subscriptions are to the exact class, so these handlers do not get ``event_class``'s
        events; a publish() that finds no handler says so, since that is rarely what was meant.
        """
        return tuple(base for base in event_class.__mro__[1:] if base in self._routes)

    @property
    def event_classes(self) -> tuple[type, ...]:
        return tuple(self._routes)

    @property
    def handlers(self) -> tuple[HandlerSpec, ...]:
        """Every distinct handler, each once, in the order first configured."""
        seen: dict[str, HandlerSpec] = {}
        for specs in self._routes.values():
            for spec in specs:
                seen.setdefault(spec.name, spec)
        return tuple(seen.values())

    @classmethod
    def from_config(
        cls,
        handlers: HandlersConfig,
        *,
        allowed_options: frozenset[str] | set[str],
        default_options: Mapping[str, Any] | None = None,
        handler_factory: HandlerFactory | None = None,
    ) -> Registry:
        """Resolve and check a ``handlers`` mapping; raise ConfigurationError naming any bad entry.

        Each handler class gets one instance, made here, so that a handler that cannot be
        made fails configure() rather than every message; it is shared by all the threads
        that publish (``interested``) or run the handler (``handle_event``).

        Parameters:
          handlers: Event class (or ``"pkg.module:Name"``) to a list of handler classes
            (or strings); or a ``"pkg.module:ATTR"`` string naming such a mapping.
          allowed_options: The actor option names the broker's middleware accepts.
          default_options: Actor options applied to every handler under its own.
          handler_factory: Makes each handler's instance from its class; None calls the
            class with no arguments.

        Raises:
          ConfigurationError: Naming the entry that is wrong.
        """
        if handler_factory is not None and not callable(handler_factory):
            raise ConfigurationError(
                f"handler_factory must be a callable that takes a handler class and returns an instance of it, "
                f"not {handler_factory!r}"
            )
        if isinstance(handlers, str):
            handlers = _resolve_handlers_mapping(handlers)
        if not isinstance(handlers, Mapping):
            raise ConfigurationError(
                f"handlers must be a mapping of event class to a list of handler classes, "
                f"or a 'pkg.module:ATTR' string naming one, not {type(handlers).__qualname__}"
            )
        allowed = frozenset(allowed_options) | {"priority"}
        if default_options is not None and not isinstance(default_options, Mapping):
            raise ConfigurationError(
                f"default_actor_options must be a dict of actor options, not {type(default_options).__qualname__}"
            )
        defaults = dict(default_options or {})
        _check_options("default actor options", defaults, allowed)
        specs: dict[type, HandlerSpec] = {}
        routes: dict[type, tuple[HandlerSpec, ...]] = {}
        for raw_event, raw_handlers in handlers.items():
            event_class = _resolve_class(raw_event, what="event")
            if event_class in routes:
                raise ConfigurationError(f"event class {qualified_name(event_class)} is configured twice")
            if isinstance(raw_handlers, str | bytes) or not isinstance(raw_handlers, Sequence):
                raise ConfigurationError(
                    f"handlers for {qualified_name(event_class)} must be a list of handler classes, "
                    f"not {type(raw_handlers).__qualname__}"
                )
            resolved: list[HandlerSpec] = []
            for raw_handler in raw_handlers:
                handler_class = _resolve_class(raw_handler, what=f"handler of {qualified_name(event_class)}")
                if handler_class not in specs:
                    specs[handler_class] = _make_spec(handler_class, allowed, defaults, handler_factory)
                spec = specs[handler_class]
                if spec in resolved:
                    raise ConfigurationError(f"handler {spec.name} is listed twice for {qualified_name(event_class)}")
                resolved.append(spec)
            routes[event_class] = tuple(resolved)
        _check_unique_names(specs.values())
        return cls(routes)


def import_string(path: str) -> Any:
    """Import ``"pkg.module:Name"`` (or ``"pkg.module:Outer.Inner"``) and return the object."""
    module_name, sep, attribute = path.partition(":")
    if not sep or not module_name or not attribute:
        raise ConfigurationError(f"{path!r} is not an import path of the form 'pkg.module:Name'")
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigurationError(f"cannot import {path!r}: {exc}") from exc
    for part in attribute.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ConfigurationError(
                f"cannot import {path!r}: module {module_name!r} has no attribute {attribute!r}"
            ) from None
    return obj


def _resolve_handlers_mapping(path: str) -> Mapping[Any, Sequence[Any]]:
    mapping = import_string(path)
    if not isinstance(mapping, Mapping):
        raise ConfigurationError(
            f"{path!r} must name a dict of event class to handlers, not {type(mapping).__qualname__}"
        )
    return mapping


def _resolve_class(raw: object, *, what: str) -> type:
    obj = import_string(raw) if isinstance(raw, str) else raw
    if not isinstance(obj, type):
        shown = f"{raw!r}" if not isinstance(raw, str) else f"{raw!r}, which is {obj!r},"
        raise ConfigurationError(f"{what} {shown} is not a class")
    return obj


def _make_spec(
    handler_class: type, allowed: frozenset[str], defaults: Mapping[str, Any], factory: HandlerFactory | None
) -> HandlerSpec:
    name = handler_name(handler_class)
    if not callable(getattr(handler_class, "handle_event", None)):
        raise ConfigurationError(f"handler {name} has no handle_event(event) method")
    _check_handle_event_defined(handler_class, name)
    own_options = getattr(handler_class, "actor_options", None) or {}
    if not isinstance(own_options, Mapping):
        raise ConfigurationError(f"{name}.actor_options must be a dict, not {type(own_options).__qualname__}")
    _check_options(f"{name}.actor_options", own_options, allowed)
    options = {"max_retries": DEFAULT_MAX_RETRIES, **defaults, **own_options}
    priority = options.pop("priority", DEFAULT_PRIORITY)
    instance = _make_instance(handler_class, name, factory)
    interested = getattr(instance, "interested", None)
    if interested is not None and not callable(interested):
        raise ConfigurationError(f"{name}.interested must be a method taking the event")
    refuse_async_interested(name, interested)
    return HandlerSpec(
        handler_class, instance, name, priority, MappingProxyType(options), interested or _always_interested
    )


def _check_handle_event_defined(handler_class: type, name: str) -> None:
    """Refuse a Handler subclass that inherits Handler's own handle_event, which only raises.

    Without this, configure() succeeds and every message fails with NotImplementedError
    until it is dead-lettered: the usual cause is a method given another name.
    """
    if not (issubclass(handler_class, Handler) and handler_class.handle_event is Handler.handle_event):
        return
    # The methods it does define that look meant to be it, to name in the error.
    near_misses = sorted(
        {
            attribute
            for klass in handler_class.__mro__
            if not issubclass(Handler, klass)  # neither Handler nor object
            for attribute, value in vars(klass).items()
            if "handle" in attribute.lower() and not attribute.startswith("__") and callable(value)
        }
    )
    hint = ""
    if near_misses:
        which = "it" if len(near_misses) == 1 else "the one meant to handle events"
        hint = f" (it defines {', '.join(f'{a}()' for a in near_misses)}; rename {which} handle_event)"
    raise ConfigurationError(
        f"handler {name} does not define handle_event(event): Handler's own only raises NotImplementedError, "
        f"so every message would fail. Define handle_event(self, event) on {handler_class.__qualname__}{hint}"
    )


def _make_instance(handler_class: type, name: str, factory: HandlerFactory | None) -> Any:
    """The handler's one instance, made now so that a handler that cannot be made fails configure()."""
    if factory is None:
        try:
            return handler_class()
        except Exception as exc:
            raise ConfigurationError(
                f"handler {name} cannot be created with no arguments: {exc!r}. To give handlers their "
                f"dependencies, pass configure(handler_factory=...): a callable that takes the handler class "
                f"and returns its instance"
            ) from exc
    try:
        instance = factory(handler_class)
    except Exception as exc:
        raise ConfigurationError(f"handler_factory failed to create handler {name}: {exc!r}") from exc
    if not isinstance(instance, handler_class):
        made = "None" if instance is None else f"a {type(instance).__qualname__}"
        raise ConfigurationError(
            f"handler_factory returned {made} for handler {name}: it must return an instance of "
            f"{handler_class.__qualname__}, the class it was given"
        )
    return instance


def refuse_async_interested(name: str, interested: object) -> None:
    """Refuse an ``async def interested``: publish() calls it synchronously and cannot await it.

    Its coroutine object, which is always true, would make the handler interested in every
    event, with nothing but a "never awaited" RuntimeWarning to tell.

    Parameters:
      name(str): The handler's name, for the error.
      interested(object): Its ``interested`` method.

    Raises:
      ConfigurationError: ``interested`` is a coroutine function.
    """
    if inspect.iscoroutinefunction(interested):
        raise ConfigurationError(
            f"{name}.interested is an async def, but interested() runs synchronously in the publisher, "
            "before anything is encoded or sent, so its answer could not be awaited (a coroutine is always "
            "true): make it a plain def. It must be pure anyway, with nothing to await; handle_event may be "
            "an async def"
        )


def _always_interested(event: object) -> bool:
    return True


def _check_options(where: str, options: Mapping[str, Any], allowed: frozenset[str]) -> None:
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise ConfigurationError(
            f"{where}: unknown actor option {', '.join(map(repr, unknown))}; "
            f"known options are {', '.join(sorted(allowed))}"
        )
    if "priority" in options:
        priority = options["priority"]
        if type(priority) is not int or not 0 <= priority <= 9:
            raise ConfigurationError(
                f"{where}: priority must be an int from 0 to 9 (lower is more urgent), not {priority!r}"
            )
    throws = options.get("throws")
    if throws is not None and not _are_exception_classes(throws):
        raise ConfigurationError(f"{where}: throws must be an exception class or a tuple of them, not {throws!r}")
    for name in ("max_retries", "min_backoff", "max_backoff", "time_limit"):
        if name in options and options[name] is not None:
            value = options[name]
            if type(value) is not int or value < 0:
                raise ConfigurationError(f"{where}: {name} must be a non-negative int, not {value!r}")


def _are_exception_classes(throws: object) -> bool:
    classes = throws if isinstance(throws, tuple) else (throws,)
    return all(isinstance(cls, type) and issubclass(cls, BaseException) for cls in classes)


def _check_unique_names(specs: Any) -> None:
    by_name: dict[str, type] = {}
    for spec in specs:
        other = by_name.setdefault(spec.name, spec.handler_class)
        if other is not spec.handler_class:
            raise ConfigurationError(f"two different handler classes share the actor name {spec.name}")
