-- Every lane whose time is up gets its head dispatched again, once per sweep.
-- ARGV: prefix, now, limit, deadline -> flat list: lane, state, since, attempts, body, skipped, ...
-- A head whose message is not stored (evicted from Redis, or a lane written by hand) can never
-- run: it is dropped from its lane, up to MAX_SKIPPED per lane and sweep, and counted in
-- ``skipped``, so that its lane moves on; body is false when none with a message was found.
local MAX_SKIPPED = 100
local prefix, now, limit, deadline = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4]
local lanes = prefix .. ":lanes"
local due = redis.call("zrangebyscore", lanes, "-inf", now, "LIMIT", 0, limit)
local out = {}
for _, lane in ipairs(due) do
  local ids, msgs, head = keys(prefix, lane)
  local id = redis.call("lindex", ids, 0)
  local body = id and redis.call("hget", msgs, id)
  local skipped = 0
  while id and not body and skipped < MAX_SKIPPED do
    redis.call("lpop", ids)
    skipped = skipped + 1
    id = redis.call("lindex", ids, 0)
    body = id and redis.call("hget", msgs, id)
  end
  if not id then
    redis.call("zrem", lanes, lane)
    redis.call("del", head, msgs)
    if skipped > 0 then
      table.insert(out, lane)
      table.insert(out, "dispatched")
      table.insert(out, now)
      table.insert(out, 0)
      table.insert(out, false)
      table.insert(out, skipped)
    end
  else
    local before = redis.call("hmget", head, "state", "since", "attempts")
    if skipped > 0 then
      new_head(head, id, now)  -- nothing of the head dropped before it (its lease above all) is kept
    else
      redis.call("hset", head, "state", "dispatched", "since", now, "token", "", "lease_until", 0)
    end
    redis.call("zadd", lanes, deadline, lane)
    table.insert(out, lane)
    table.insert(out, before[1] or "unknown")
    table.insert(out, before[2] or now)
    table.insert(out, before[3] or 0)
    table.insert(out, body or false)
    table.insert(out, skipped)
  end
end
return out
