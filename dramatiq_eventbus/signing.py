"""Message authentication: with a secret key, every message the bus sends is signed, and a
worker with the key runs none that is not.

The signature (HMAC-SHA256, in the ``signature`` option) covers what a worker acts on: the
message id, the actor, the queue, the event type, the payload, the partition key and the
lane. The id is covered because a lane takes whatever message carries its head's id for
its head: a genuine message replayed under that id would run in the head's place, and the
real head would then be skipped as handled. Nothing on the way changes a message's id:
Dramatiq's retries and delay queues, the lanes' sweep and their next heads send it again
as it was signed, and an outbox relay, which sends a stored message under a new id, signs
it again. The signature does not cover what Dramatiq itself rewrites on the way
(``retries``, ``traceback``, ``eta``, the Redis id). A genuine message written again under
its own id still verifies: it runs again, as a redelivery would, unless it travels in a
lane, which skips it once handled. Several keys rotate without downtime: the first signs,
any verifies.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Sequence
from typing import Any

from dramatiq.common import q_name
from dramatiq.message import Message

from .errors import ConfigurationError
from .metadata import CAUSATION_ID, CORRELATION_ID, EVENT_ID, PUBLISHED_AT, TRACE_CONTEXT

#: The option that carries a message's signature.
OPTION = "signature"

#: The shortest key accepted: shorter ones can be guessed.
MIN_KEY_BYTES = 16

#: Signed before the message's fields, so that a signature made with the same key for any
#: other purpose (a pickled payload) never passes for one of these. v1 left the message id
#: out, v2 the metadata: a message signed so is refused as wrongly signed.
_DOMAIN = b"dramatiq-eventbus message v3\n"


def secret_keys(secret_key: object = None, secret_keys: object = None) -> tuple[bytes, ...]:
    """The configured keys as bytes, the signing one first; empty when none is configured.

    Raises:
      ConfigurationError: Both arguments given, a key that is not a str or bytes, or one
        shorter than :data:`MIN_KEY_BYTES`.
    """
    if secret_key is not None and secret_keys is not None:
        raise ConfigurationError(
            "give secret_key or secret_keys, not both: secret_keys=[new, old] signs with the first and accepts any"
        )
    if isinstance(secret_key, str | bytes) and not secret_key.strip():
        secret_key = None  # as a blank variable: no key
    if secret_keys is None:
        given: Sequence[object] = () if secret_key is None else (secret_key,)
    elif isinstance(secret_keys, str | bytes) or not isinstance(secret_keys, Sequence):
        raise ConfigurationError(
            f"secret_keys must be a list of keys, the signing one first, not {type(secret_keys).__qualname__}"
        )
    else:
        given = secret_keys
    keys = []
    for position, key in enumerate(given):
        if isinstance(key, str):
            key = key.strip().encode("utf-8")
        if not isinstance(key, bytes):
            raise ConfigurationError(f"secret_key must be a str or bytes, not {type(key).__qualname__}")
        if len(key) < MIN_KEY_BYTES:
            raise ConfigurationError(
                f"secret key {position + 1} has {len(key)} bytes, fewer than {MIN_KEY_BYTES}: use a long random "
                f"key, e.g. python -c 'import secrets; print(secrets.token_urlsafe(32))'"
            )
        keys.append(key)
    return tuple(keys)


class Signer:
    """Signs and verifies messages with the bus's keys.

    Parameters:
      keys(tuple[bytes, ...]): The first signs; any verifies.
    """

    def __init__(self, keys: tuple[bytes, ...]) -> None:
        if not keys:
            raise ValueError("a Signer needs at least one key")
        self.keys = keys

    def __repr__(self) -> str:
        return f"<Signer with {len(self.keys)} key(s)>"

    def sign(self, message: Message[Any]) -> str:
        """The signature of ``message`` under the signing key."""
        return hmac.new(self.keys[0], _signed(message), hashlib.sha256).hexdigest()

    def signed(self, message: Message[Any]) -> Message[Any]:
        """``message`` with its signature in its options (in place: the options are the caller's)."""
        message.options[OPTION] = self.sign(message)
        return message

    def problem(self, message: Any) -> str | None:
        """Why ``message`` is not signed with one of the keys, or None when it is."""
        signature = message.options.get(OPTION)
        if signature is None:
            return "it is not signed, and this worker has a secret key"
        if type(signature) is not str or len(signature) != 64:
            return "its signature is not an HMAC-SHA256 in hex"
        try:
            data = _signed(message)
        except (TypeError, ValueError, RecursionError):
            return "its fields cannot be signed"
        for key in self.keys:
            if hmac.compare_digest(hmac.new(key, data, hashlib.sha256).hexdigest(), signature):
                return None
        return "its signature is wrong (forged, altered, or signed with a key this worker does not have)"


def _signed(message: Any) -> bytes:
    """What a signature covers, canonically: the same bytes in the publisher and the worker."""
    options = message.options
    fields = [
        message.message_id,
        message.actor_name,
        q_name(message.queue_name),  # a retry waits on <queue>.DQ under the same signature
        options.get("event_type"),
        options.get("partition_key"),
        options.get("lane"),
        options.get(EVENT_ID),
        options.get(PUBLISHED_AT),
        options.get(CORRELATION_ID),
        options.get(CAUSATION_ID),
        list(message.args),
        message.kwargs,
    ]
    trace_context = options.get(TRACE_CONTEXT)
    if trace_context is not None:
        # Added only when present, so that a message without one is signed as before: an
        # altered trace would draw a false history, and a removed one must fail too.
        fields.append(trace_context)
    return _DOMAIN + json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
