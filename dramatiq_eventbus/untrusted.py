"""Values the bus did not write itself (read from a broker or a database), made safe for a log line.

A forged message controls its field names, options and error texts: unescaped, a newline
forges a log record; uncut, a 10 MB name makes a 10 MB line.
"""

from __future__ import annotations

#: How much of one value from a message a log line shows.
SHOWN_CHARACTERS = 80


def shown(value: object, limit: int = SHOWN_CHARACTERS) -> str:
    """``value``'s repr (escaped: no newline or control character survives), cut to ``limit``."""
    return cut(repr(value), limit)


def escaped(text: str, limit: int) -> str:
    """``text`` with every unprintable character escaped as repr() would, cut to ``limit``."""
    head = text[: limit + 1]  # escaping only what can be shown keeps the cost bounded
    if not head.isprintable():
        head = "".join(c if c.isprintable() else repr(c)[1:-1] for c in head)
    return cut(head, limit)


def cut(text: str, limit: int) -> str:
    """``text``, or its first ``limit - 1`` characters and an ellipsis."""
    return text if len(text) <= limit else text[: limit - 1] + "…"
