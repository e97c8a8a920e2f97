"""Types an application teaches the typed codec with ``register_type``."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any


class CustomTypes:
    """The classes given to ``register_type``; kept by the bus across configure() calls.

    (To be completed by the codec issue: names, aliases, encode/decode functions.)
    """

    def __init__(self) -> None:
        self.registered: dict[type, tuple[Callable[[Any], Any], Callable[[Any], Any], str | None, tuple[str, ...]]] = {}

    def register(
        self,
        cls: type,
        *,
        encode: Callable[[Any], Any],
        decode: Callable[[Any], Any],
        name: str | None = None,
        aliases: Sequence[str] = (),
    ) -> None:
        self.registered[cls] = (encode, decode, name, tuple(aliases))
