-- Dramatiq's "fetch" (dispatch.lua), returning each body's Redis id along with it.
-- KEYS: heartbeats, queue, the queue's messages hash, the worker's ack set of the queue, the
-- queue's wake list. ARGV: worker id, timestamp, count.
-- -> {ids, bodies}; a body is false when the id has none.
--
-- A consumer waiting on an empty queue wakes by moving the id at the queue's head to the tail
-- of its wake list (BLMOVE queue wake LEFT RIGHT: the first id to arrive wakes one waiter, not
-- all of them). Every fetch first puts those ids back at the head, in their order, so none is
-- left there by a waiter that died before its fetch.
local heartbeats, queue, messages, acks, wake = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local worker_id, timestamp, count = ARGV[1], ARGV[2], tonumber(ARGV[3])
redis.call("zadd", heartbeats, timestamp, worker_id)
while redis.call("rpoplpush", wake, queue) do
end
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
