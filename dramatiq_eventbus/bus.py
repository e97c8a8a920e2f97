"""The EventBus: one configuration, and the publish() pipeline."""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import re
import threading
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager, contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, Protocol, overload

import dramatiq
from dramatiq.broker import Broker
from dramatiq.brokers.stub import StubBroker

from . import signing
from .actors import declare_actors, handler_actor
from .backends import Backend, DramatiqBackend, InlineBackend
from .brokers import BrokerSupport, RedisLaneStore, broker_from_url, support_for
from .brokers.limits import DEFAULT_MAX_MESSAGE_BYTES
from .brokers.urls import redact as _redacted
from .codecs import Codec, CustomTypes, make_codec
from .codecs.names import qualified_name
from .delivery import Delivery, PublishBuffer
from .errors import ConfigurationError, InterestedFailed
from .instrumentation import Instrument, Instruments
from .metadata import EventMetadata, new_metadata
from .middleware import install as install_middleware
from .ordering import (
    DEFAULT_LANE_PREFIX,
    DEFAULT_LEASE_SECONDS,
    DEFAULT_STALL_SECONDS,
    AckingLaneGate,
    DeliveryLaneGate,
    GatedCoordinator,
    LaneCoordinator,
    LaneStatus,
    LaneStore,
    LocalCoordinator,
    SharedCallsCoordinator,
)
from .partition import partition_key
from .registry import HandlerFactory, HandlersConfig, Registry
from .routing import Queues
from .signing import Signer
from .untrusted import shown

logger = logging.getLogger("dramatiq_eventbus")

BACKENDS = ("dramatiq", "inline")

#: Below this, ordinary events would be refused.
MIN_MAX_MESSAGE_BYTES = 1024
#: How much of an event's repr an error shows: enough to tell which event it was.


@dataclass(frozen=True)
class BusConfig:
    """Everything configure() resolved, swapped in whole so a publish() never sees half of it.

    Parameters:
      registry(Registry): Event class to handlers.
      broker(Broker): Where the handlers' actors live.
      codec(Codec): How events cross the broker.
      backend(Backend): Where publish() hands its deliveries.
      queues(Queues): The two queue names.
      actors(Mapping[str, dramatiq.Actor]): Each handler's actor, by actor name.
      lanes(LaneStore | None): Where partitioned events keep their order across the
        cluster; None when the bus has no Redis, and order holds within a process only.
      owns_broker(bool): The bus made the broker from a URL, and closes it when replaced.
      signer(Signer | None): Signs the messages sent, and verifies those run; None without a secret key.
      arguments(Mapping[str, Any]): The configure() arguments this came from, for reconfigure().
    """

    registry: Registry
    broker: Broker
    codec: Codec
    backend: Backend
    queues: Queues
    actors: Mapping[str, dramatiq.Actor[Any, Any]]
    lanes: LaneStore | None
    owns_broker: bool
    signer: Signer | None
    arguments: Mapping[str, Any] = field(repr=False)  # they hold secret_key and the broker URL


class EventBus:
    """An event bus: a registry of handlers, a broker, a codec and a backend.

    Most applications use the default instance through the module-level
    ``configure()`` and ``publish()``. Create another to keep two buses apart.

    Parameters:
      sets_global_broker(bool): Make each configured broker Dramatiq's global broker too,
        so that ``dramatiq your.module`` finds the handlers' actors. The default bus does.
    """

    def __init__(self, *, sets_global_broker: bool = False) -> None:
        self._config: BusConfig | None = None
        self._lock = threading.Lock()
        # Held while a configuration is built, so that configure() and register_type() never
        # build from one configuration and both swap theirs in, the second undoing the first.
        self._configuring = threading.RLock()
        self._recorder: PublishRecorder | None = None
        self._interceptors: list[Callable[[], PublishRecorder | None]] = []
        # One buffer per thread or asyncio task, for deferred() blocks.
        self._deferred: ContextVar[_Deferral | None] = ContextVar(f"eventbus_deferred_{id(self)}", default=None)
        self._sets_global_broker = sets_global_broker
        self.custom_types = CustomTypes()
        self.instruments = Instruments()

    # -- configuration -----------------------------------------------------------------------

    def configure(
        self,
        *,
        handlers: HandlersConfig,
        broker: Broker | str | None = None,
        backend: str | Backend = "dramatiq",
        queue: str = "events",
        partitioned_queue: str = "events_partitioned",
        default_actor_options: Mapping[str, Any] | None = None,
        codec: str | Codec = "typed",
        secret_key: str | bytes | None = None,
        secret_keys: Sequence[str | bytes] | None = None,
        pickle_fallback: bool = False,
        redis_url: str | None = None,
        lane_lease_seconds: float = DEFAULT_LEASE_SECONDS,
        lane_stall_seconds: float = DEFAULT_STALL_SECONDS,
        lane_prefix: str = DEFAULT_LANE_PREFIX,
        redis_heartbeat_seconds: float | None = None,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        handler_factory: HandlerFactory | None = None,
    ) -> EventBus:
        """Resolve, validate and apply a configuration, replacing any earlier one.

        Each handler class gets one instance, made here (so a handler that cannot be made
        fails configure(), not every message), and shared by every thread of the process:
        publishers call its ``interested``, worker threads its ``handle_event``, at once.
        Keep per-event state in local variables, not on ``self``.

        Parameters:
          handlers: Event class (or ``"pkg.module:Name"``) to a list of handler classes
            (or strings); or a ``"pkg.module:ATTR"`` string naming such a mapping.
          broker: A ``redis://`` or ``amqp://`` URL, ``"stub"``, or a Broker instance.
            Default: ``EVENTBUS_BROKER_URL``, else Dramatiq's global broker.
          backend: ``"dramatiq"`` (enqueue messages), ``"inline"`` (run handlers in the
            caller) or a Backend instance.
          queue: The queue for events without a partition key.
          partitioned_queue: The queue for events with a partition key.
          default_actor_options: Actor options for every handler, under each handler's own.
          codec: ``"typed"`` (readable JSON, the default), ``"pickle"`` (signed dill) or a
            Codec instance.
          secret_key: The key (at least 16 bytes) that signs every message sent, and without
            which a worker runs no message; it also signs pickled payloads, and ``"pickle"``
            requires it.
          secret_keys: Keys being rotated, instead of ``secret_key``: the first signs, any
            verifies. Roll out ``[new, old]`` everywhere, then ``[new]``.
          pickle_fallback: In typed mode, send an event the typed codec cannot represent
            as a signed pickle (needs ``secret_key``) instead of raising TypeError.
          redis_url: The Redis that keeps partitioned events in order across the cluster
            when the broker is not Redis (a Redis broker's own Redis is used otherwise).
          lane_lease_seconds: How long a crashed worker can hold a lane's head.
          lane_stall_seconds: How long a lane waits for a head that was never started
            before sending it again.
          lane_prefix: The prefix of the lanes' keys in Redis (default ``"eventbus"``).
            Applications that keep lanes in one Redis database each need their own, as each
            needs its own Dramatiq queues: a worker sends the stalled heads of every lane
            under its prefix again, through its own broker.
          redis_heartbeat_seconds: With a bus-made Redis broker, how long a worker may be
            silent before the messages it held go back to their queue (Dramatiq's default: 60).
          max_message_bytes: The largest message a worker's consumer reads (with the bus's
            brokers); a larger one, or one holding more than one JSON object or list per 64 bytes
            of this limit, is dead-lettered before it is parsed. Default 1 MiB.
          handler_factory: Makes each handler's one instance: called with the handler class,
            it returns an instance of that class, e.g. ``lambda cls: container.get(cls)``, to
            give handlers their dependencies (``__init__(self, db)``). Called once per class,
            here. Default: the class called with no arguments.

        Raises:
          ConfigurationError: Naming the entry that is wrong: a handler that cannot be made,
            or a ``handler_factory`` that is not callable, raises, or returns something other
            than an instance of the class it was given.
        """
        arguments = {key: value for key, value in locals().items() if key != "self"}
        with self._configuring:
            queues = Queues(queue, partitioned_queue)
            keys = signing.secret_keys(secret_key, secret_keys)
            signer = Signer(keys) if keys else None
            resolved_broker, owns_broker = _resolve_broker(broker, redis_heartbeat_seconds)
            try:
                registry = Registry.from_config(
                    handlers,
                    allowed_options=frozenset(resolved_broker.actor_options),
                    default_options=default_actor_options,
                    handler_factory=handler_factory,
                )
                resolved_codec = _resolve_codec(codec, registry, self.custom_types, arguments)
                support = support_for(resolved_broker)
                message_bytes = _message_bytes(max_message_bytes)
                if support.set_max_message_bytes is not None:
                    support.set_max_message_bytes(message_bytes)
                lanes = _resolve_lanes(support, redis_url, lane_lease_seconds, lane_stall_seconds, lane_prefix)
                checked_bytes = message_bytes if support.set_max_message_bytes is not None else None
                resolved_backend = _resolve_backend(
                    backend, resolved_broker, resolved_codec, lanes, support, signer, checked_bytes
                )
                authentication = install_middleware(
                    resolved_broker,
                    coordinator=_coordinator(resolved_broker, support, lanes),
                    keep_dead_letter=support.keep_dead_letter,
                    signer=signer,
                )
                if support.set_message_check is not None:
                    support.set_message_check(functools.partial(authentication.problem, resolved_broker))
                if support.set_refusal_listener is not None:
                    support.set_refusal_listener(self.instruments.refused)
                actors = declare_actors(resolved_broker, registry, resolved_codec, queues, self.instruments)
            except BaseException:
                if owns_broker:
                    resolved_broker.close()
                raise
            config = BusConfig(
                registry,
                resolved_broker,
                resolved_codec,
                resolved_backend,
                queues,
                actors,
                lanes,
                owns_broker,
                signer,
                arguments,
            )
            with self._lock:
                previous, self._config = self._config, config
            if previous is not None and previous.owns_broker and previous.broker is not resolved_broker:
                previous.broker.close()
            if self._sets_global_broker:
                dramatiq.set_broker(resolved_broker)
        if support.lacks:
            logger.warning(
                "configure() was given a %s made elsewhere, which works, but without the bus's consumer: %s. "
                "Ordering, retries and dead letters hold as with the bus's own. Make the broker as %s "
                "(same arguments) to have these too.",
                type(resolved_broker).__name__,
                "; ".join(support.lacks),
                support.instead,
            )
        return self

    def reconfigure(self, **changes: Any) -> EventBus:
        """Configure again with the last configure()'s arguments, updated by ``changes``."""
        with self._configuring:
            return self.configure(**{**self.config.arguments, **changes})

    def lanes(self, *, older_than_seconds: float = 0.0) -> list[LaneStatus]:
        """The lanes whose head has waited longer than ``older_than_seconds``, oldest first.

        Raises:
          ConfigurationError: The bus has no Redis for lanes.
        """
        lanes = self.config.lanes
        if lanes is None:
            raise ConfigurationError("this bus has no Redis for lanes: partitioned events are ordered per process")
        return lanes.lanes(older_than_seconds=older_than_seconds)

    def add_instrument(self, instrument: Instrument) -> None:
        """Let ``instrument`` watch this bus's publish() calls and its handler runs in this process.

        Takes effect at once, and lasts across configure() calls. Add it in publishers and
        workers alike (the OpenTelemetry and Prometheus integrations do it for you).

        Parameters:
          instrument(Instrument): An instance of a subclass of :class:`~.instrumentation.Instrument`.

        Raises:
          TypeError: It is not an Instrument.
        """
        self.instruments.add(instrument)

    def remove_instrument(self, instrument: Instrument) -> None:
        """Stop ``instrument`` watching this bus; one not added is ignored."""
        self.instruments.remove(instrument)

    # The same signature as CustomTypes.register, on purpose: this is its public door.
    def register_type(
        self,
        cls: type,
        *,
        encode: Callable[[Any], Any] | None = None,
        decode: Callable[[Any], Any] | None = None,
        name: str | None = None,
        aliases: Sequence[str] = (),
    ) -> None:
        """Teach the typed codec a class of your own; see :class:`~.codecs.CustomTypes`.

        Without ``encode`` and ``decode``, a dataclass, attrs, pydantic, NamedTuple or Enum
        class is carried by its fields, which is how an event class gets a stable ``name``
        or ``aliases`` for the names it had before a move or rename.

        It takes effect at once: on a configured bus, the codec is rebuilt with it and
        swapped in for publish() and for this process's handler actors together (a
        ``Codec`` object given to configure() is left as it is). It lasts across configure()
        calls. Call it in publishers and workers alike.

        Parameters:
          cls: The class.
          encode: Turns an instance into a value the typed codec can encode; with ``decode``.
          decode: Turns that value back into an instance; with ``encode``.
          name: The class's name on the wire; default ``package.module:QualName``.
          aliases: Names the class went by before; messages under them still decode.

        Raises:
          ConfigurationError: Naming what is wrong with the registration, or, on a configured
            bus, what the codec cannot take (a wire name another class has). The
            registration is then not kept, and the configuration is unchanged.
        """
        with self._configuring:
            config = self._config
            codec = None if config is None else config.arguments["codec"]
            if config is None or not isinstance(codec, str):
                self.custom_types.register(cls, encode=encode, decode=decode, name=name, aliases=aliases)
                return
            # Built from a copy first, so that a registration the codec refuses is not kept.
            candidate = CustomTypes()
            for known in self.custom_types:
                candidate.register(
                    known.cls, encode=known.encode, decode=known.decode, name=known.name, aliases=known.aliases
                )
            candidate.register(cls, encode=encode, decode=decode, name=name, aliases=aliases)
            rebuilt = _resolve_codec(codec, config.registry, candidate, config.arguments)
            self.custom_types.register(cls, encode=encode, decode=decode, name=name, aliases=aliases)
            backend = InlineBackend(rebuilt) if config.arguments["backend"] == "inline" else config.backend
            # The actors first: once publish() encodes with the new codec, this process's
            # worker threads decode with it too. The actors are updated in place rather than
            # declared again, so that no running worker ever looks one up while it is gone.
            for actor in config.actors.values():
                body = handler_actor(actor)
                if body is not None:
                    body.codec = rebuilt
            with self._lock:
                self._config = dataclasses.replace(config, codec=rebuilt, backend=backend)

    @property
    def config(self) -> BusConfig:
        """The current configuration; raises ConfigurationError before configure()."""
        config = self._config
        if config is None:
            raise ConfigurationError(
                "the event bus is not configured: call dramatiq_eventbus.configure(handlers=...) first"
            )
        return config

    @property
    def is_configured(self) -> bool:
        return self._config is not None

    @property
    def broker(self) -> Broker:
        return self.config.broker

    # -- publishing --------------------------------------------------------------------------

    @overload
    def publish(self, events: list[Any] | tuple[Any, ...]) -> list[str]: ...  # type: ignore[overload-overlap]

    @overload
    def publish(self, events: object) -> str: ...

    def publish(self, events: object) -> str | list[str]:
        """Send an event, or a list of events, to every interested handler; return their ids.

        The pipeline: look up the handlers of each event's exact class, ask each whether it
        is ``interested``, encode the event once, route it to a queue by its partition key,
        and hand every delivery of the call to the backend together. Every event is encoded
        before anything is sent, so one that cannot be encoded fails the call with nothing sent.

        Each event gets its metadata (see :class:`~.metadata.EventMetadata`), carried in its
        messages' options: a new ``event_id``, the time, the ``correlation_id`` of the enclosing
        ``correlation()`` block or handler (else its own id) and, inside a handler, the
        ``causation_id`` of the event being handled.

        Parameters:
          events: An event, or a list or tuple of events.

        Returns:
          str | list[str]: The event's ``event_id``; for a list or tuple, a list of them in
          order (also for events no handler is interested in).

        Raises:
          TypeError: A builtin value (``None``, a ``dict``...) instead of an event.
          InterestedFailed: A handler's ``interested`` raised; nothing of the call was sent.
          EventEncodeError: An event the codec cannot carry; nothing of the call was sent.
          PublishError: The broker refused or dropped messages.
          ConfigurationError: The bus is not configured.
        """
        config = self.config
        batch = _as_event_list(events)
        metadata = [new_metadata() for _ in batch]
        instruments = self.instruments if self.instruments.active else None
        if instruments is None:
            self.hand_over(batch, _routed(config, batch, metadata, None), metadata)
        else:
            try:
                self.hand_over(batch, _routed(config, batch, metadata, instruments), metadata)
            except BaseException as exc:
                instruments.after_publish(metadata, exc)
                raise
            instruments.after_publish(metadata, None)
        if batch is events:
            return [meta.event_id for meta in metadata]
        return metadata[0].event_id

    @overload
    async def publish_async(self, events: list[Any] | tuple[Any, ...]) -> list[str]: ...  # type: ignore[overload-overlap]

    @overload
    async def publish_async(self, events: object) -> str: ...

    async def publish_async(self, events: object) -> str | list[str]:
        """:meth:`publish` for a coroutine: ``await bus.publish_async(event)``, with the broker I/O
        off the event loop.

        The same pipeline, arguments, return values and errors as :meth:`publish`. Everything
        that belongs to the caller happens on the caller's thread and in its task, before the
        first ``await``: the handlers' ``interested``, the encoding, the metadata (the
        correlation id of the caller's ``correlation()`` block or handler), and the choice of
        where the call goes: the caller's ``deferred()`` or :meth:`deferred_async` block, an
        interceptor, or a test mailbox take it there and then, with no thread involved. Only
        a send to the broker (the backend's ``deliver``) runs in a worker thread
        (``asyncio.to_thread``, with a copy of the caller's context variables), while the
        event loop runs other tasks.

        Cancelling the awaiting task does not stop a send that started: its events may still
        leave, although the caller sees ``CancelledError``.

        Parameters:
          events: An event, or a list or tuple of events.

        Returns:
          str | list[str]: As :meth:`publish`.

        Raises:
          TypeError: A builtin value (``None``, a ``dict``...) instead of an event.
          InterestedFailed: A handler's ``interested`` raised; nothing of the call was sent.
          EventEncodeError: An event the codec cannot carry; nothing of the call was sent.
          PublishError: The broker refused or dropped messages.
          ConfigurationError: The bus is not configured.
        """
        config = self.config
        batch = _as_event_list(events)
        metadata = [new_metadata() for _ in batch]
        instruments = self.instruments if self.instruments.active else None
        if instruments is None:
            await self.hand_over_async(batch, _routed(config, batch, metadata, None), metadata)
        else:
            try:
                await self.hand_over_async(batch, _routed(config, batch, metadata, instruments), metadata)
            except BaseException as exc:
                instruments.after_publish(metadata, exc)
                raise
            instruments.after_publish(metadata, None)
        if batch is events:
            return [meta.event_id for meta in metadata]
        return metadata[0].event_id

    def hand_over(
        self, events: Sequence[object], deliveries: Sequence[Delivery], metadata: Sequence[EventMetadata] = ()
    ) -> None:
        """Where one publish() call's work goes, innermost first: an open ``deferred()`` block,
        an interceptor (a database transaction, an outbox), a recording test mailbox, or the
        backend. A deferral that ends calls this again, and so reaches the next one out.
        """
        target = self._taker()
        if target is not None:
            # A test mailbox sees every event, even one no handler wants, as the reference's does.
            target.published(events, deliveries, metadata)
        elif deliveries:
            self.config.backend.deliver(deliveries)

    async def hand_over_async(
        self, events: Sequence[object], deliveries: Sequence[Delivery], metadata: Sequence[EventMetadata] = ()
    ) -> None:
        """:meth:`hand_over` for a coroutine: the same choice of taker, made here, in the caller's
        thread and task; only the backend's send, the broker I/O, runs in a worker thread
        (``asyncio.to_thread``, with a copy of the caller's context variables)."""
        target = self._taker()
        if target is not None:
            target.published(events, deliveries, metadata)
        elif deliveries:
            await asyncio.to_thread(self.config.backend.deliver, deliveries)

    def _taker(self) -> PublishRecorder | None:
        """What takes a publish() call now, in the caller's context: a ``deferred()`` block, an
        interceptor, a test mailbox, innermost first; None for the backend."""
        deferral = self._deferred.get()
        target: PublishRecorder | None = self._intercepting()
        if deferral is not None and (target is None or target in deferral.outer):
            # The deferred() block is innermost: it opened inside any transaction still open.
            target = deferral
        if target is None:
            target = self._recorder
        return target

    @contextmanager
    def deferred(self) -> Iterator[None]:
        """Buffer every publish() of this thread or task in the block; send them when it exits.

        Nothing is sent if the block exits by an exception. Blocks nest, and only the
        outermost one sends. Events are checked and encoded at publish(), as always, so a
        bad event still fails at its publish() call.
        """
        if self._deferred.get() is not None:
            yield
            return
        deferral = _Deferral(outer=self._intercepting())
        token = self._deferred.set(deferral)
        try:
            yield
        finally:
            self._deferred.reset(token)
        if deferral.events:
            self.hand_over(deferral.events, deferral.deliveries, deferral.metadata)

    @asynccontextmanager
    async def deferred_async(self) -> AsyncIterator[None]:
        """:meth:`deferred` for a coroutine: ``async with bus.deferred_async():``.

        The same buffer, shared with ``deferred()`` blocks and seen by ``publish()`` and
        :meth:`publish_async` alike (and by sync code the task runs in a thread with a copy
        of its context, as FastAPI does for a plain ``def`` endpoint). When the outermost
        block exits normally, its events are handed on as :meth:`publish_async` hands them:
        a send to the broker runs in a worker thread, off the event loop, while a plain
        ``deferred()`` exit sends on the caller's thread. Nothing is sent if the block exits
        by an exception.

        Raises:
          PublishError: At the exit, the broker refused or dropped messages.
        """
        if self._deferred.get() is not None:
            yield
            return
        deferral = _Deferral(outer=self._intercepting())
        token = self._deferred.set(deferral)
        try:
            yield
        finally:
            self._deferred.reset(token)
        if deferral.events:
            await self.hand_over_async(deferral.events, deferral.deliveries, deferral.metadata)

    def _intercepting(self) -> PublishRecorder | None:
        """The innermost interceptor that wants publish() calls now, if any."""
        if not self._interceptors:
            return None  # the usual case, without making a generator: 0.25 µs of every publish()
        return next((found for find in reversed(self._interceptors) if (found := find()) is not None), None)

    @property
    def is_recording(self) -> bool:
        """Whether a test mailbox (``recording_to``) takes publish() calls instead of the backend."""
        return self._recorder is not None

    def add_interceptor(self, find: Callable[[], PublishRecorder | None]) -> None:
        """Let ``find()`` take publish() calls whenever it returns a recorder (e.g. the open
        transaction of a database session); the latest added is asked first."""
        self._interceptors.append(find)

    def remove_interceptor(self, find: Callable[[], PublishRecorder | None]) -> None:
        self._interceptors.remove(find)

    @contextmanager
    def recording_to(self, recorder: PublishRecorder | None) -> Iterator[None]:
        """Hand every publish() to ``recorder`` instead of the backend, for the duration.

        The test mailbox uses this; it holds across configure() calls made inside the block,
        and the innermost block wins (``None`` sends to the configured backend again).
        """
        with self._lock:
            previous, self._recorder = self._recorder, recorder
        try:
            yield
        finally:
            with self._lock:
                self._recorder = previous


class _Deferral(PublishBuffer):
    """The publish() calls of one ``deferred()`` block, to be handed on together.

    Parameters:
      outer(PublishRecorder | None): The interceptor (an open transaction) that was taking
        publish() calls when the block began; one that starts later is inside the block.
    """

    def __init__(self, outer: PublishRecorder | None) -> None:
        super().__init__()
        self.outer = () if outer is None else (outer,)


class PublishRecorder(Protocol):
    """What takes publish() calls in place of the backend: the test mailbox."""

    def published(
        self, events: Sequence[object], deliveries: Sequence[Delivery], metadata: Sequence[EventMetadata] = ()
    ) -> None:
        """One publish() call: every event in order, the deliveries of those a handler wants, and
        each event's metadata, in the order of ``events``."""


def _routed(
    config: BusConfig, batch: Sequence[object], metadata: list[EventMetadata], instruments: Instruments | None
) -> list[Delivery]:
    """The deliveries of one publish() call: each event to each interested handler, encoded
    once and routed by its partition key. With instruments, each event's metadata in
    ``metadata`` is replaced by the one they add a trace context to.

    Raises:
      InterestedFailed: A handler's ``interested`` raised.
      EventEncodeError: An event the codec cannot carry.
    """
    deliveries: list[Delivery] = []
    for position, event in enumerate(batch):
        handlers = config.registry.handlers_for(type(event))
        if not handlers:
            if instruments is not None:
                metadata[position] = instruments.before_publish(event, metadata[position], (), (), None)
            _warn_unhandled(config.registry, type(event))
            continue
        interested = []
        for spec in handlers:
            try:
                wanted = spec.interested(event)
            except Exception as exc:
                # Raised before anything of the call is handed over: nothing is sent.
                raise InterestedFailed(spec.name, event, exc) from exc
            if wanted:
                interested.append(spec)
        key = partition_key(event) if interested or instruments is not None else None
        if instruments is not None:
            skipped = [spec for spec in handlers if spec not in interested]
            metadata[position] = instruments.before_publish(event, metadata[position], interested, skipped, key)
        if not interested:
            continue
        payload = config.codec.encode(event)
        queue_name = config.queues.for_key(key)
        meta = metadata[position]
        deliveries.extend(Delivery(spec, event, payload, key, queue_name, meta) for spec in interested)
    return deliveries


def _resolve_broker(broker: Broker | str | None, redis_heartbeat_seconds: float | None) -> tuple[Broker, bool]:
    if isinstance(broker, Broker):
        return broker, False
    if broker is None:
        from .environment import broker_url_from_env

        url = broker_url_from_env()
        if url is None:
            return dramatiq.get_broker(), False
        broker = url
    if isinstance(broker, str):
        return broker_from_url(broker, redis_heartbeat_seconds=redis_heartbeat_seconds), True
    raise ConfigurationError(
        f"broker must be a URL string, 'stub' or a dramatiq Broker, not {type(broker).__qualname__}"
    )


#: A lane prefix: words of letters, digits, ``_``, ``.`` and ``-``, joined by ``:``.
_LANE_PREFIX = re.compile(r"[A-Za-z0-9_.-]+(:[A-Za-z0-9_.-]+)*")
_LANE_PREFIX_MAX_CHARACTERS = 64


def _resolve_lanes(
    support: BrokerSupport, redis_url: str | None, lease: float, stall: float, prefix: str
) -> RedisLaneStore | None:
    if not (isinstance(lease, int | float) and lease > 0 and isinstance(stall, int | float) and stall > 0):
        raise ConfigurationError(
            f"lane_lease_seconds and lane_stall_seconds must be positive numbers, not {lease!r} and {stall!r}"
        )
    if not (
        isinstance(prefix, str)
        and len(prefix) <= _LANE_PREFIX_MAX_CHARACTERS
        and _LANE_PREFIX.fullmatch(prefix)
        and "lane" not in prefix.split(":")  # "a:lane" would read the keys of prefix "a"'s lanes
    ):
        raise ConfigurationError(
            f"lane_prefix must be 1 to {_LANE_PREFIX_MAX_CHARACTERS} letters, digits, '_', '.' or '-', in words "
            f"joined by ':' (none of them 'lane'), e.g. 'shop:eventbus'; not {shown(prefix)}"
        )
    if redis_url is not None:
        try:
            return RedisLaneStore.from_url(
                redis_url,
                prefix=prefix,
                lease_seconds=lease,
                stall_seconds=stall,
                broker=(support.redis, support.redis_keys),
            )
        except ValueError as exc:
            raise ConfigurationError(f"redis_url {_redacted(redis_url)!r} is not a Redis URL: {exc}") from None
    if support.redis is None:
        return None
    return RedisLaneStore(
        support.redis,
        prefix=prefix,
        lease_seconds=lease,
        stall_seconds=stall,
        broker_keys=support.redis_keys,
        connections=support.redis_connections,
    )


def _coordinator(broker: Broker, support: BrokerSupport, lanes: RedisLaneStore | None) -> LaneCoordinator:
    """How the workers keep lanes: per fetch in the consumer where it can, else in the worker threads."""
    if support.set_fetch_hook is not None:
        acking_gate = AckingLaneGate(lanes) if lanes is not None and lanes.sends_heads else None
        support.set_fetch_hook(acking_gate)
        if acking_gate is not None:
            return GatedCoordinator(acking_gate, support.send)
    if support.set_delivery_hook is not None:
        delivery_gate = DeliveryLaneGate(lanes) if lanes is not None else None
        support.set_delivery_hook(delivery_gate)
        if delivery_gate is not None:
            return GatedCoordinator(delivery_gate, support.send)
    if lanes is None:
        # A StubBroker's workers all live in one process: order within it is order everywhere.
        return LocalCoordinator(warns=not isinstance(broker, StubBroker))
    return SharedCallsCoordinator(lanes, support.send)


def _resolve_codec(
    codec: str | Codec, registry: Registry, custom_types: CustomTypes, arguments: Mapping[str, Any]
) -> Codec:
    """The codec configure() named, for the registry's event classes; a Codec object as it is."""
    if isinstance(codec, Codec) and not isinstance(codec, str):
        return codec
    keys = signing.secret_keys(arguments["secret_key"], arguments["secret_keys"])
    return make_codec(
        codec,
        event_classes=registry.event_classes,
        custom_types=custom_types,
        secret_key=keys or None,
        pickle_fallback=arguments["pickle_fallback"],
    )


def _warn_unhandled(registry: Registry, event_class: type) -> None:
    """Warn of an event no handler is registered for, and of its base classes that have some."""
    bases = registry.subscribed_bases(event_class)
    if not bases:
        logger.warning("No handlers registered for event: %s", qualified_name(event_class))
        return
    logger.warning(
        "No handlers registered for event: %s; its base class%s %s %s handlers: subscriptions are to the exact "
        "class, register the handlers for %s too",
        qualified_name(event_class),
        "es" if len(bases) > 1 else "",
        ", ".join(map(qualified_name, bases)),
        "have" if len(bases) > 1 else "has",
        qualified_name(event_class),
    )


def _message_bytes(limit: object) -> int:
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < MIN_MAX_MESSAGE_BYTES:
        raise ConfigurationError(
            f"max_message_bytes must be a whole number of bytes of at least {MIN_MAX_MESSAGE_BYTES}, not {limit!r}"
        )
    return limit


def _resolve_backend(
    backend: str | Backend,
    broker: Broker,
    codec: Codec,
    lanes: LaneStore | None,
    support: BrokerSupport,
    signer: Signer | None,
    max_message_bytes: int | None,
) -> Backend:
    if backend == "dramatiq":
        return DramatiqBackend(broker, lanes=lanes, support=support, signer=signer, max_message_bytes=max_message_bytes)
    if backend == "inline":
        return InlineBackend(codec)
    if isinstance(backend, Backend) and not isinstance(backend, str):
        return backend
    raise ConfigurationError(
        f"backend must be one of {', '.join(map(repr, BACKENDS))} "
        f"or an object with deliver(deliveries), not {backend!r}"
    )


def _as_event_list(events: object) -> Sequence[object]:
    batch: Sequence[object] = events if type(events) in (list, tuple) else (events,)  # type: ignore[assignment]
    for event in batch:
        # Builtin values (None, str, int, dict, a nested list...) are never events: an event
        # is an instance of a class the application defined.
        if type(event).__module__ == "builtins":
            raise TypeError(
                f"publish() takes an event object or a list of them, not {type(event).__qualname__}: {event!r:.80}"
            )
    return batch
