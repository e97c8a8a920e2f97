"""How much of a message a consumer agrees to read: its bytes, and the JSON objects and lists in it.

Reading a message costs little per byte of numbers and strings, and much per JSON object or
list: each becomes a Python object that the decoder walks and the garbage collector tracks.
Measured on the 2-core Xeon of the README, a 1 MiB body of ``[]`` took 180-300 ms to parse
and decode, a 1 MiB list of numbers 37-47 ms. So, besides ``max_message_bytes``, a message may
hold one object or list per :data:`BYTES_PER_CONTAINER` bytes of that limit (16,384 at the
default 1 MiB, and at least :data:`MIN_CONTAINERS`); both are checked on the bytes, before any parsing.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from dramatiq.message import Message

from ..errors import EventEncodeError
from ..untrusted import shown

#: The largest message a consumer reads, by default: larger ones are refused before JSON parsing.
DEFAULT_MAX_MESSAGE_BYTES = 1 << 20

#: One JSON object or list is allowed per this many bytes of ``max_message_bytes``...
BYTES_PER_CONTAINER = 64
#: ...and never fewer than this many, which cost a millisecond at most: a small limit is about bytes.
MIN_CONTAINERS = 1024


def containers_allowed(max_bytes: int) -> int:
    """How many JSON objects and lists a message may hold under a ``max_message_bytes`` of ``max_bytes``."""
    return max(MIN_CONTAINERS, max_bytes // BYTES_PER_CONTAINER)


def count_containers(body: bytes, enough: int) -> int:
    """The JSON objects and lists in ``body``, exactly once there are more than ``enough``.

    Counting every ``{`` and ``[`` costs about 1 ms per MiB and is exact unless strings hold
    some. Only when that count is over ``enough`` are the strings left out, at up to about
    20 ms per MiB: in JSON a backslash starts a two-character escape, so dropping escaped
    backslashes and then escaped quotes leaves only the quotes that open and close strings.
    """
    found = body.count(b"{") + body.count(b"[")
    if found <= enough:
        return found
    if b"\\" in body:
        body = body.replace(b"\\\\", b"").replace(b'\\"', b"")
    outside_strings = b"".join(body.split(b'"')[::2])
    return outside_strings.count(b"{") + outside_strings.count(b"[")


def size_problem(body: bytes, max_bytes: int, *, json: bool = True) -> str | None:
    """Why ``body`` is too large for a consumer whose limit is ``max_bytes``, or None.

    Parameters:
      body(bytes): The message as it travels.
      max_bytes(int): The bus's ``max_message_bytes``.
      json(bool): Whether ``body`` is JSON, whose objects and lists are then counted too.
    """
    if len(body) > max_bytes:
        return f"it is {len(body):,} bytes, more than max_message_bytes ({max_bytes:,})"
    allowed = containers_allowed(max_bytes)
    if json and len(body) > 2 * allowed:  # each object or list takes 2 bytes at least: a smaller body has room
        held = count_containers(body, allowed)
        if held > allowed:
            return (
                f"it holds {held:,} JSON objects and lists, more than the {allowed:,} allowed (one per "
                f"{BYTES_PER_CONTAINER} bytes of max_message_bytes, {max_bytes:,}; raise it to allow more)"
            )
    return None


def smallest_checked(max_bytes: int) -> int:
    """The size above which a body must go through :func:`check_sendable`; smaller ones always pass.

    Comparing with this is all a publisher pays per message: bodies are a few hundred bytes.
    """
    return min(max_bytes, 2 * containers_allowed(max_bytes))


def check_sendable(message: Message[Any], body: bytes, max_bytes: int) -> None:
    """Refuse at ``publish()`` what a worker's consumer would refuse unread.

    Parameters:
      message(Message): The message ``body`` encodes, to name in the error.
      body(bytes): The message as it will travel.
      max_bytes(int): The bus's ``max_message_bytes``.

    Raises:
      EventEncodeError: ``body`` is too large; the error says how to fix it.
    """
    problem = size_problem(body, max_bytes)
    if problem is not None:
        event_type = message.options.get("event_type")
        raise EventEncodeError(
            f"cannot send {'an event' if event_type is None else shown(event_type)} to {message.actor_name}: "
            f"{problem}, so a worker would dead-letter it unread. Send less in one event (an id to fetch the "
            f"rest by), or raise max_message_bytes on workers and publishers alike"
        )


def check_all_sendable(messages: Sequence[Message[Any]], bodies: Sequence[bytes], max_bytes: int) -> None:
    """:func:`check_sendable` for a batch, paying one comparison per small message.

    Raises:
      EventEncodeError: A message of the batch is too large.
    """
    checked_above = smallest_checked(max_bytes)
    for message, body in zip(messages, bodies, strict=True):
        if len(body) > checked_above:
            check_sendable(message, body, max_bytes)
