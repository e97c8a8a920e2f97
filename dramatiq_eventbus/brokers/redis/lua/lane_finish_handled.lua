-- A worker's batch of acks for one broker queue, among them handled lane heads, each finished
-- and acknowledged together. ARGV: prefix, now, deadline, queue, acks (the worker's ack set of
-- ``queue``), count of heads, then lane, message id, token, Redis id for each head, then the
-- Redis ids of the other deliveries to acknowledge -> what finishing each head did ("gone",
-- "lost", "idle" or "sent"), in one string, separated by spaces.
local prefix, now, deadline, queue, acks = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local last_head = 6 + 4 * tonumber(ARGV[6])
local out = {}
for i = 7, last_head, 4 do
  ack(queue, acks, ARGV[i + 3])
  out[#out + 1] = finish(prefix, ARGV[i], ARGV[i + 1], ARGV[i + 2], "done", now, deadline, queue, true)[1]
end
for i = last_head + 1, #ARGV do
  ack(queue, acks, ARGV[i])
end
return table.concat(out, " ")
