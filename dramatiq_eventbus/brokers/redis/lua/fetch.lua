-- Dramatiq's "fetch" (dispatch.lua), returning each body's Redis id along with it, and leasing
-- the lane heads among them (loaded with lane_functions.lua in front of it).
-- KEYS: heartbeats, queue, the queue's messages hash, the worker's ack set of the queue, the
-- queue's wake list, the queue's lane heads hash. ARGV: worker id, timestamp, count, then the
-- lanes' prefix ("" to lease none), the lease's deadline (ms) and a token for this fetch.
-- -> {ids, bodies, leased}; a body is false when the id has none; leased holds one string for
-- each id the lane scripts put on the queue as a head: its place in ids (from 1), the verdict
-- (lane_enter.lua's) and its lane, separated by spaces (one string rather than three: redis-py
-- reads each in Python, about 0.7 µs apiece), leased to the token followed by ":" and that place. Any other id (a message
-- enqueued by Dramatiq, a head sent again by the lanes' sweep) is leased by the consumer after
-- the fetch, if it has a lane.
--
-- A consumer waiting on an empty queue wakes by moving the id at the queue's head to the tail
-- of its wake list (BLMOVE queue wake LEFT RIGHT: the first id to arrive wakes one waiter, not
-- all of them). Every fetch first puts those ids back at the head, in their order, so none is
-- left there by a waiter that died before its fetch.
local heartbeats, queue, messages, acks, wake, lane_heads = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local worker_id, timestamp, count = ARGV[1], ARGV[2], tonumber(ARGV[3])
local prefix, lease_until, token = ARGV[4], ARGV[5], ARGV[6]
redis.call("zadd", heartbeats, timestamp, worker_id)
while redis.call("rpoplpush", wake, queue) do
end
local leased = {}
-- LRANGE and LTRIM rather than LPOP with a count, which Redis before 6.2 lacks.
local ids = redis.call("lrange", queue, 0, count - 1)
if #ids > 0 then
  redis.call("ltrim", queue, #ids, -1)
  redis.call("sadd", acks, unpack(ids))
  -- The lanes of the heads among them, read and removed in one command each.
  local lanes = redis.call("hmget", lane_heads, unpack(ids))
  local heads = {}
  for i = 1, #ids do
    local lane = lanes[i]
    if lane then
      heads[#heads + 1] = ids[i]
      if prefix ~= "" then
        leased[#leased + 1] = i .. " " .. enter(prefix, lane, ids[i], token .. ":" .. i, timestamp, lease_until) .. " " .. lane
      end
    end
  end
  if #heads > 0 then
    redis.call("hdel", lane_heads, unpack(heads))
  end
end
if #ids < count then
  -- The queue and its wake list are empty, so no entry left in the lane heads hash names an id
  -- that waits there: those are stale (heads fetched and finished by a consumer that does not
  -- read the hash, or purged from the queue). Dropping them bounds what such consumers leave.
  redis.call("del", lane_heads)
end
if #ids == 0 then
  return {{}, {}, {}}
end
return {ids, redis.call("hmget", messages, unpack(ids)), leased}
