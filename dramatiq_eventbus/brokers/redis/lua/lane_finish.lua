-- Finish one head. ARGV: prefix, lane, message id, token, outcome ("done" or "retry"), now,
-- deadline, queue -> {"gone"}, {"lost"}, {"retrying"}, {"idle"}, {"sent"} (the new head is on
-- ``queue``) or {"next", body of the new head}.
return finish(ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7], ARGV[8])
