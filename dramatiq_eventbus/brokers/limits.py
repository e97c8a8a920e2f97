"""How much of a message a consumer agrees to read: its bytes, and the JSON objects and lists in it.

Reading a message costs little per byte of numbers and strings, and much per JSON object or
list: each becomes a Python object that the decoder walks and the garbage collector tracks.
Measured on the 2-core Xeon of the README, a 1 MiB body of ``[]`` took 180-300 ms to parse
and decode, a 1 MiB list of numbers 37-47 ms. So, besides ``max_message_bytes``, a message may
hold one object or list per :data:`BYTES_PER_CONTAINER` bytes of that limit (16,384 at the
default 1 MiB, and at least :data:`MIN_CONTAINERS`); both are checked on the bytes, before any parsing.
"""

from __future__ import annotations

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
