-- Dramatiq's "fetch" (dispatch.lua), returning each body's Redis id along with it.
-- KEYS: heartbeats, queue, the queue's messages hash, the worker's ack set of the queue.
-- ARGV: worker id, timestamp, count.
-- -> {ids, bodies}; a body is false when the id has none.
local heartbeats, queue, messages, acks = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local worker_id, timestamp, count = ARGV[1], ARGV[2], tonumber(ARGV[3])
redis.call("zadd", heartbeats, timestamp, worker_id)
local ids = {}
for i = 1, count do
    local id = redis.call("lpop", queue)
    if not id then
        break
    end
    ids[i] = id
    redis.call("sadd", acks, id)
end
if #ids == 0 then
    return {{}, {}}
end
return {ids, redis.call("hmget", messages, unpack(ids))}
