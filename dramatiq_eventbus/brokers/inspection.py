"""What a consumer checks before a message reaches Dramatiq's worker.

A message put on a queue by anything other than a Dramatiq broker (a script, another
service, an attacker with broker access) can hold an envelope that Dramatiq cannot
decode, or fields of the wrong type that crash a consumer or worker thread far from the
message that caused it. The bus's consumers run every delivery through :func:`inspect_body`
first, and dead-letter whatever it refuses, with one log line saying why.

What it lets through is a :class:`ReceivedMessage`: Dramatiq's worker and middleware quote a
message in their log lines (``Failed to process message %s ...``, ``Message %s was skipped.``,
``Retrying message %r ...``), and a plain Message renders its whole arguments there, up to
``max_message_bytes``, and its id however long a forger made it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from itertools import islice
from typing import Any, Protocol, TypeVar
from weakref import WeakKeyDictionary

from dramatiq.broker import MessageProxy
from dramatiq.common import current_millis, q_name
from dramatiq.encoder import JSONEncoder
from dramatiq.message import Message, get_encoder
from dramatiq.middleware.retries import DEFAULT_MAX_BACKOFF

from ..metadata import option_problem as metadata_problem
from ..ordering.lanes import lane_name
from ..untrusted import REASON_CHARACTERS, SHOWN_CHARACTERS, briefly, cut, escaped, shown
from .limits import DEFAULT_MAX_MESSAGE_BYTES, size_problem

logger = logging.getLogger(__name__)

#: The envelope fields of a Dramatiq message, and the JSON types each must have.
_FIELD_TYPES: dict[str, tuple[type, ...]] = {
    "queue_name": (str,),
    "actor_name": (str,),
    "args": (list, tuple),
    "kwargs": (dict,),
    "options": (dict,),
    "message_id": (str,),
    "message_timestamp": (int, float),
}
_REQUIRED = ("queue_name", "actor_name", "args", "kwargs", "options")
#: How many of an envelope's unknown fields its refusal names.
_UNKNOWN_FIELDS_NAMED = 4

#: Options Dramatiq's middleware does arithmetic with: anything but a number (or null)
#: there raises inside a worker thread, outside any handler.
_NUMERIC_OPTIONS = frozenset(("retries", "max_retries", "min_backoff", "max_backoff", "time_limit", "max_age", "eta"))


class ReceivedId(str):
    """A message id read from a broker: the same str, whose repr is cut to a log line's measure.

    Dramatiq's lines name a message by ``%r`` of its id (AgeLimit's, Retries'), and a forged id
    may be as long as a message.
    """

    __slots__ = ()

    def __repr__(self) -> str:
        # The slice first: the repr of the whole would cost as much as the id is long.
        return shown(str.__getitem__(self, slice(SHOWN_CHARACTERS + 1)))


class ReceivedMessage(Message[Any]):
    """A message a consumer read from a broker and hands to Dramatiq's worker.

    A Dramatiq :class:`~dramatiq.message.Message` in every way (its fields, ``encode()``,
    ``copy()``, which keeps this class, pickling, equality with a Message of the same fields),
    but ``str()`` and ``repr()`` are bounded in length and cost, and escaped: a few items of
    its arguments and options, long values shortened, and its id a :class:`ReceivedId`.

    ``checked`` says the bus's :data:`MessageCheck` passed it as it was read: set by
    :func:`inspect_body` alone (it is no field, so nothing in a message can set it, and a
    copy is read again before it runs), it spares the lane gate and the authentication
    middleware a second and third verification of the same signature.
    """

    checked = False

    def __post_init__(self) -> None:
        super().__post_init__()  # type: ignore[no-untyped-call]
        if type(self.message_id) is str:
            object.__setattr__(self, "message_id", ReceivedId(self.message_id))

    def __str__(self) -> str:
        # Dramatiq's form, actor(arguments), each argument shortened, and the id: Dramatiq's lines
        # that quote a message this way ("Message %s was skipped.") otherwise do not say which it was.
        params = [briefly(arg, _ARGUMENT_CHARACTERS) for arg in self.args[:_ARGUMENTS_SHOWN]]
        params += [
            f"{escaped(str(name), SHOWN_CHARACTERS)}={briefly(value, _ARGUMENT_CHARACTERS)}"
            for name, value in islice(self.kwargs.items(), _ARGUMENTS_SHOWN)
        ]
        if len(self.args) + len(self.kwargs) > len(params):
            params.append("...")
        call = cut(f"{escaped(self.actor_name, SHOWN_CHARACTERS)}({', '.join(params)})", REASON_CHARACTERS)
        return f"{call} (id {self.message_id!r})"  # a ReceivedId: its repr is cut

    def __repr__(self) -> str:
        fields = ", ".join(f"{f.name}={briefly(getattr(self, f.name), _ARGUMENT_CHARACTERS)}" for f in _FIELDS)
        return cut(f"{type(self).__name__}({fields})", 2 * REASON_CHARACTERS)

    def __eq__(self, other: object) -> bool:
        # Message's own __eq__ (a dataclass's) holds only between instances of one class; a message
        # received is equal to the Message it was sent as, both ways (Python asks the subclass first).
        if isinstance(other, Message):
            return _astuple(self) == _astuple(other)
        return NotImplemented

    # Defining __eq__ would drop the inherited __hash__; a Message's raises (its options are a dict) all the same.
    __hash__ = Message.__hash__


#: How many of a message's arguments its str() shows, and how much of each (or of each field, in its repr()).
_ARGUMENTS_SHOWN = 6
_ARGUMENT_CHARACTERS = 240
_FIELDS = dataclasses.fields(Message)
#: A proxy of a delivery (:func:`holding_fields`).
P = TypeVar("P", bound=MessageProxy)


def _astuple(message: Message[Any]) -> tuple[Any, ...]:
    """The fields a dataclass's __eq__ compares, without the deep copy of dataclasses.astuple()."""
    return tuple(getattr(message, f.name) for f in _FIELDS)


@dataclass(frozen=True)
class Refusal:
    """Why a delivery cannot be handed to Dramatiq's worker.

    Parameters:
      reason(str): One sentence for the log, e.g. ``its envelope is not valid JSON (...)``.
      message_id(str | None): The message's id, when the envelope could be read that far.
    """

    reason: str
    message_id: str | None = None


#: What the bus checks of a message besides its envelope: why it must not run, or None.
MessageCheck = Callable[[Message[Any]], str | None]


def inspect_body(
    body: bytes | None,
    actors: Mapping[str, Any],
    queue_name: str,
    *,
    max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    check: MessageCheck | None = None,
) -> Message[Any] | Refusal:
    """Decode ``body``, found on ``queue_name``, into a message the worker can run, or say why it cannot be.

    Refused: a body that is not the global encoder's output, an envelope that lacks a
    field or has one of the wrong type, a message that names another queue than the one
    it was found on, an actor not among ``actors`` (the broker's, by name), arguments
    that its function cannot take (a bus handler takes one, the encoded event), and
    options of a type or range that neither Dramatiq nor the bus writes (an ``eta`` on
    a queue of undelayed messages, a ``lane`` that is not its handler's and key's). The
    event itself is not decoded here: a payload the codec cannot read is the handler
    actor's to dead-letter, with the codec's reason. Last, ``check`` (the bus's: a handler's
    message must be signed, and set no option the bus never writes) refuses it here too,
    so that Dramatiq's worker never sees it, nor adds a line of its own about it.
    """
    if body is None:
        return Refusal("it has an id in the queue but no body")
    encoder = get_encoder()
    # Before any parsing: the cost of reading a message must not grow without bound. Objects
    # and lists are counted in JSON only; another encoder's bytes say nothing of them.
    problem = size_problem(body, max_bytes, json=isinstance(encoder, JSONEncoder))
    if problem is not None:
        return Refusal(f"{problem}; it starts {_start(body)}")
    try:
        fields = encoder.decode(body)
    except Exception as exc:  # an encoder may raise anything; Dramatiq's JSON one raises DecodeError
        return Refusal(f"its envelope cannot be decoded ({_cause(exc)}); it starts {_start(body)}")
    if not isinstance(fields, dict):
        return Refusal(f"its envelope is {_a(type(fields).__name__)}, not an object; it starts {_start(body)}")
    message_id = fields.get("message_id") if isinstance(fields.get("message_id"), str) else None
    problem = _envelope_problem(fields)
    if problem is not None:
        return Refusal(f"{problem}; it starts {_start(body)}", message_id)
    message: Message[Any] = ReceivedMessage(**{**fields, "args": tuple(fields["args"])})
    problem = _placement_problem(queue_name, message) or _delivery_problem(actors, message)
    if problem is None and check is not None:
        refused = check(message)
        problem = None if refused is None else f"refused: {refused}"
        object.__setattr__(message, "checked", refused is None)
    if problem is not None:
        return Refusal(problem, message.message_id)
    return message


class ConsumedBroker(Protocol):
    """What :func:`inspect_delivery` reads of a bus broker: its actors and its consumers' settings."""

    actors: dict[str, Any]
    max_message_bytes: int
    message_check: MessageCheck | None
    refusal_listener: RefusalListener | None


def holding_fields(proxy: P, message: Message[Any]) -> P:
    """``proxy``, the worker's handle on ``message``, answering the message's fields itself.

    Dramatiq's MessageProxy reads each field through ``__getattr__``, which Python calls only
    after the usual lookup has failed and raised: 0.44 µs a read, where an attribute of the
    proxy's own takes 0.03, and the worker and its middleware read about 36 per message (16 µs,
    a tenth of a no-op message's worker CPU). A Message is frozen, so a field held here cannot
    go stale; its options dict is the one object, so what middleware writes there stays shared.
    Everything else (``encode()``, ``copy()``...) still goes to the message.
    """
    try:
        fields = vars(proxy)
    except TypeError:  # a proxy with no __dict__ (a Dramatiq to come): its reads stay as they are
        return proxy
    fields["queue_name"] = message.queue_name
    fields["actor_name"] = message.actor_name
    fields["args"] = message.args
    fields["kwargs"] = message.kwargs
    fields["options"] = message.options
    fields["message_id"] = message.message_id
    fields["message_timestamp"] = message.message_timestamp
    if isinstance(message, ReceivedMessage):
        fields["checked"] = message.checked
    return proxy


def inspect_delivery(broker: ConsumedBroker, queue_name: str, body: bytes | None) -> Message[Any] | Refusal:
    """:func:`inspect_body` with ``broker``'s actors, ``max_message_bytes`` and ``message_check``."""
    return inspect_body(body, broker.actors, queue_name, max_bytes=broker.max_message_bytes, check=broker.message_check)


#: Told of each message a consumer refused: its queue and the reason (the bus's instruments).
RefusalListener = Callable[[str, str], None]


def log_dead_lettered(broker: ConsumedBroker, queue_name: str, refusal: Refusal, *, where: str | None = None) -> None:
    """The one line that says a delivery was dead-lettered without running, and why; and the
    broker's ``refusal_listener`` told.

    ``where`` says where to find it, e.g. its Redis id, when the broker has one; the caller
    escapes what it quotes there (:func:`~dramatiq_eventbus.untrusted.shown`), as the reason's
    author does.
    """
    if broker.refusal_listener is not None:
        broker.refusal_listener(queue_name, refusal.reason)
    name = f"message {shown(refusal.message_id)}" if refusal.message_id else "a message without a readable id"
    logger.error(
        "Dead-lettered %s%s from queue %r without running it: %s",
        name,
        f" ({where})" if where else "",
        queue_name,
        refusal.reason,
    )


def _is_usual(fields: dict[str, Any]) -> bool:
    """What a Dramatiq broker writes: every field, each of its usual type. The fast path, taken
    by nearly every delivery; the checks below then only explain what is wrong."""
    return (
        len(fields) == 7
        and type(fields.get("queue_name")) is str
        and type(fields.get("actor_name")) is str
        and type(fields.get("args")) is list
        and type(fields.get("kwargs")) is dict
        and type(fields.get("options")) is dict
        and type(fields.get("message_id")) is str
        and type(fields.get("message_timestamp")) is int
    )


def _envelope_problem(fields: dict[str, Any]) -> str | None:
    if _is_usual(fields):
        return None
    missing = [name for name in _REQUIRED if name not in fields]
    if missing:
        return f"its envelope lacks {', '.join(missing)}"
    unknown = sorted(set(fields) - set(_FIELD_TYPES))
    if unknown:
        named = ", ".join(shown(name) for name in unknown[:_UNKNOWN_FIELDS_NAMED])
        return f"its envelope has unknown field(s) {named}{', …' if len(unknown) > _UNKNOWN_FIELDS_NAMED else ''}"
    for name, types in _FIELD_TYPES.items():
        value = fields.get(name)
        # bool is an int to isinstance(), never a timestamp.
        if name in fields and (not isinstance(value, types) or isinstance(value, bool)):
            return f"its {name} is {_a(type(value).__name__)}, not {' or '.join(_a(t.__name__) for t in types)}"
    return None


def _placement_problem(queue_name: str, message: Message[Any]) -> str | None:
    """Whether the message belongs where it was found.

    Dramatiq's worker looks up the consumer of ``message.queue_name`` after the message
    runs, outside any handler: a queue it does not consume kills the worker thread, and
    another queue's consumer never acknowledges the message, which then holds a prefetch
    slot for good.
    """
    if message.queue_name != queue_name:
        return f"it names queue {shown(message.queue_name)}, but was found on queue {queue_name!r}"
    return None


def _delivery_problem(actors: Mapping[str, Any], message: Message[Any]) -> str | None:
    actor = actors.get(message.actor_name)
    if actor is None:
        return (
            f"no actor named {shown(message.actor_name)} is declared in this worker "
            f"(is it running an older configuration than the publisher?)"
        )
    for name in sorted(_NUMERIC_OPTIONS & message.options.keys()):
        value = message.options[name]
        if value is not None and (not isinstance(value, int | float) or isinstance(value, bool)):
            return f"its option {name!r} is {_a(type(value).__name__)}, not a number"
    problem = _option_problem(actor, message)
    if problem is not None:
        return problem
    throws = message.options.get("throws")
    if throws is not None and not _is_exception_types(throws):
        return f"its option 'throws' is {_a(type(throws).__name__)}, not exception classes"
    takes = _arguments_check(actor.fn)
    if takes is not None and not takes(message.args, message.kwargs):
        return (
            f"its actor {message.actor_name!r} takes {_parameters(actor.fn)}, which does not fit this "
            f"message's {len(message.args)} positional and {len(message.kwargs)} keyword argument(s)"
        )
    return None


#: For each actor function, whether given arguments fit its signature (None: unknown).
_CHECKS: WeakKeyDictionary[Any, Callable[[tuple[Any, ...], dict[str, Any]], bool] | None] = WeakKeyDictionary()


def _arguments_check(fn: Any) -> Callable[[tuple[Any, ...], dict[str, Any]], bool] | None:
    """Whether arguments fit ``fn``: a worker thread calling it with arguments that do not
    would fail with a TypeError on every retry."""
    try:
        return _CHECKS[fn]
    except (KeyError, TypeError):
        pass
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):  # a builtin without a signature: let the worker find out
        check = None
    else:
        positional = [
            p for p in signature.parameters.values() if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
        ]
        simple = len(signature.parameters) == len(positional) and all(p.default is p.empty for p in positional)
        count = len(positional)

        def check(args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
            if simple and not kwargs:
                return len(args) == count  # the fast path: a bus handler's one argument
            try:
                signature.bind(*args, **kwargs)
            except TypeError:
                return False
            return True

    with contextlib.suppress(TypeError):  # not weakly referenceable: checked again next time
        _CHECKS[fn] = check
    return check


def _parameters(fn: Any) -> str:
    """``fn``'s parameters as written, without their annotations: ``(payload)``."""
    signature = inspect.signature(fn)
    bare = [parameter.replace(annotation=parameter.empty) for parameter in signature.parameters.values()]
    return str(signature.replace(parameters=bare, return_annotation=signature.empty))


#: The most retries a message can have had: far more than any max_retries, far less than a number
#: whose arithmetic costs anything.
MAX_RETRIES_SEEN = 100_000

#: How far past its actor's max_backoff a delayed message's eta may lie (clocks differ, queues wait).
ETA_MARGIN_MS = 3_600_000


def _option_problem(actor: Any, message: Message[Any]) -> str | None:
    """Options of a range the bus and Dramatiq never write, which would stall a worker or a lane."""
    options = message.options
    retries = options.get("retries")
    if retries is not None and not 0 <= retries <= MAX_RETRIES_SEEN:  # NaN too
        return f"its option 'retries' is {shown(retries)}, not a count from 0 to {MAX_RETRIES_SEEN}"
    eta = options.get("eta")
    if eta is not None:
        if q_name(message.queue_name) == message.queue_name:
            # Dramatiq removes the eta when it moves a due message back to its queue.
            return "it carries an eta, but sits on a queue of undelayed messages"
        latest = current_millis() + _max_backoff(actor) + ETA_MARGIN_MS
        if not eta <= latest:  # NaN and infinity too
            return f"its eta {shown(eta)} lies beyond its actor's max_backoff (at most {latest})"
    priority = options.get("broker_priority")
    if priority is not None and (type(priority) is not int or not 0 <= priority <= MAX_BROKER_PRIORITY):
        # pika writes it in one byte: anything else failed the consumer that moves a due message
        # from its delay queue, every time it tried, and no delayed message of the queue ran again.
        return f"its option 'broker_priority' is {shown(priority)}, not an int from 0 to {MAX_BROKER_PRIORITY}"
    key = options.get("partition_key")
    if key is not None and not isinstance(key, str):
        return f"its option 'partition_key' is {_a(type(key).__name__)}, not a str"
    lane = options.get("lane")
    if lane is not None and (not isinstance(key, str) or lane != lane_name(message.actor_name, key)):
        # A lane names a handler and a key: another lane's name would run or drop that lane's head.
        return f"its option 'lane' is {shown(lane)}, not the lane of its actor and partition key"
    # Ids a handler keys its writes on and a worker writes in log lines and new events.
    return metadata_problem(options)


#: The highest priority AMQP can carry.
MAX_BROKER_PRIORITY = 255


def _max_backoff(actor: Any) -> int:
    value = actor.options.get("max_backoff")
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else DEFAULT_MAX_BACKOFF


def _is_exception_types(value: object) -> bool:
    candidates = value if isinstance(value, tuple) else (value,)
    return all(isinstance(c, type) and issubclass(c, BaseException) for c in candidates)


def _cause(exc: BaseException) -> str:
    # Dramatiq's DecodeError carries the real error as its last argument, and its own text
    # repeats the whole body: the inner error is the readable part.
    inner = exc.args[-1] if exc.args and isinstance(exc.args[-1], BaseException) else exc.__cause__
    told = inner if inner is not None else exc
    return f"{type(told).__name__}: {escaped(str(told), 120)}"


def _a(name: str) -> str:
    return f"an {name}" if name[:1] in "aeiou" else f"a {name}"


def _start(body: bytes) -> str:
    return repr(body[:60]) + ("…" if len(body) > 60 else "")
