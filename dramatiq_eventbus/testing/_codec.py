"""The codec a test helper round-trips an event through."""

from __future__ import annotations

from ..bus import EventBus
from ..codecs import Codec, TypedCodec, make_codec


def codec_for(bus: EventBus, event_class: type) -> Codec:
    """The bus's configured codec, able to carry ``event_class``.

    The typed codec only builds the event classes of the configured handlers. A test may
    run a handler, or publish an event, before its class is wired to any handler; it then
    gets the same typed codec extended to that class, so encoding is checked by the same
    rules. Before configure(), it is a typed codec for that class alone.
    """
    if not bus.is_configured:
        return TypedCodec([event_class])
    config = bus.config
    codec = config.codec
    if isinstance(codec, TypedCodec) and not codec.knows(event_class):
        return make_codec(
            "typed",
            event_classes=(*config.registry.event_classes, event_class),
            custom_types=bus.custom_types,
            secret_key=config.signer.keys if config.signer is not None else None,
            pickle_fallback=bool(config.arguments.get("pickle_fallback", False)),
        )
    return codec
