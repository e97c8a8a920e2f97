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

Every script but FINISH and SWEEP takes a whole batch, so that a batch costs one command:
redis-py would precede a pipeline of script calls with a SCRIPT EXISTS round trip.
"""

from __future__ import annotations

#: The lane operations, as Lua functions that the scripts below call.
_FUNCTIONS = """
local function keys(prefix, lane)
  local base = prefix .. ":lane:" .. lane
  return base .. ":ids", base .. ":msgs", base .. ":head", prefix .. ":lanes"
end

-- Put the lane's message ``id`` on the broker queue ``queue`` (Dramatiq's keys), if one is given.
local function to_broker(queue, id, body)
  if queue == "" then
    return false
  end
  redis.call("hset", queue .. ".msgs", id, body)
  redis.call("rpush", queue, id)
  return true
end

-- Dramatiq's "ack" (dispatch.lua) of the delivery ``redis_id`` of ``queue``, fetched by the
-- worker whose ack set is ``acks``.
local function ack(queue, acks, redis_id)
  if redis.call("srem", acks, redis_id) > 0 then
    redis.call("hdel", queue .. ".msgs", redis_id)
  end
end

local function append(prefix, lane, id, body, now, deadline, queue)
  local ids, msgs, head, lanes = keys(prefix, lane)
  local length = redis.call("rpush", ids, id)
  redis.call("hset", msgs, id, body)
  if length ~= 1 then
    return 0
  end
  redis.call("del", head)
  redis.call("hset", head, "state", "dispatched", "since", now, "head_since", now, "attempts", 0)
  redis.call("zadd", lanes, deadline, lane)
  to_broker(queue, id, body)
  return 1
end

local function enter(prefix, lane, id, token, now, lease_until)
  local ids, _, head, lanes = keys(prefix, lane)
  if redis.call("lindex", ids, 0) ~= id then
    return "stale"
  end
  local owner = redis.call("hmget", head, "token", "lease_until")
  if owner[1] and tonumber(owner[2]) > tonumber(now) then
    return "busy"
  end
  redis.call("hset", head, "state", "running", "since", now, "token", token, "lease_until", lease_until)
  redis.call("hincrby", head, "attempts", 1)
  redis.call("zadd", lanes, lease_until, lane)
  return "run"
end

local function renew(prefix, lane, token, lease_until)
  local _, _, head, lanes = keys(prefix, lane)
  if redis.call("hget", head, "token") ~= token then
    return 0
  end
  redis.call("hset", head, "lease_until", lease_until)
  redis.call("zadd", lanes, lease_until, lane)
  return 1
end

local function finish(prefix, lane, id, token, outcome, now, deadline, queue)
  local ids, msgs, head, lanes = keys(prefix, lane)
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
end
"""

#: ARGV: prefix, now, deadline, then lane, message id, body, queue for each message, in order
#: -> for each, 1 if it became its lane's head (put on ``queue``, or for the caller to send), else 0.
APPEND = (
    _FUNCTIONS
    + """
local out = {}
for i = 4, #ARGV, 4 do
  out[#out + 1] = append(ARGV[1], ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[2], ARGV[3], ARGV[i + 3])
end
return out
"""
)

#: ARGV: prefix, now, lease_until, then lane, message id, token for each message
#: -> for each, "run" (it is the head, now leased to the token), "busy" or "stale".
ENTER = (
    _FUNCTIONS
    + """
local out = {}
for i = 4, #ARGV, 3 do
  out[#out + 1] = enter(ARGV[1], ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[2], ARGV[3])
end
return out
"""
)

#: ARGV: prefix, lease_until, then lane, token for each lease -> for each, 1 if it was still
#: that token's and is extended, else 0.
RENEW = (
    _FUNCTIONS
    + """
local out = {}
for i = 3, #ARGV, 2 do
  out[#out + 1] = renew(ARGV[1], ARGV[i], ARGV[i + 1], ARGV[2])
end
return out
"""
)

#: ARGV: prefix, lane, message id, token, outcome ("done" or "retry"), now, deadline, queue
#: -> {"gone"}, {"lost"}, {"retrying"}, {"idle"}, {"sent"} (the new head is on ``queue``) or
#: {"next", body of the new head}.
FINISH = (
    _FUNCTIONS
    + """
return finish(ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7], ARGV[8])
"""
)

#: Handled heads, each finished. ARGV: prefix, now, deadline, then lane, message id, token,
#: queue for each head -> for each, what FINISH replies.
FINISH_MANY = (
    _FUNCTIONS
    + """
local out = {}
for i = 4, #ARGV, 4 do
  out[#out + 1] = finish(ARGV[1], ARGV[i], ARGV[i + 1], ARGV[i + 2], "done", ARGV[2], ARGV[3], ARGV[i + 3])
end
return out
"""
)

#: A worker's batch of acks for one broker queue, among them handled lane heads, each
#: finished and acknowledged together. ARGV: prefix, now, deadline, queue, acks (the
#: worker's ack set of ``queue``), count of heads, then lane, message id, token, Redis id
#: for each head, then the Redis ids of the other deliveries to acknowledge
#: -> for each head, what finishing it did: "gone", "lost", "idle" or "sent".
FINISH_HANDLED = (
    _FUNCTIONS
    + """
local prefix, now, deadline, queue, acks = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local last_head = 6 + 4 * tonumber(ARGV[6])
local out = {}
for i = 7, last_head, 4 do
  ack(queue, acks, ARGV[i + 3])
  out[#out + 1] = finish(prefix, ARGV[i], ARGV[i + 1], ARGV[i + 2], "done", now, deadline, queue)[1]
end
for i = last_head + 1, #ARGV do
  ack(queue, acks, ARGV[i])
end
return out
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
