-- Dramatiq's "ack" (dispatch.lua) for many deliveries of one queue in one call.
-- KEYS: the worker's ack set of the queue, the queue's messages hash. ARGV: the Redis ids.
local acks, messages = KEYS[1], KEYS[2]
for i = 1, #ARGV do
    if redis.call("srem", acks, ARGV[i]) > 0 then
        redis.call("hdel", messages, ARGV[i])
    end
end
