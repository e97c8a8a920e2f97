-- Start lane heads. ARGV: prefix, now, lease_until, then lane, message id, token for each
-- message -> for each, "run" (it is the head, now leased to the token), "busy" or "stale".
local out = {}
for i = 4, #ARGV, 3 do
  out[#out + 1] = enter(ARGV[1], ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[2], ARGV[3])
end
return out
