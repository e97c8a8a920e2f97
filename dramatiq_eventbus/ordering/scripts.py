"""The Lua scripts behind cluster-wide lanes, each one atomic on the Redis server.

A lane is one (handler, partition key). Its Redis keys, under ``<prefix>:lane:<lane>``:

- ``:ids``   LIST of message ids in publish order; the first is the lane's head.
- ``:msgs``  HASH message id -> encoded Dramatiq message, the durable copy until handled.
- ``:head``  HASH about the head: ``state`` (dispatched, running, retrying), ``since``
             (ms, when it entered that state), ``head_since`` (ms, when it became the head),
             ``attempts``, and while running the owner ``token`` and ``lease_until``.

``<prefix>:lanes`` is a ZSET of every non-empty lane, scored by the time (ms) at which
the lane needs looking at if nothing happens first: a dispatched head that never
started, a running head whose lease expired, a retry long overdue. The sweeper reads it.

Only a lane's head is ever in the broker's queue, so later events of the lane wait in
Redis, costing nothing, until the head is handled or dead-lettered.

When the lanes live in the Redis of the broker itself, APPEND and FINISH also write a
new head straight onto its broker queue (``queue``: ``<namespace>:<queue name>``, as
Dramatiq's RedisBroker keeps it: the id pushed on that list, the body in the
``.msgs`` hash, under the head's message id as its Redis id), and FINISH can acknowledge
the finished delivery as Dramatiq's ``ack`` does. The head then moves into the broker in
the same atomic step that makes it the head, and the bus's Redis consumer can batch
ENTER and FINISH with its fetches and acks (:mod:`~dramatiq_eventbus.ordering.gate`).
With ``queue`` empty, the caller sends the head itself.
"""

from __future__ import annotations

_LANE = """
local prefix, lane = ARGV[1], ARGV[2]
local base = prefix .. ":lane:" .. lane
local ids, msgs, head, lanes = base .. ":ids", base .. ":msgs", base .. ":head", prefix .. ":lanes"
"""

#: Puts the lane's message ``id`` on the broker queue ``queue`` (Dramatiq's keys), if one is given.
_TO_BROKER = """
local function to_broker(queue, id, body)
  if queue == "" then
    return false
  end
  redis.call("hset", queue .. ".msgs", id, body)
  redis.call("rpush", queue, id)
  return true
end
"""

#: ARGV: prefix, lane, message id, body, now, deadline, queue
#: -> 1 if the message is the head (put on ``queue``, or to be sent by the caller), else 0.
APPEND = (
    _LANE
    + _TO_BROKER
    + """
local id, body, now, deadline, queue = ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7]
local length = redis.call("rpush", ids, id)
redis.call("hset", msgs, id, body)
if length == 1 then
  redis.call("del", head)
  redis.call("hset", head, "state", "dispatched", "since", now, "head_since", now, "attempts", 0)
  redis.call("zadd", lanes, deadline, lane)
  to_broker(queue, id, body)
  return 1
end
return 0
"""
)

#: ARGV: prefix, lane, message id, token, now, lease_until -> "run", "busy" or "stale".
ENTER = (
    _LANE
    + """
local id, token, now, lease_until = ARGV[3], ARGV[4], tonumber(ARGV[5]), ARGV[6]
if redis.call("lindex", ids, 0) ~= id then
  return "stale"
end
local owner = redis.call("hmget", head, "token", "lease_until")
if owner[1] and tonumber(owner[2]) > now then
  return "busy"
end
redis.call("hset", head, "state", "running", "since", now, "token", token, "lease_until", lease_until)
redis.call("hincrby", head, "attempts", 1)
redis.call("zadd", lanes, lease_until, lane)
return "run"
"""
)

#: ARGV: prefix, lane, token, lease_until -> 1 if the lease was still ours and is extended.
RENEW = (
    _LANE
    + """
local token, lease_until = ARGV[3], ARGV[4]
if redis.call("hget", head, "token") ~= token then
  return 0
end
redis.call("hset", head, "lease_until", lease_until)
redis.call("zadd", lanes, lease_until, lane)
return 1
"""
)

#: ARGV: prefix, lane, message id, token, outcome ("done" or "retry"), now, deadline, queue,
#: acks, redis id -> {"gone"}, {"lost"}, {"retrying"}, {"idle"}, {"sent"} (the new head is on
#: ``queue``) or {"next", body of the new head}. With ``acks`` (a worker's ack set of ``queue``),
#: the delivery ``redis id`` is acknowledged first, whatever the lane's state, as Dramatiq's
#: dispatch.lua "ack" does.
FINISH = (
    _LANE
    + _TO_BROKER
    + """
local id, token, outcome, now, deadline = ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7]
local queue, acks, redis_id = ARGV[8], ARGV[9], ARGV[10]
if acks ~= "" and redis.call("srem", acks, redis_id) > 0 then
  redis.call("hdel", queue .. ".msgs", redis_id)
end
if redis.call("lindex", ids, 0) ~= id then
  return {"gone"}
end
if redis.call("hget", head, "token") ~= token then
  return {"lost"}
end
if outcome == "retry" then
  redis.call("hset", head, "state", "retrying", "since", now)
  redis.call("hdel", head, "token", "lease_until")
  redis.call("zadd", lanes, deadline, lane)
  return {"retrying"}
end
redis.call("lpop", ids)
redis.call("hdel", msgs, id)
local next_id = redis.call("lindex", ids, 0)
if not next_id then
  redis.call("del", ids, msgs, head)
  redis.call("zrem", lanes, lane)
  return {"idle"}
end
redis.call("del", head)
redis.call("hset", head, "state", "dispatched", "since", now, "head_since", now, "attempts", 0)
redis.call("zadd", lanes, deadline, lane)
local body = redis.call("hget", msgs, next_id)
if to_broker(queue, next_id, body) then
  return {"sent"}
end
return {"next", body}
"""
)

#: ARGV: prefix, now, limit, deadline -> flat list: lane, state, since, attempts, body, ...
#: Every lane whose time is up gets its head dispatched again, once per sweep.
SWEEP = """
local prefix, now, limit, deadline = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4]
local lanes = prefix .. ":lanes"
local due = redis.call("zrangebyscore", lanes, "-inf", now, "LIMIT", 0, limit)
local out = {}
for _, lane in ipairs(due) do
  local base = prefix .. ":lane:" .. lane
  local head = base .. ":head"
  local id = redis.call("lindex", base .. ":ids", 0)
  if not id then
    redis.call("zrem", lanes, lane)
    redis.call("del", head)
  else
    local before = redis.call("hmget", head, "state", "since", "attempts")
    redis.call("hset", head, "state", "dispatched", "since", now)
    redis.call("hdel", head, "token", "lease_until")
    redis.call("zadd", lanes, deadline, lane)
    table.insert(out, lane)
    table.insert(out, before[1] or "unknown")
    table.insert(out, before[2] or now)
    table.insert(out, before[3] or 0)
    table.insert(out, redis.call("hget", base .. ":msgs", id))
  end
end
return out
"""
