-- Extend leases. ARGV: prefix, lease_until, then lane, token for each lease -> for each, 1 if
-- it was still that token's and is extended, else 0.
local out = {}
for i = 3, #ARGV, 2 do
  out[#out + 1] = renew(ARGV[1], ARGV[i], ARGV[i + 1], ARGV[2])
end
return out
