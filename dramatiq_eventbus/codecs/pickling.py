"""Pickle mode: the event pickled with dill, base64-encoded and signed with HMAC-SHA256.

The twin of the reference's OSS mode (``:erlang.term_to_binary`` + Base64): any object
dill can pickle survives the trip, and a dashboard shows an opaque blob. Unpickling runs
code the payload names, so it is only done for a payload whose signature, under the
bus's ``secret_key``, has been checked first; a missing or wrong signature is refused
before a single byte is unpickled.

On the wire::

    {"$pickle": "<base64 of the dill pickle>", "hmac": "<hex HMAC-SHA256>"}
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Iterable, Sequence
from typing import Any

import dill

from ..errors import ConfigurationError, EventDecodeError, EventEncodeError
from ..signing import secret_keys
from ..untrusted import shown
from .base import JSONValue

TAG = "$pickle"
SIGNATURE = "hmac"
#: What is signed is this prefix, then the base64 text: a signature made with the same key
#: for some other purpose can never pass for one of these.
_DOMAIN = b"dramatiq-eventbus pickle v1\n"


#: A key, or the keys of a rotation (the first signs, any verifies).
SecretKeys = str | bytes | Sequence[str | bytes]


def pickle_keys(secret_key: SecretKeys | None, *, needed_by: str) -> tuple[bytes, ...]:
    """The keys as bytes, the signing one first; a ConfigurationError naming ``needed_by`` when there is none."""
    if isinstance(secret_key, str | bytes):
        keys = secret_keys(secret_key) if secret_key.strip() else ()
    else:
        keys = secret_keys(secret_keys=secret_key)
    if not keys:
        raise ConfigurationError(
            f"{needed_by} needs a secret_key (or EVENTBUS_SECRET_KEY): pickled payloads are signed with it, "
            f"and a worker unpickles nothing it cannot verify, since unpickling runs code. "
            f"Use the same long random key in publishers and workers"
        )
    return keys


class PickleCodec:
    """Signed dill pickles, base64 in a JSON object.

    Parameters:
      secret_key(str | bytes | Sequence[str | bytes]): The HMAC-SHA256 key, the same in every
        publisher and worker; or keys being rotated: the first signs, any verifies.
      event_classes(Iterable[type]): The classes publish() may send; a verified payload
        that unpickles to anything else is refused. Empty: any class is accepted.

    Raises:
      ConfigurationError: Without a secret key.
    """

    name = "pickle"

    def __init__(self, secret_key: SecretKeys | None, event_classes: Iterable[type] = ()) -> None:
        self._keys = pickle_keys(secret_key, needed_by="codec='pickle'")
        self._events = frozenset(event_classes)

    def knows(self, cls: type) -> bool:
        """Whether ``cls`` is one of the event classes (any class when none were given)."""
        return not self._events or cls in self._events

    def _sign(self, data: bytes, key: bytes | None = None) -> str:
        return hmac.new(self._keys[0] if key is None else key, _DOMAIN + data, hashlib.sha256).hexdigest()

    def encode(self, event: object) -> JSONValue:
        try:
            # byref: classes travel by name, as pickle does, so the worker builds the event from
            # its own classes; dill's default would rebuild a class defined in __main__ from
            # the payload, a different class than the one the handlers were registered for.
            pickled = dill.dumps(event, byref=True)
        except Exception as exc:  # dill raises whatever the object's __reduce__ raises
            raise EventEncodeError(f"{type(event).__qualname__}: cannot pickle: {type(exc).__name__}: {exc}") from exc
        data = base64.b64encode(pickled)
        return {TAG: data.decode("ascii"), SIGNATURE: self._sign(data)}

    def decode(self, payload: JSONValue) -> object:
        data = self.verified(payload)
        try:
            event = dill.loads(base64.b64decode(data, validate=True))
        except (binascii.Error, ValueError) as exc:
            raise EventDecodeError(f"signed $pickle payload is not base64: {exc}") from None
        except Exception as exc:  # a class the worker lacks, a module it cannot import...
            raise EventDecodeError(f"signed $pickle payload cannot be unpickled: {type(exc).__name__}: {exc}") from None
        if self._events and type(event) not in self._events:
            raise EventDecodeError(f"$pickle payload holds a {type(event).__qualname__}, which is not an event class")
        return event

    def verified(self, payload: Any) -> bytes:
        """The base64 data of a payload whose signature is right; EventDecodeError otherwise.

        Nothing here unpickles, decodes base64 or looks at the data beyond its signature.
        """
        if type(payload) is not dict or TAG not in payload:
            raise EventDecodeError(f"expected a signed {TAG} payload, got {_sketch(payload)}")
        extra = set(payload) - {TAG, SIGNATURE}
        if extra:
            raise EventDecodeError(f"unexpected key {shown(sorted(extra)[0])} in a {TAG} payload")
        data, signature = payload[TAG], payload.get(SIGNATURE)
        if signature is None:
            raise EventDecodeError(f"{TAG} payload without a signature: refused, nothing was unpickled")
        if type(data) is not str or type(signature) is not str or not (data.isascii() and signature.isascii()):
            raise EventDecodeError(f"{TAG} payload and its signature must be ASCII strings: refused")
        raw = data.encode("ascii")
        if not any(hmac.compare_digest(self._sign(raw, key), signature) for key in self._keys):
            raise EventDecodeError(
                f"{TAG} payload with a wrong signature: refused, nothing was unpickled "
                f"(forged, tampered with, or signed with another secret_key)"
            )
        return raw


def _sketch(payload: Any) -> str:
    if type(payload) is dict:
        return "an object with keys " + ", ".join(repr(key) for key in list(payload)[:5])
    return f"a {type(payload).__name__}"
