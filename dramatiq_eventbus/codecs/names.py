"""The names classes go by on the wire.

A name is ``package.module:QualName`` unless the class, or ``register_type``, gives it
another. Decoding looks names up in a table built at configure time and never imports
them, so a name is only a label; it must still be the same in the publisher and in every
worker, which is why a class defined in a script run as ``__main__`` is refused.
"""

from __future__ import annotations

import sys

#: A class attribute giving the class a wire name of its own, e.g. ``"orders:OrderCreated"``,
#: so that it can move between modules without its messages changing.
NAME_ATTRIBUTE = "__eventbus_name__"
#: A class attribute listing the names the class went by before: its old messages still decode.
ALIASES_ATTRIBUTE = "__eventbus_aliases__"


def type_name(cls: type) -> str:
    """The stable name of a class on the wire: its ``__eventbus_name__``, else ``package.module:QualName``.

    A class in ``__main__`` is named after the module ``python -m`` ran, where there is one,
    since that is the name a worker imports it by.
    """
    own = cls.__dict__.get(NAME_ATTRIBUTE)
    if isinstance(own, str) and own:
        return own
    module = cls.__module__
    if module == "__main__":
        spec = getattr(sys.modules.get("__main__"), "__spec__", None)
        if spec is not None and spec.name:
            module = spec.name
    return f"{module}:{cls.__qualname__}"


def qualified_name(cls: type) -> str:
    """Where a class is defined, ``package.module.QualName``, for messages people read.

    Unlike :func:`type_name` it is never a wire name: it ignores ``__eventbus_name__``
    and keeps ``__main__``, so that it shows where a class really comes from.
    """
    return f"{cls.__module__}.{cls.__qualname__}"


def class_aliases(cls: type) -> tuple[str, ...]:
    """The old names a class declares in its own ``__eventbus_aliases__``."""
    aliases = cls.__dict__.get(ALIASES_ATTRIBUTE, ())
    if isinstance(aliases, str):
        return (aliases,)
    return tuple(aliases)


def is_unstable(name: str) -> bool:
    """Whether a name would differ between this process and a worker: a script's ``__main__``."""
    return name.startswith("__main__:")
