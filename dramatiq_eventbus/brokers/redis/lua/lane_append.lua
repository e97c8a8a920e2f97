-- Append messages to their lanes, in order. ARGV: prefix, now, deadline, then lane, message
-- id, body, queue for each message -> for each, 1 if it became its lane's head (put on
-- ``queue``, or for the caller to send), else 0.
local out = {}
for i = 4, #ARGV, 4 do
  out[#out + 1] = append(ARGV[1], ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[2], ARGV[3], ARGV[i + 3])
end
return out
