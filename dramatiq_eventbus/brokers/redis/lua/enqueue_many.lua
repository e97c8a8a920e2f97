-- What dispatch.lua does for "enqueue", for every message of a batch in one call: heartbeat
-- the sender, then for each message store its body under its Redis id and append the id to
-- its queue. One script runs atomically, so a fan-out is written whole or not at all.
-- KEYS: heartbeats. ARGV: timestamp, broker id, then for each message: queue, the queue's
-- messages hash, Redis id, body.
-- -> how many were written.
redis.call("zadd", KEYS[1], ARGV[1], ARGV[2])
for i = 3, #ARGV, 4 do
    redis.call("hset", ARGV[i + 1], ARGV[i + 2], ARGV[i + 3])
    redis.call("rpush", ARGV[i], ARGV[i + 2])
end
return (#ARGV - 2) / 4
