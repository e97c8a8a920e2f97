"""What a consumer checks before a message reaches Dramatiq's worker.

A message put on a queue by anything other than a Dramatiq broker (a script, another
service, an attacker with broker access) can hold an envelope that Dramatiq cannot
decode, or fields of the wrong type that crash a consumer or worker thread far from the
message that caused it. The bus's consumers run every delivery through :func:`inspect_body`
first, and dead-letter whatever it refuses, with one log line saying why.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from dramatiq.broker import Broker
from dramatiq.message import Message, get_encoder

from ..actors import is_handler_actor

logger = logging.getLogger("dramatiq_eventbus.brokers")

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

#: Options Dramatiq's middleware does arithmetic with: anything but a number (or null)
#: there raises inside a worker thread, outside any handler.
_NUMERIC_OPTIONS = frozenset(("retries", "max_retries", "min_backoff", "max_backoff", "time_limit", "max_age", "eta"))


@dataclass(frozen=True)
class Refusal:
    """Why a delivery cannot be handed to Dramatiq's worker.

    Parameters:
      reason(str): One sentence for the log, e.g. ``its envelope is not valid JSON (...)``.
      message_id(str | None): The message's id, when the envelope could be read that far.
    """

    reason: str
    message_id: str | None = None


def inspect_body(broker: Broker, body: bytes | None) -> Message[Any] | Refusal:
    """Decode ``body`` into a message the worker can run, or say why it cannot be.

    Refused: a body that is not the global encoder's output, an envelope that lacks a
    field or has one of the wrong type, an actor this worker does not declare, and a
    message for one of the bus's handlers that does not carry exactly one argument (the
    encoded event). The event itself is not decoded here: a payload the codec cannot
    read is the handler actor's to dead-letter, with the codec's reason.
    """
    if body is None:
        return Refusal("it has an id in the queue but no body")
    try:
        fields = get_encoder().decode(body)
    except Exception as exc:  # an encoder may raise anything; Dramatiq's JSON one raises DecodeError
        return Refusal(f"its envelope cannot be decoded ({_cause(exc)}); it starts {_start(body)}")
    if not isinstance(fields, dict):
        return Refusal(f"its envelope is {_a(type(fields).__name__)}, not an object; it starts {_start(body)}")
    message_id = fields.get("message_id") if isinstance(fields.get("message_id"), str) else None
    problem = _envelope_problem(fields)
    if problem is not None:
        return Refusal(f"{problem}; it starts {_start(body)}", message_id)
    message: Message[Any] = Message(**{**fields, "args": tuple(fields["args"])})
    problem = _delivery_problem(broker, message)
    if problem is not None:
        return Refusal(problem, message.message_id)
    return message


def log_dead_lettered(queue_name: str, refusal: Refusal, *, where: str | None = None) -> None:
    """The one line that says a delivery was dead-lettered without running, and why.

    ``where`` says where to find it, e.g. its Redis id, when the broker has one.
    """
    name = f"message {refusal.message_id}" if refusal.message_id else "a message without a readable id"
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
        return f"its envelope has unknown field(s) {', '.join(map(repr, unknown))}"
    for name, types in _FIELD_TYPES.items():
        value = fields.get(name)
        # bool is an int to isinstance(), never a timestamp.
        if name in fields and (not isinstance(value, types) or isinstance(value, bool)):
            return f"its {name} is {_a(type(value).__name__)}, not {' or '.join(_a(t.__name__) for t in types)}"
    return None


def _delivery_problem(broker: Broker, message: Message[Any]) -> str | None:
    if message.actor_name not in broker.actors:
        return (
            f"no actor named {message.actor_name!r} is declared in this worker "
            f"(is it running an older configuration than the publisher?)"
        )
    for name in sorted(_NUMERIC_OPTIONS & message.options.keys()):
        value = message.options[name]
        if value is not None and (not isinstance(value, int | float) or isinstance(value, bool)):
            return f"its option {name!r} is {_a(type(value).__name__)}, not a number"
    throws = message.options.get("throws")
    if throws is not None and not _is_exception_types(throws):
        return f"its option 'throws' is {_a(type(throws).__name__)}, not exception classes"
    if is_handler_actor(broker, message.actor_name) and (len(message.args) != 1 or message.kwargs):
        return (
            f"a bus handler takes one argument, the encoded event, but this message has "
            f"{len(message.args)} positional and {len(message.kwargs)} keyword argument(s)"
        )
    return None


def _is_exception_types(value: object) -> bool:
    candidates = value if isinstance(value, tuple) else (value,)
    return all(isinstance(c, type) and issubclass(c, BaseException) for c in candidates)


def _cause(exc: BaseException) -> str:
    # Dramatiq's DecodeError carries the real error as its last argument, and its own text
    # repeats the whole body: the inner error is the readable part.
    inner = exc.args[-1] if exc.args and isinstance(exc.args[-1], BaseException) else exc.__cause__
    shown = inner if inner is not None else exc
    return f"{type(shown).__name__}: {_shorten(str(shown), 120)}"


def _a(name: str) -> str:
    return f"an {name}" if name[:1] in "aeiou" else f"a {name}"


def _start(body: bytes) -> str:
    return repr(body[:60]) + ("…" if len(body) > 60 else "")


def _shorten(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
