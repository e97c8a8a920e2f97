"""Values the bus did not write itself (read from a broker or a database), made safe for a log line.

A forged message controls its id, its field names, its options (a lane, a partition key,
an event type) and the error texts it provokes: unescaped, a newline forges a log record
and an escape sequence drives the reader's terminal; uncut, a 10 MB name makes a 10 MB line.

The idiom, wherever such a value reaches a log line, an error or the CLI's output: a value
goes through :func:`shown` where it is formatted (quoted, like Dramatiq's own ``%r`` ids);
a free text that may quote one (an exception's, a handler's reason) through :func:`escaped`,
cut to :data:`REASON_CHARACTERS`. What the bus computed from its configuration (a handler's
name, a queue it consumes) is written as it is.
"""

from __future__ import annotations

import reprlib
from itertools import islice
from typing import Any

#: How much of one value from a message a log line shows.
SHOWN_CHARACTERS = 80

#: How much of a free text that may quote a message (a failure's) a log line shows.
REASON_CHARACTERS = 500


def shown(value: object, limit: int = SHOWN_CHARACTERS) -> str:
    """``value``'s repr (escaped: no newline or control character survives), cut to ``limit``."""
    return cut(repr(value), limit)


def briefly(value: object, limit: int = REASON_CHARACTERS) -> str:
    """``value``'s repr at a cost bounded whatever its size: long strings and numbers shortened in
    their middle, a few items of each list and dict, a few levels deep; escaped, cut to ``limit``.

    For a value that may be large (a message's arguments, up to ``max_message_bytes``), where
    :func:`shown` would first build its whole repr.

    Parameters:
      value(object): What to show; JSON's types and containers are shortened item by item,
        anything else through its own repr, cut.
      limit(int): The longest text returned.
    """
    return escaped(_BRIEF.repr(value), limit)


class _Brief(reprlib.Repr):
    """reprlib's bounded repr, with a dict's items in their order rather than sorted (a sort of a
    large dict's keys costs what this avoids)."""

    def __init__(self) -> None:
        super().__init__()
        self.maxlevel = 3
        self.maxstring = 60
        self.maxother = 60
        self.maxlong = 40
        self.maxtuple = self.maxlist = self.maxdict = self.maxset = self.maxfrozenset = 6

    def repr_dict(self, x: dict[Any, Any], level: int) -> str:
        if not x:
            return "{}"
        if level <= 0:
            return "{...}"
        pieces = [f"{self.repr1(k, level - 1)}: {self.repr1(v, level - 1)}" for k, v in islice(x.items(), self.maxdict)]
        if len(x) > self.maxdict:
            pieces.append("...")
        return "{" + ", ".join(pieces) + "}"


_BRIEF = _Brief()


def escaped(text: str, limit: int) -> str:
    """``text`` with every unprintable character escaped as repr() would, cut to ``limit``."""
    head = text[: limit + 1]  # escaping only what can be shown keeps the cost bounded
    if not head.isprintable():
        head = "".join(c if c.isprintable() else repr(c)[1:-1] for c in head)
    return cut(head, limit)


def cut(text: str, limit: int) -> str:
    """``text``, or its first ``limit - 1`` characters and an ellipsis."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def described(exc: BaseException, limit: int = REASON_CHARACTERS) -> str:
    """``Type: text`` of an exception whose text may quote a message, escaped and cut to ``limit``."""
    return escaped(f"{type(exc).__name__}: {exc}", limit)
