-- Finish handled heads. ARGV: prefix, now, deadline, then lane, message id, token, queue for
-- each head -> for each, what lane_finish.lua replies.
local out = {}
for i = 4, #ARGV, 4 do
  out[#out + 1] = finish(ARGV[1], ARGV[i], ARGV[i + 1], ARGV[i + 2], "done", ARGV[2], ARGV[3], ARGV[i + 3])
end
return out
