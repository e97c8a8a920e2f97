"""Backends: what publish() does with its deliveries."""

from .base import Backend, MessageBackend
from .dramatiq import DramatiqBackend
from .inline import InlineBackend

__all__ = ["Backend", "DramatiqBackend", "InlineBackend", "MessageBackend"]
