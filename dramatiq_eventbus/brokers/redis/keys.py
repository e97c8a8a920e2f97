"""Where things live in Redis: Dramatiq's broker keys, and the bus's lanes.

The broker keys are Dramatiq's (its ``dispatch.lua`` declares them; the contract in
:mod:`.upstream` notices when it changes). The bus's own scripts in ``lua/`` write the same
keys, so a message the bus enqueues is one Dramatiq's consumer reads, and the reverse.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RedisKeys:
    """The keys of one Dramatiq RedisBroker.

    Parameters:
      namespace(str): The broker's namespace (Dramatiq's default: ``dramatiq``).
    """

    namespace: str

    @property
    def heartbeats(self) -> str:
        """ZSET of worker ids, scored by their last heartbeat (ms)."""
        return f"{self.namespace}:__heartbeats__"

    def queue(self, queue_name: str) -> str:
        """LIST of the Redis ids waiting on ``queue_name``."""
        return f"{self.namespace}:{queue_name}"

    def messages(self, queue_name: str) -> str:
        """HASH Redis id -> encoded message, for every message of ``queue_name`` not yet acked."""
        return f"{self.queue(queue_name)}.msgs"

    def wake(self, queue_name: str) -> str:
        """LIST of ids that consumers waiting on ``queue_name`` moved off its head to wake (one id
        wakes one consumer); every fetch of the queue puts them back at its head first. Empty, so
        absent, but for the moment between a consumer's wake and its fetch. The ``:`` keeps it
        apart from every queue's key: Dramatiq's queue names cannot hold one."""
        return f"{self.queue(queue_name)}:wake"

    def lane_heads(self, queue_name: str) -> str:
        """HASH Redis id -> lane, for each lane head the lane scripts put on ``queue_name`` and no
        consumer has fetched yet: the fetch leases the head in the same call. The ``:`` keeps it
        apart from every queue's key, as the wake list's does."""
        return f"{self.queue(queue_name)}:lane-heads"

    def acks(self, worker_id: str, queue_name: str) -> str:
        """SET of the ids that worker ``worker_id`` fetched from ``queue_name`` and has not acked."""
        return f"{self.namespace}:__acks__.{worker_id}.{queue_name}"

    def dead_letters(self, queue_name: str) -> str:
        """ZSET of ``queue_name``'s dead-lettered ids, scored by when (ms); a delay queue's go to its own queue's."""
        return f"{self.queue(_canonical(queue_name))}.XQ"

    def dead_letter_messages(self, queue_name: str) -> str:
        """HASH Redis id -> encoded message, for ``queue_name``'s dead letters."""
        return f"{self.dead_letters(queue_name)}.msgs"


# LaneKeys is shaped like RedisKeys on purpose: one object per layout, a method per key.
@dataclass(frozen=True)
class LaneKeys:
    """The keys of the bus's lanes (see ``lua/lane_functions.lua``, which builds the same ones).

    Parameters:
      prefix(str): The prefix of every lane key (default ``eventbus``).
    """

    prefix: str

    @property
    def lanes(self) -> str:
        """ZSET of every non-empty lane, scored by when (ms) it needs looking at."""
        return f"{self.prefix}:lanes"

    def ids(self, lane: str) -> str:
        """LIST of the lane's message ids in publish order; the first is its head."""
        return f"{self.prefix}:lane:{lane}:ids"

    def messages(self, lane: str) -> str:
        """HASH message id -> encoded message: the durable copy until handled."""
        return f"{self.prefix}:lane:{lane}:msgs"

    def head(self, lane: str) -> str:
        """HASH of the head's id, state, since, head_since, attempts, token and lease_until."""
        return f"{self.prefix}:lane:{lane}:head"

    def read_back(self, lane: bytes, part: str) -> bytes:
        """The key ``part`` (``ids``, ``msgs`` or ``head``) of a lane whose name was read back
        from Redis, as bytes: a name that is not UTF-8 (written by hand) still names its keys."""
        return f"{self.prefix}:lane:".encode() + lane + f":{part}".encode()


def _canonical(queue_name: str) -> str:
    # As dispatch.lua: a delay queue (<queue>.DQ) dead-letters to <queue>.XQ.
    return queue_name[:-3] if queue_name.endswith(".DQ") else queue_name
