-- The lane operations, as Lua functions that the lane_*.lua scripts call; each of those
-- scripts is loaded with this file in front of it (see scripts.py).
--
-- A lane is one (handler, partition key). Its keys, under <prefix>:lane:<lane> (keys.LaneKeys):
--   :ids   LIST of message ids in publish order; the first is the lane's head.
--   :msgs  HASH message id -> encoded Dramatiq message, the durable copy until handled.
--   :head  HASH about the head: id (its message id), state (dispatched, running, retrying),
--          since (ms, when it entered that state), head_since (ms, when it became the head),
--          attempts, and while running the owner token and lease_until (else "" and 0). A head
--          an older version wrote lacks the id, and :ids tells it.
-- <prefix>:lanes is a ZSET of every non-empty lane, scored by the time (ms) at which the lane
-- needs looking at if nothing happens first; the sweep reads it.
--
-- ``queue`` arguments name a broker queue's key (keys.RedisKeys.queue), or "" when the caller
-- sends new heads itself; its messages hash is that key .. ".msgs", as in Dramatiq's dispatch.lua,
-- and its lane heads hash (keys.RedisKeys.lane_heads) that key .. ":lane-heads": the lane of
-- each head these functions put on the queue, by its Redis id, so that the fetch that takes the
-- head (fetch.lua) leases it in the same call. The fetch removes the entry; so does the head's
-- finish, for a head fetched by a consumer that does not read the hash; and a fetch that
-- empties the queue drops the hash, whose entries then all are stale.
local function keys(prefix, lane)
  local base = prefix .. ":lane:" .. lane
  return base .. ":ids", base .. ":msgs", base .. ":head", prefix .. ":lanes"
end

-- Put the message ``id`` of ``lane`` on the broker queue ``queue`` (Dramatiq's keys), if one is given.
local function to_broker(queue, lane, id, body)
  if queue == "" then
    return false
  end
  redis.call("hset", queue .. ".msgs", id, body)
  redis.call("hset", queue .. ":lane-heads", id, lane)
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

-- Make ``id`` the head, waiting for its delivery. Every field is written, so that nothing of
-- the head before it (its lease above all) is left: one command, where DEL and HSET were two.
local function new_head(head, id, now)
  redis.call("hset", head, "id", id, "state", "dispatched", "since", now, "head_since", now, "attempts", 0,
    "token", "", "lease_until", 0)
end

local function append(prefix, lane, id, body, now, deadline, queue)
  local ids, msgs, head, lanes = keys(prefix, lane)
  local length = redis.call("rpush", ids, id)
  redis.call("hset", msgs, id, body)
  if length ~= 1 then
    return 0
  end
  new_head(head, id, now)
  redis.call("zadd", lanes, deadline, lane)
  to_broker(queue, lane, id, body)
  return 1
end

local function enter(prefix, lane, id, token, now, lease_until)
  local ids, _, head, lanes = keys(prefix, lane)
  local owner = redis.call("hmget", head, "id", "token", "lease_until", "attempts")
  if (owner[1] or redis.call("lindex", ids, 0)) ~= id then
    return "stale"
  end
  if owner[2] and owner[2] ~= "" and (tonumber(owner[3]) or 0) > tonumber(now) then
    return "busy"
  end
  local attempts = (tonumber(owner[4]) or 0) + 1
  redis.call("hset", head, "state", "running", "since", now, "token", token, "lease_until", lease_until, "attempts", attempts)
  redis.call("zadd", lanes, lease_until, lane)
  return "run"
end

local function renew(prefix, lane, token, lease_until)
  local _, _, head, lanes = keys(prefix, lane)
  if token == "" or redis.call("hget", head, "token") ~= token then
    return 0
  end
  redis.call("hset", head, "lease_until", lease_until)
  redis.call("zadd", lanes, lease_until, lane)
  return 1
end

-- ``fetched``: the head was taken by fetch.lua, which removed its lane heads entry already.
local function finish(prefix, lane, id, token, outcome, now, deadline, queue, fetched)
  local ids, msgs, head, lanes = keys(prefix, lane)
  if queue ~= "" and not fetched then
    redis.call("hdel", queue .. ":lane-heads", id)
  end
  -- Only enter() writes a token, once it saw ``id`` at the head, and every script that moves
  -- the head on clears it (to ""): while the token holds, ``id`` is the head.
  if token == "" or redis.call("hget", head, "token") ~= token then
    if redis.call("lindex", ids, 0) ~= id then
      return {"gone"}
    end
    return {"lost"}
  end
  if outcome == "retry" then
    redis.call("hset", head, "state", "retrying", "since", now, "token", "", "lease_until", 0)
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
  new_head(head, next_id, now)
  redis.call("zadd", lanes, deadline, lane)
  local body = redis.call("hget", msgs, next_id)
  if not body then
    -- Its message is not stored (evicted, or written by hand): nothing to send; the sweep
    -- drops the head at its deadline, and the lane moves on.
    return {"next"}
  end
  if to_broker(queue, lane, next_id, body) then
    return {"sent"}
  end
  return {"next", body}
end
