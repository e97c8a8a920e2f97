-- Every lane whose time is up gets its head dispatched again, once per sweep.
-- ARGV: prefix, now, limit, deadline -> flat list: lane, state, since, attempts, body, ...
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
    redis.call("hset", head, "state", "dispatched", "since", now, "token", "", "lease_until", 0)
    redis.call("zadd", lanes, deadline, lane)
    table.insert(out, lane)
    table.insert(out, before[1] or "unknown")
    table.insert(out, before[2] or now)
    table.insert(out, before[3] or 0)
    table.insert(out, redis.call("hget", base .. ":msgs", id))
  end
end
return out
